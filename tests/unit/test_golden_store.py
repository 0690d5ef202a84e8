"""Stores written by formats 1, 2 and 3 stay readable, byte for byte, by every later
version; older ones become the current format on their first write."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault.core.objects import ModelObject
from modelvault.odb.midx import MultiIndex
from modelvault.odb.packs import MERGE_AT
from modelvault.repo.config import FORMAT_VERSION

GOLDEN = Path(__file__).parent.parent / "golden"
V1_MODEL_ID = "4e5b4120da187fa57223a0b74e26dac3a78de256190e7f07bdaa7398aa5a5817"


def _maker() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("mkg", GOLDEN / "make_store_golden.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _golden_files() -> dict[str, bytes]:
    files: dict[str, bytes] = _maker().golden_files()
    return files


def _small_files(i: int) -> dict[str, bytes]:
    files: dict[str, bytes] = _maker().small_files(i)
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


def test_a_format_1_store_is_read_as_it_is_and_becomes_current_on_first_write(
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
    assert _format(golden_store) == FORMAT_VERSION == 4
    assert golden_store.get("golden:v1").id == V1_MODEL_ID  # everything else as it was
    assert _format(modelvault.Store(tmp_path / "new")) == 4


def test_a_format_2_store_is_read_as_it_is_and_becomes_current_on_first_write(
    tmp_path: Path,
) -> None:
    """Format 2 wrote the same files as format 1 (float-codec chunks aside): its packs'
    own indexes serve reads, nothing is written by reading, and the first write marks it
    current (format 4: multi-pack indexes and aliases since 3, float sub-format 2 since 4),
    whose first merge covers the old packs too."""
    dest = tmp_path / "store-v2"
    shutil.copytree(GOLDEN / "store-v1", dest)
    (dest / "config.json").write_text('{"format": 2}')
    store = modelvault.Store(dest)
    before = sorted(p.name for p in (dest / "objects" / "packs").iterdir())
    assert store.get("golden:v1").open("config.json").read() == _golden_files()["config.json"]
    assert store.verify().ok
    assert (_format(store), sorted(p.name for p in (dest / "objects" / "packs").iterdir())) == (
        2,
        before,
    )
    for i in range(MERGE_AT):
        (tmp_path / f"m{i}").mkdir()
        (tmp_path / f"m{i}" / "w.bin").write_bytes(b"new %d" % i * 1000)
        store.save(tmp_path / f"m{i}", f"fresh:v{i}")
    assert _format(store) == 4
    [midx] = (dest / "objects" / "packs").glob("multi-*.midx")
    assert {p[:-4] for p in before if p.endswith(".idx")} <= MultiIndex(midx).pack_set
    again = modelvault.Store(dest)
    assert again.get("golden:v1").id == V1_MODEL_ID
    assert again.verify().ok


@pytest.fixture
def golden_v3(tmp_path: Path) -> modelvault.Store:
    dest = tmp_path / "store-v3"
    shutil.copytree(GOLDEN / "store-v3", dest)
    return modelvault.Store(dest)


def test_golden_v3_reads_back_through_its_multi_pack_index(golden_v3: modelvault.Store) -> None:
    """A format-3 store: a multi-pack index in force over most packs, an alias."""
    assert _format(golden_v3) == 3
    db = golden_v3.repo.objects
    [layer] = db.layers()
    assert layer.checksum_ok() and len(layer.packs) == 8
    assert layer.version == 1 and layer.might_have(b"\0" * 32)  # no filter: all may be
    assert len(db.packs()) == 10  # two packs written after the merge: their own .idx
    model = golden_v3.get("golden:v1")
    for rel, data in _golden_files().items():
        with model.open(rel) as f:
            assert f.read() == data
    assert golden_v3.get("golden@prod").tag == "golden:v1"
    for i in range(1, 9):
        with golden_v3.get(f"small:v{i}").open("w.bin") as f:
            assert f.read() == _small_files(i)["w.bin"]
    assert golden_v3.verify().ok
    golden_v3.delete("small:v1")
    golden_v3.gc()
    [midx] = (golden_v3.path / "objects" / "packs").glob("multi-*.midx")
    assert MultiIndex(midx).version == 2  # gc rewrites the index with a filter
    again = modelvault.Store(golden_v3.path)
    assert again.get("golden@prod").id == model.id
    assert again.verify().ok


def test_golden_midx_v2_is_read_and_written_byte_for_byte(tmp_path: Path) -> None:
    """tests/golden/midx-v2 (made by make_midx_golden.py): a version-2 index over the
    eight packs of store-v3's version-1 index, put in its place: the store reads through
    it, its filter passes every id, and today's merge of those packs writes the same
    bytes."""
    from modelvault.odb.midx import write_midx

    dest = tmp_path / "store"
    shutil.copytree(GOLDEN / "store-v3", dest)
    packs = dest / "objects" / "packs"
    [old] = packs.glob("multi-*.midx")
    covered = MultiIndex(old).packs
    old.unlink()
    [golden] = (GOLDEN / "midx-v2").glob("multi-*.midx")
    shutil.copyfile(golden, packs / golden.name)
    store = modelvault.Store(dest)
    [layer] = store.repo.objects.layers()
    assert (layer.name, layer.version, layer.packs) == (golden.name, 2, covered)
    assert layer.checksum_ok() and layer.filter_ok()
    model = store.get("golden:v1")
    for rel, data in _golden_files().items():
        with model.open(rel) as f:
            assert f.read() == data
    assert store.verify().ok
    (packs / golden.name).unlink()
    (tmp_path / "t").mkdir()
    again = write_midx(packs, tmp_path / "t", [], covered)
    assert again is not None and again.path.read_bytes() == golden.read_bytes()


def test_a_store_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "store-v5"
    shutil.copytree(GOLDEN / "store-v3", dest)
    (dest / "config.json").write_text(f'{{"format": {FORMAT_VERSION + 1}}}')
    with pytest.raises(modelvault.errors.UnsupportedFormat):
        modelvault.Store(dest)
