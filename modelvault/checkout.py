"""The read path: stream a stored file, or write a stored tree out as a folder.

Every chunk is checked against its id as it is read (``PackDB.read``), so no
read returns bytes that do not match what was saved.
"""

from __future__ import annotations

import bisect
import io
import mmap
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from modelvault import _fsutil
from modelvault._parallel import cpu_threads, ordered_map
from modelvault.core.chunking import MAX_SIZE
from modelvault.core.hashing import ObjType
from modelvault.core.objects import KIND_EXEC, KIND_TREE, FileObject
from modelvault.odb import PackDB
from modelvault.odb.reading import lookup, read_file_object, read_tree

__all__ = [
    "FileReader",
    "lookup",  # (re-exported from odb.reading: the read path's callers find them here)
    "materialise",
    "read_file_object",
    "read_tree",
    "reader_pool",
    "reader_threads",
    "write_file",
    "write_tree",
]

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from modelvault.repo.cache import Cache

Progress = Callable[[int], None]


class FileReader(io.RawIOBase):
    """A read-only, seekable binary stream over a stored file, fetched chunk by chunk."""

    def __init__(self, db: PackDB, fobj: FileObject, name: str = "") -> None:
        super().__init__()
        self._db = db
        self._chunks = fobj.chunks
        self._starts: list[int] = []
        pos = 0
        for _, n in fobj.chunks:
            self._starts.append(pos)
            pos += n
        self._size = fobj.size
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None
        self.name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def _chunk(self, index: int) -> bytes:
        if self._cached is None or self._cached[0] != index:
            self._cached = (index, self._db.read(self._chunks[index][0], ObjType.CHUNK))
        return self._cached[1]

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Fill ``buffer`` across chunks: short only at the end of the file, as a regular
        file's read is (callers such as ``np.frombuffer(f.read(n))`` count on it)."""
        out = memoryview(buffer).cast("B")
        done = 0
        while done < len(out) and self._pos < self._size:
            index = bisect.bisect_right(self._starts, self._pos) - 1
            data = self._chunk(index)
            start = self._pos - self._starts[index]
            n = min(len(out) - done, len(data) - start)
            out[done : done + n] = data[start : start + n]
            self._pos += n
            done += n
        return done


_READ_BATCH = 64  # chunks per reader task (read with few preads)
_WINDOW = 8  # reader tasks under way at once (4 left a reader idle behind a slow batch)


def reader_threads() -> int:
    """Threads for the pool :func:`write_tree` reads with: :func:`cpu_threads`, fewer than
    ``_WINDOW`` (so that each reader has a batch while this thread writes one)."""
    return min(cpu_threads(), _WINDOW - 1)


def reader_pool() -> ThreadPoolExecutor:
    """A pool of :func:`reader_threads` threads for :func:`write_tree` (``with`` it)."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(reader_threads(), thread_name_prefix="modelvault-read")


def write_file(
    db: PackDB, fobj: FileObject, dest: Path, pool: ThreadPoolExecutor, progress: Progress | None
) -> None:
    """Write one stored file to ``dest`` (which must not exist) and fsync it.

    Reader threads map, decode and verify batches of chunks; this thread writes them in
    order, into blocks reserved for the whole file first (``_fsutil.preallocate``),
    starting write-back as it goes (``_fsutil.WriteBack``). Batches are decoded into a
    few buffers used in turn, not fresh memory for each (``ordered_map`` must take its
    items one at a time, as it does).
    """
    chunks = fobj.chunks
    batches = [chunks[i : i + _READ_BATCH] for i in range(0, len(chunks), _READ_BATCH)]
    # Each batch is decoded into a buffer of a ring, reused once the batch that last used
    # it is written: ordered_map takes batch j from ``batches`` (and hands it to the pool)
    # only once this thread has written batch j - _WINDOW, so _WINDOW buffers never hand
    # out one still being read or written (tests/unit/test_read_into.py fails with one
    # fewer). Anonymous mappings of the largest batch there can be (of the batch itself
    # where no buffer is used twice): only the pages used are touched, once.
    ring: list[mmap.mmap | None] = [None] * _WINDOW
    least = _READ_BATCH * MAX_SIZE if len(batches) > len(ring) else 1

    def fetch(item: tuple[int, list[tuple[bytes, int]]]) -> list[bytes | memoryview]:
        j, batch = item
        need = sum(n for _, n in batch)
        slot = j % len(ring)
        buf = ring[slot]
        if buf is None or len(buf) < need:  # replaced, not resized: views may remain
            buf = ring[slot] = mmap.mmap(-1, max(need, least))
        return db.read_many([cid for cid, _ in batch], ObjType.CHUNK, memoryview(buf))

    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    writeback = _fsutil.WriteBack(fd)
    try:
        _fsutil.preallocate(fd, 0, fobj.size, dest)
        for _, datas in ordered_map(pool, fetch, enumerate(batches), _WINDOW):
            _fsutil.write_all(fd, datas)
            n = sum(len(d) for d in datas)
            writeback.wrote(n)
            if progress:
                progress(n)
        writeback.wait()
        os.fsync(fd)
    finally:
        writeback.join()
        os.close(fd)


def write_tree(
    db: PackDB,
    tree_id: bytes,
    dest: Path,
    pool: ThreadPoolExecutor,
    progress: Progress | None = None,
    read_only: bool = False,
) -> None:
    """Write a stored tree into the new folder ``dest``; entry names are re-checked on decode."""
    dest.mkdir()
    for entry in read_tree(db, tree_id).entries:
        path = dest / entry.name
        if entry.kind == KIND_TREE:
            write_tree(db, entry.oid, path, pool, progress, read_only)
            continue
        write_file(db, read_file_object(db, entry.oid), path, pool, progress)
        mode = 0o444 if read_only else 0o644
        os.chmod(path, mode | (0o111 if entry.kind == KIND_EXEC else 0))
    _fsutil.fsync_dir(dest)
    if read_only:
        os.chmod(dest, 0o555)


def materialise(
    cache: Cache,
    db: PackDB,
    model_id: bytes,
    tree_id: Callable[[], bytes],
    pool: ThreadPoolExecutor,
) -> Path:
    """The cache folder of a model, written (again) unless it is there unchanged
    (``tree_id`` is read only when it must be written; see repo.cache)."""
    if cache.unchanged(model_id):
        return cache.folder(model_id)
    with cache.writing(model_id) as tmp:
        if tmp is None:  # written meanwhile by another process
            return cache.folder(model_id)
        write_tree(db, tree_id(), tmp, pool, read_only=True)
        return cache.publish(model_id, tmp)
