"""Turning files and folders on disk into stored objects (the write path of save).

read file -> CDC cut points -> BLAKE3 each chunk -> skip known ids -> compress the
new ones -> append to the open pack. Hashing and compression release the GIL, so
a small thread pool keeps both cores busy while the main thread cuts and writes.
Files are memory-mapped, never read whole; at most ``_WINDOW`` chunks are in flight.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from modelvault._parallel import ordered_map
from modelvault.core import codec
from modelvault.core.chunking import chunk_bytes, chunk_file
from modelvault.core.hashing import ObjType, object_id
from modelvault.core.objects import (
    KIND_EXEC,
    KIND_FILE,
    KIND_TREE,
    FileObject,
    TreeEntry,
    TreeObject,
    check_entry_name,
)
from modelvault.errors import InvalidInput, PathNotFound
from modelvault.odb import PackWriter

_WINDOW = 64
Progress = Callable[[int], None]  # called with a number of bytes just processed


class _ChunkPipeline:
    """Hashes and encodes chunks in worker threads; appends them in order."""

    def __init__(self, writer: PackWriter, workers: int = 2) -> None:
        self.writer = writer
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="modelvault-chunk")

    def _work(self, data: memoryview) -> tuple[bytes, int, bytes | memoryview | None]:
        oid = object_id(ObjType.CHUNK, data)
        if self.writer.has(oid):
            return oid, 0, None
        how, payload = codec.encode(data)
        return oid, int(how), payload

    def store(self, chunks: Iterator[memoryview], progress: Progress | None) -> FileObject:
        """Store every chunk of one file and return its file object."""
        out: list[tuple[bytes, int]] = []
        for data, (oid, how, payload) in ordered_map(self.pool, self._work, chunks, _WINDOW):
            if payload is not None:
                self.writer.add_prepared(ObjType.CHUNK, oid, how, len(data), payload)
            out.append((oid, len(data)))
            if progress:
                progress(len(data))
        return FileObject(sum(n for _, n in out), out)

    def close(self) -> None:
        self.pool.shutdown()


def _stat_followed(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise PathNotFound(f"{path} is a dangling symbolic link") from None
        raise PathNotFound(f"{path} does not exist") from None
    except OSError as exc:  # ELOOP and friends
        raise InvalidInput(f"cannot follow {path}: {exc.strerror}") from exc


class Ingester:
    """Stores files and folders into one PackWriter; links are followed."""

    def __init__(self, writer: PackWriter, progress: Progress | None = None) -> None:
        self.writer = writer
        self.progress = progress
        self._pipeline = _ChunkPipeline(writer)

    def close(self) -> None:
        self._pipeline.close()

    def store_file(self, path: Path) -> tuple[bytes, int]:
        """Store one regular file; returns (file object id, size)."""
        st = _stat_followed(path)
        if st.st_size == 0:
            fobj = FileObject(0, [])
        else:
            fobj = self._pipeline.store(chunk_file(path), self.progress)
        if fobj.size != st.st_size:
            raise InvalidInput(f"{path} changed size while it was being saved")
        return self.writer.add(ObjType.FILE, fobj.encode(), probe=False), fobj.size

    def store_bytes(self, data: bytes) -> bytes:
        """Store an in-memory buffer as a file object; returns its id."""
        fobj = self._pipeline.store(chunk_bytes(data), None) if data else FileObject(0, [])
        return self.writer.add(ObjType.FILE, fobj.encode(), probe=False)

    def store_tree(
        self, folder: Path, _ancestors: frozenset[tuple[int, int]] = frozenset()
    ) -> tuple[bytes, int]:
        """Store a folder recursively; returns (tree id, total file bytes).

        Raises:
            PathNotFound: a dangling link inside.
            InvalidInput: a link loop, or an entry that is not a file or folder.
        """
        st = _stat_followed(folder)
        key = (st.st_dev, st.st_ino)
        if key in _ancestors:
            raise InvalidInput(f"{folder} is a symbolic link loop (it contains itself)")
        ancestors = _ancestors | {key}
        entries: list[TreeEntry] = []
        total = 0
        for name in sorted(os.listdir(folder)):
            path = folder / name
            try:
                check_entry_name(name)
            except ValueError as exc:
                raise InvalidInput(f"cannot store {path}: {exc}") from exc
            entry = self._store_entry(path, name, ancestors)
            entries.append(entry)
            total += entry.size
        return self.writer.add(ObjType.TREE, TreeObject(entries).encode(), probe=False), total

    def _store_entry(
        self, path: Path, name: str, ancestors: frozenset[tuple[int, int]]
    ) -> TreeEntry:
        st = _stat_followed(path)
        if stat.S_ISDIR(st.st_mode):
            oid, size = self.store_tree(path, ancestors)
            return TreeEntry(name, KIND_TREE, oid, size)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInput(f"{path} is neither a regular file nor a folder")
        oid, size = self.store_file(path)
        kind = KIND_EXEC if st.st_mode & stat.S_IXUSR else KIND_FILE
        return TreeEntry(name, kind, oid, size)

    def store_path(self, path: Path) -> tuple[bytes, int]:
        """Store a folder as the model's tree, or a single file as a one-entry tree."""
        st = _stat_followed(path)
        if stat.S_ISDIR(st.st_mode):
            return self.store_tree(path)
        entry = self._store_entry(path, path.name, frozenset())
        return self.writer.add(ObjType.TREE, TreeObject([entry]).encode(), probe=False), entry.size
