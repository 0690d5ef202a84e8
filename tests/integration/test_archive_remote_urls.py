"""Archives through a real S3 endpoint (moto's server on 127.0.0.1, see tests/conftest.py).

``export_model``/``import_model`` take no storage options: the endpoint comes from
``AWS_ENDPOINT_URL_S3``, which botocore (and so s3fs) reads for every new client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelvault
from modelvault.checkout import lookup, read_file_object


@pytest.fixture
def bucket(s3_bucket: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket["endpoint_url"])
    return s3_bucket


def _model_dir(root: Path, nbytes: int) -> Path:
    root.mkdir()
    data = np.random.default_rng(1).standard_normal(nbytes // 4).astype("<f4")
    (root / "weights.bin").write_bytes(data.tobytes())
    (root / "config.json").write_text('{"layers": 2}')
    return root


def _files(folder: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}


def test_round_trip_through_s3(bucket: dict[str, Any], tmp_path: Path) -> None:
    src = modelvault.Store(tmp_path / "src")
    model = src.save(_model_dir(tmp_path / "m", 3 << 20), "clf:v1")
    url = src.export_model("clf:v1", bucket["url"] + "/archives/")
    assert url == f"{bucket['url']}/archives/clf-v1.bentomodel"
    assert bucket["fs"].ls(bucket["url"] + "/archives", detail=False) == [url[5:]]
    explicit = src.export_model("clf:v1", bucket["url"])  # the bucket is a folder
    assert explicit == f"{bucket['url']}/clf-v1.bentomodel"
    dst = modelvault.Store(tmp_path / "dst")
    imported = dst.import_model(url)
    assert (imported.tag, imported.id) == (model.tag, model.id)
    assert _files(imported.path) == _files(model.path)
    assert dst.import_model(explicit) == imported  # the same model again: a no-op


def test_failed_multipart_export_leaves_nothing_in_the_bucket(
    bucket: dict[str, Any], tmp_path: Path
) -> None:
    src = modelvault.Store(tmp_path / "src")
    model = src.save(_model_dir(tmp_path / "m", 60 << 20), "big:v1")  # > one 50 MiB part
    weights = lookup(src.repo.objects, model.object.tree, "weights.bin")[1]
    last = read_file_object(src.repo.objects, weights).chunks[-1][0]
    entry = src.repo.objects.entry(last)
    assert entry is not None
    pack = src.repo.objects.pack_dir / f"{entry.pack}.pack"
    pack.chmod(0o644)
    with open(pack, "r+b") as f:  # damage the last chunk: the first part is uploaded by then
        f.seek(entry.offset)
        f.write(bytes([f.read(1)[0] ^ 0xFF]))
    with pytest.raises(modelvault.IntegrityError):
        src.export_model("big:v1", bucket["url"] + "/")
    fs = bucket["fs"]
    fs.invalidate_cache()
    assert fs.ls(bucket["url"], detail=False) == []
    uploads = fs.call_s3("list_multipart_uploads", Bucket=bucket["url"][5:])
    assert uploads.get("Uploads", []) == []
