"""A store written by format 1 stays readable, byte for byte, by every later version."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import modelvault
from modelvault.core.objects import ModelObject

GOLDEN = Path(__file__).parent.parent / "golden"
V1_MODEL_ID = "4e5b4120da187fa57223a0b74e26dac3a78de256190e7f07bdaa7398aa5a5817"


def _golden_files() -> dict[str, bytes]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("mkg", GOLDEN / "make_store_golden.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    files: dict[str, bytes] = module.golden_files()
    return files


@pytest.fixture
def golden_store(tmp_path: Path) -> modelvault.Store:
    dest = tmp_path / "store-v1"
    shutil.copytree(GOLDEN / "store-v1", dest)
    return modelvault.Store(dest)


def test_golden_v1_reads_back_exactly(golden_store: modelvault.Store) -> None:
    model = golden_store.get("golden:v1")
    assert model.id == V1_MODEL_ID
    assert model.info.labels == {"k": "v"} and model.info.metadata == {"acc": 0.5}
    files = _golden_files()
    root = Path(model.path)
    for rel, data in files.items():
        assert (root / rel).read_bytes() == data
        with model.open(rel) as f:
            assert f.read() == data
    assert os.access(root / "run.sh", os.X_OK)
    assert model.size == sum(len(d) for d in files.values())
    assert golden_store.get("golden").tag == "golden:v2"  # latest by creation time


def test_golden_v1_verifies(golden_store: modelvault.Store) -> None:
    assert golden_store.verify().ok


def test_ids_are_stable_across_versions(golden_store: modelvault.Store, tmp_path: Path) -> None:
    """Saving the same files today yields the same tree id as format 1 did."""
    src = tmp_path / "src"
    for rel, data in _golden_files().items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "run.sh").chmod(0o755)
    fresh = modelvault.Store(tmp_path / "fresh").save(src, "again")
    old = golden_store.get("golden:v1")
    assert fresh.object.tree == old.object.tree
    assert isinstance(old.object, ModelObject)


def _format(store: modelvault.Store) -> int:
    return int(json.loads((store.path / "config.json").read_bytes())["format"])


def test_a_format_1_store_is_read_as_it_is_and_becomes_format_2_on_first_write(
    golden_store: modelvault.Store, tmp_path: Path
) -> None:
    """Format 2 may hold float-codec chunks, which an older modelvault cannot decode:
    it must refuse the store ("upgrade") rather than call its chunks damaged."""
    assert _format(golden_store) == 1
    golden_store.get("golden:v1").open("config.json").read()
    golden_store.verify()
    assert _format(golden_store) == 1  # reads change nothing
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"new" * 1000)
    golden_store.save(tmp_path / "m", "fresh")
    assert _format(golden_store) == 2
    assert golden_store.get("golden:v1").id == V1_MODEL_ID  # everything else as it was
    assert _format(modelvault.Store(tmp_path / "new")) == 2
