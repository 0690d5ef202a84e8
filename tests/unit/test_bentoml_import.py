"""Import of what REAL BentoML wrote (tests/golden/bentoml, made by the script beside it):
every export format, the info model.yaml carries, custom objects, and the flavours."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

import modelvault
import modelvault.picklable_model
import modelvault.pytorch
import modelvault.sklearn
from modelvault.errors import ModelExists, NotFound, RunnerError

GOLDEN = Path(__file__).parent.parent / "golden" / "bentoml"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())["models"]
FORMATS = ["bentomodel", "gz", "xz", "tar", "zip", "folder"]


def _tag_of(name: str) -> str:
    """The newest tag of ``name`` in the golden BentoML store (its ``latest`` file)."""
    return f"{name}:{(GOLDEN / 'home' / 'models' / name / 'latest').read_text().strip()}"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _bentoml_files(tag: str) -> dict[str, bytes]:
    """The files BentoML keeps for ``tag``, less model.yaml and custom_objects.pkl (they
    become the info and the custom objects)."""
    name, version = tag.split(":")
    files = _files(GOLDEN / "home" / "models" / name / version)
    files.pop("model.yaml")
    files.pop("custom_objects.pkl", None)
    return files


def _check_info(model: modelvault.Model, tag: str) -> None:
    want = EXPECTED[tag]
    info = model.info
    assert str(model.tag) == tag
    assert info.module == want["module"]
    assert info.labels == want["labels"]
    assert info.metadata == want["metadata"]
    assert info.options == want["options"]
    assert info.context == want["context"]
    assert info.api_version == want["api_version"]
    assert info.creation_time == dt.datetime.fromisoformat(want["creation_time"])
    assert info.creation_time.tzinfo is not None
    for name, sig in want["signatures"].items():
        got = info.signatures[name]
        assert got["batchable"] == sig["batchable"]
        if "batch_dim" in sig:
            assert got["batch_dim"] == tuple(sig["batch_dim"])
    assert set(info.signatures) == set(want["signatures"])
    assert _files(Path(model.path)) == _bentoml_files(tag)
    assert sorted(model.custom_objects) == want["custom_objects"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_export_format_imports_the_same_model(fmt: str, store: modelvault.Store) -> None:
    tag = _tag_of("bento_pick")
    model = store.import_model(str(GOLDEN / f"bento_pick.{fmt}"))
    _check_info(model, tag)
    assert model.custom_objects["vocab"] == {"a": 1, "b": 2}
    assert model.custom_objects["scale"]([1.0]) == [3.0]  # a class pickled by value
    assert store.verify().ok


def test_the_formats_give_one_model_id_and_a_second_import_is_a_no_op(
    store: modelvault.Store,
) -> None:
    ids = {store.import_model(str(GOLDEN / f"bento_pick.{fmt}")).id for fmt in FORMATS}
    assert len(ids) == 1
    assert len(store.list()) == 1


@pytest.mark.parametrize("name", ["bento_sk", "bento_torch", "bento_plain", "bento_onnx"])
def test_each_model_keeps_its_info_and_files(name: str, store: modelvault.Store) -> None:
    model = store.import_model(str(GOLDEN / f"{name}.bentomodel"))
    _check_info(model, _tag_of(name))


def test_a_file_object_that_cannot_seek_and_a_url(store: modelvault.Store) -> None:
    data = (GOLDEN / "bento_pick.bentomodel").read_bytes()

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self._f = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            chunk = self._f.read(min(len(b), 1000))
            b[: len(chunk)] = chunk
            return len(chunk)

    model = store.import_model(Pipe())
    _check_info(model, _tag_of("bento_pick"))
    import fsspec

    with fsspec.open("memory://bento/sk.bentomodel", "wb") as f:
        f.write((GOLDEN / "bento_sk.bentomodel").read_bytes())
    _check_info(store.import_model("memory://bento/sk.bentomodel"), _tag_of("bento_sk"))


def test_flavours_load_what_bentoml_saved(store: modelvault.Store) -> None:
    for name in ["bento_pick", "bento_sk", "bento_torch"]:
        store.import_model(str(GOLDEN / f"{name}.bentomodel"))
    pick = modelvault.picklable_model.get("bento_pick", store=store)
    assert (
        modelvault.picklable_model.load_model(pick)([1.0, 2.0])
        == EXPECTED[_tag_of("bento_pick")]["call"]
    )
    sk = modelvault.sklearn.get("bento_sk", store=store)
    probe = [[1.0, 1.0, 0.0, 0.0], [-1.0, -1.0, 0.0, 0.0]]
    assert (
        modelvault.sklearn.load_model(sk).predict(probe).tolist()
        == EXPECTED[_tag_of("bento_sk")]["call"]
    )
    import torch

    net = modelvault.pytorch.load_model(modelvault.pytorch.get("bento_torch", store=store))
    with torch.no_grad():
        out = net(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).tolist()
    assert out[0] == pytest.approx(EXPECTED[_tag_of("bento_torch")]["call"][0])
    runner = store.get("bento_pick").to_runner()
    runner.init_local()
    assert runner.run([1.0, 2.0]) == [2.0, 4.0]  # batchable: merged along dim 0
    runner.close()
    with pytest.raises(NotFound, match=r"bentoml\.sklearn.*load it with modelvault\.sklearn"):
        modelvault.picklable_model.get("bento_sk", store=store)


def test_a_framework_without_flavour_imports_but_says_so_at_to_runner(
    store: modelvault.Store,
) -> None:
    model = store.import_model(str(GOLDEN / "bento_onnx.bentomodel"))
    assert (Path(model.path) / "saved_model.onnx").is_file()
    with pytest.raises(RunnerError, match=r"BentoML's bentoml\.onnx: modelvault has no flavour"):
        model.to_runner()
    with pytest.raises(NotFound):
        modelvault.picklable_model.get(str(model.tag), store=store)


def test_imported_files_dedup_against_the_store(store: modelvault.Store, tmp_path: Path) -> None:
    """The same bytes saved natively first: importing BentoML's copy adds almost nothing."""
    name, version = _tag_of("bento_plain").split(":")
    native = tmp_path / "native"
    shutil.copytree(GOLDEN / "home" / "models" / name / version, native)
    (native / "model.yaml").unlink()
    store.save(native, "native:v1")
    before = store.stats().stored_bytes
    store.import_model(str(GOLDEN / "bento_plain.bentomodel"))
    grown = store.stats().stored_bytes - before
    assert grown < 1500  # < the model's 2 KiB of files: only the tree, the model object
    assert store.get("bento_plain").size == store.get("native:v1").size


