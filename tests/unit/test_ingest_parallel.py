"""The save pipeline cuts segments of a file in worker threads and stitches them: the
stored file object lists exactly the chunks of a sequential cut, and every chunk is
readable. Small segments here, so that even small files have many seams."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from modelvault import ingest
from modelvault.checkout import read_file_object
from modelvault.core import chunking
from modelvault.core.hashing import ObjType, object_id
from modelvault.odb import PackDB, PackWriter

MAX = chunking.MAX_SIZE


def _expected(data: bytes) -> list[tuple[bytes, int]]:
    return [(object_id(ObjType.CHUNK, c), len(c)) for c in chunking.chunk_bytes(data)]


@pytest.mark.parametrize("segment", [100_000, 2 * MAX, 3 * MAX + 4096])
def test_parallel_save_stores_the_sequential_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, segment: int
) -> None:
    monkeypatch.setattr(chunking, "SEGMENT", segment)
    monkeypatch.setattr(chunking, "MIN_SEGMENT", segment)
    unit = os.urandom(3 * MAX)
    data = (
        os.urandom(5 * MAX + 17)
        + bytes(7 * MAX + 3)  # a zero run: out of phase, the stitcher cuts it itself
        + unit
        + b"\x07" * (2 * MAX)
        + unit  # a repeat: deduplicated within the file
        + os.urandom(MAX - 1)
    )
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    db = PackDB(tmp_path / "objects")
    writer = PackWriter(db, 1 << 20)
    seen: list[int] = []
    ing = ingest.Ingester(writer, progress=seen.append)
    try:
        oid, size = ing.store_file(path)
        byte_oid = ing.store_bytes(data)
    finally:
        ing.close()
    writer.commit()
    assert size == len(data) and sum(seen) == len(data)
    assert byte_oid == oid
    fresh = PackDB(tmp_path / "objects")
    fobj = read_file_object(fresh, oid)
    assert list(fobj.chunks) == _expected(data)
    assert b"".join(fresh.read(cid, ObjType.CHUNK) for cid, _ in fobj.chunks) == data


def _store_file(db: PackDB, path: Path) -> bytes:
    """Save one file into ``db``; its file object's id."""
    writer = PackWriter(db)
    ing = ingest.Ingester(writer)
    try:
        oid, _ = ing.store_file(path)
    finally:
        ing.close()
    writer.commit()
    return oid


def test_a_file_smaller_than_a_segment(tmp_path: Path) -> None:
    data = os.urandom(MAX // 3)
    path = tmp_path / "small"
    path.write_bytes(data)
    oid = _store_file(PackDB(tmp_path / "objects"), path)
    assert list(read_file_object(PackDB(tmp_path / "objects"), oid).chunks) == _expected(data)


@pytest.mark.parametrize("lead", [chunking.LEAD, 0])
def test_workers_write_only_the_files_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lead: int
) -> None:
    """The pool threads append their pieces' chunks to packs of their own as soon as they
    are cut. Cut from LEAD bytes before their segment, the pieces are in step with the
    whole file's cut: every chunk written is one the file uses, once. Cut from the
    segment's start (lead 0) they mostly are not, the chunks the stitcher drops stay
    unreferenced, and the file is still exactly the sequential cut."""
    monkeypatch.setattr(chunking, "SEGMENT", 2 * MAX)
    monkeypatch.setattr(chunking, "MIN_SEGMENT", 2 * MAX)
    monkeypatch.setattr(ingest, "LEAD", lead)
    data = os.urandom(24 * MAX + 12345)
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    writer = PackWriter(PackDB(tmp_path / "objects"), 4 << 20)
    ing = ingest.Ingester(writer)
    try:
        oid, _ = ing.store_file(path)
        recut = ing._pipeline.recut
    finally:
        ing.close()
    writer.commit()
    expected = _expected(data)
    fobj = read_file_object(PackDB(tmp_path / "objects"), oid)
    assert list(fobj.chunks) == expected
    written = writer.new_objects - 1  # (and the file object)
    if lead:
        assert recut == 0
        assert written == len(expected)
        assert len(data) < writer.new_bytes < len(data) + MAX  # (and the file object)
    else:
        assert recut > 0 and written > len(expected)


def test_segments_are_cut_in_blocks_only_while_chunks_are_compressed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment is cut a block at a time, each block's chunks compressed while in the
    cache, as long as chunks compress; once they stop (weights kept raw), the rest of
    each segment is cut in one call. The chunks are those of a sequential cut either way."""
    import numpy as np

    calls: list[int] = []
    real = chunking.cut_and_hash

    def counted(view: memoryview, stop: int, skip: int = 0) -> tuple[int, list[int], list[bytes]]:
        calls.append(stop - skip)
        return real(view, stop, skip)

    monkeypatch.setattr(chunking, "cut_and_hash", counted)
    size = 3 * chunking.SEGMENT
    letters = np.random.default_rng(0).integers(97, 101, size, dtype=np.uint8).tobytes()
    for name, data in [("letters", letters), ("random", os.urandom(size))]:
        calls.clear()
        path = tmp_path / name
        path.write_bytes(data)
        db = PackDB(tmp_path / f"objects-{name}")
        oid = _store_file(db, path)
        assert list(read_file_object(PackDB(db.root), oid).chunks) == _expected(data)
        blocks = [n for n in calls if n > 1]  # (one-chunk cuts: the stitcher's)
        if name == "letters":  # every block compressed: a call per BLOCK bytes
            assert len(blocks) >= size // (chunking.BLOCK + MAX)
            assert max(blocks) <= chunking.BLOCK
        else:  # a few blocks, then each segment's rest in one call
            assert len(blocks) <= 3 * 2 + 2
            assert max(blocks) > chunking.SEGMENT // 2


def test_a_worker_writes_each_block_before_it_cuts_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a file's chunks compress, each worker appends a block's new chunks to its
    pack before it cuts the next block: it holds one block's payloads at a time, not a
    segment's (a 1 GiB bf16 save's anonymous memory: 47 -> 25 MiB with 2 threads)."""
    import threading

    import numpy as np

    events: dict[int, list[str]] = {}
    cut, write = chunking.cut_and_hash, PackWriter.add_prepared_many

    def log(what: str) -> None:
        events.setdefault(threading.get_ident(), []).append(what)

    def logged_cut(
        view: memoryview, stop: int, skip: int = 0
    ) -> tuple[int, list[int], list[bytes]]:
        log("cut")  # (the stitcher's, on the drain thread, are left out below: it writes lane 0)
        return cut(view, stop, skip)

    def logged_write(self: PackWriter, objects: object, lane: int = 0, **kw: bool) -> None:
        if lane:  # a worker's lane (0: the drain thread's)
            log("write")
        write(self, objects, lane, **kw)

    monkeypatch.setattr(chunking, "cut_and_hash", logged_cut)
    monkeypatch.setattr(PackWriter, "add_prepared_many", logged_write)
    size = 3 * chunking.SEGMENT
    data = np.random.default_rng(1).integers(97, 101, size, dtype=np.uint8).tobytes()
    path = tmp_path / "letters"
    path.write_bytes(data)
    db = PackDB(tmp_path / "objects")
    oid = _store_file(db, path)
    assert list(read_file_object(PackDB(db.root), oid).chunks) == _expected(data)
    workers = [e for e in events.values() if "write" in e]
    assert len(workers) == 2
    for seen in workers:
        assert seen.count("cut") >= size // 2 // (chunking.BLOCK + MAX) - 2
        assert all(a != b for a, b in itertools.pairwise(seen)), " ".join(seen)  # cut, write
