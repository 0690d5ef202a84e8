"""Files smaller than the chunker's minimum skip the chunk pipeline (a folder of 100,000
small files): they must be stored exactly as the pipeline would store them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import modelvault
from modelvault import ingest
from modelvault.core.chunking import MIN_SIZE

SIZES = [1, 2, 1000, 4096, MIN_SIZE - 1, MIN_SIZE, MIN_SIZE + 1, 3 * MIN_SIZE]


def _folder(root: Path) -> Path:
    rng = __import__("random").Random(7)
    for i, n in enumerate(SIZES):
        (root / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 3}" / f"f{i}").write_bytes(rng.randbytes(n))
        (root / f"text{i}.json").write_bytes(b'{"a": 1}' * (n // 8 + 1))  # compressible
    (root / "empty").write_bytes(b"")
    return root


def test_small_files_get_the_ids_the_chunker_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path / "m")
    fast = modelvault.Store(tmp_path / "fast").save(folder, "m:v1")
    monkeypatch.setattr(ingest, "SMALL_FILE", 0)  # every file through the pipeline
    slow = modelvault.Store(tmp_path / "slow").save(folder, "m:v1")
    assert fast.object.tree == slow.object.tree  # same files, same chunks, same ids
    assert fast.size == slow.size == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    for p in folder.rglob("*"):
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            assert fast.open(rel).read() == p.read_bytes()
    assert fast.repo.objects.stored_bytes() == slow.repo.objects.stored_bytes()


def test_a_small_file_that_grows_while_saved_is_refused(tmp_path: Path) -> None:
    """The one read of a small file must give exactly the size its stat said."""
    store = modelvault.Store(tmp_path / "s")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "f").write_bytes(b"x" * 10)
    ingester_store_small = ingest.Ingester._store_small

    def grow_first(self: ingest.Ingester, path: Path, size: int) -> object:
        with open(path, "ab") as f:
            f.write(os.urandom(5))
        return ingester_store_small(self, path, size)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(ingest.Ingester, "_store_small", grow_first)
        with pytest.raises(modelvault.InvalidInput, match="changed size"):
            store.save(folder, "m:v1")
    assert store.list() == []