def test_the_same_tag_with_other_content_is_model_exists(
    store: modelvault.Store, tmp_path: Path
) -> None:
    store.import_model(str(GOLDEN / "bento_pick.folder"))
    other = tmp_path / "other"
    shutil.copytree(GOLDEN / "bento_pick.folder", other)
    (other / "saved_model.pkl").write_bytes(b"changed")
    with pytest.raises(ModelExists, match="versions are immutable"):
        store.import_model(str(other))
    out = tmp_path / "other.tar"
    with tarfile.open(out, "w") as tar:
        tar.add(other, arcname=".")
    with pytest.raises(ModelExists):
        store.import_model(str(out))


@pytest.mark.parametrize("fmt", FORMATS)
def test_progress_adds_up_to_the_archive_or_the_files(fmt: str, tmp_path: Path) -> None:
    """An archive's progress is its bytes read (the CLI's bar is its size); a folder's,
    the bytes of its files saved."""
    src = GOLDEN / f"bento_pick.{fmt}"
    done: list[int] = []
    modelvault.Store(tmp_path / "s").import_model(str(src), progress=done.append)
    if fmt == "folder":
        files = [p for p in src.iterdir() if p.name != "model.yaml"]
        assert sum(done) == sum(p.stat().st_size for p in files)
    else:
        assert sum(done) == src.stat().st_size


def test_a_large_member_is_saved_while_it_is_unpacked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member of OVERLAP_MIN bytes or more is saved while it is unpacked: the same
    model, the same stored bytes as a native save, also when the archive is cut."""
    import lzma
    import os

    from modelvault.archive.bentoml import reader

    monkeypatch.setattr(reader, "OVERLAP_MIN", 1 << 20)
    weights = os.urandom(5 << 20) + bytes(3 << 20)  # several segments of the ingest
    folder = tmp_path / "model"
    shutil.copytree(GOLDEN / "bento_pick.folder", folder)
    (folder / "weights.bin").write_bytes(weights)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.add(folder, arcname=".")
    archive = tmp_path / "big.bentomodel"
    archive.write_bytes(lzma.compress(raw.getvalue(), preset=0))
    store = modelvault.Store(tmp_path / "store")
    model = store.import_model(str(archive))
    assert (Path(model.path) / "weights.bin").read_bytes() == weights
    assert model.id == modelvault.Store(tmp_path / "other").import_model(str(folder)).id
    assert store.verify().ok
    cut = tmp_path / "cut.bentomodel"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    fresh = modelvault.Store(tmp_path / "fresh")
    fresh.import_model(str(GOLDEN / "bento_sk.bentomodel"))
    before = sorted(p.name for p in (tmp_path / "fresh").rglob("*"))
    with pytest.raises(modelvault.ArchiveError, match="truncated or corrupt"):
        fresh.import_model(str(cut))
    assert sorted(p.name for p in (tmp_path / "fresh").rglob("*")) == before
