"""Export: one model of a repository streamed into one ``.bentomodel`` archive.

Compressed payloads are copied as they are stored; chunks the store keeps raw are encoded
for the trip by ``codec.TransferEncoder`` (byte planes for float weights, zstd level 1 for
other compressible chunks, raw when neither saves 1%). The writer streams in one pass
(the index goes last). The file is opened through ``modelvault.remote.transport``.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

from modelvault import _fsutil
from modelvault._parallel import ordered_map
from modelvault.archive.format import (
    END_RECORD,
    INDEX_HEAD,
    INDEX_MAGIC,
    SUFFIX,
    VERSION,
    Manifest,
    checksum,
    footer,
    header,
    index_entry,
)
from modelvault.archive.pipeline import (
    BATCH,
    BATCH_BYTES,
    SINK_DEPTH,
    WINDOW,
    Progress,
    stored_info,
)
from modelvault.core.codec import Codec, TransferEncoder
from modelvault.core.graph import walk
from modelvault.core.hashing import ObjType
from modelvault.core.packfmt import RECORD_HEADER, Entry, record_header
from modelvault.errors import IntegrityError
from modelvault.odb.packs import verify_payload
from modelvault.refs import RefValue
from modelvault.remote.transport import open_output
from modelvault.repo import Repository, maintenance
from modelvault.tags import Tag

__all__ = ["ArchiveWriter", "export_model"]

_READ_SPAN = 8 << 20  # export reads neighbouring records together up to this many bytes
_FLUSH_EVERY = 64 << 20  # export starts writing a local archive back to disk this often


class ArchiveWriter:
    """Streams one archive into ``out``: header, records, then index and footer.

    Writing and the running checksum happen in one helper thread (both release the
    GIL), in the order parts were given; at most ``SINK_DEPTH`` batches wait for it.
    A local file is also flushed to disk every ``_FLUSH_EVERY`` bytes in the background,
    so the final fsync (by the caller) has little left to wait for.
    """

    def __init__(self, out: IO[bytes], manifest: Manifest) -> None:
        self._out = out
        self._fd = out.fileno() if isinstance(out, io.FileIO) else None  # writev, no copy
        self._hash = checksum(VERSION)
        self._pos = 0
        self._index: dict[bytes, bytes] = {}
        self._sink = ThreadPoolExecutor(1, thread_name_prefix="modelvault-archive-out")
        self._queued: deque[Future[None]] = deque()
        self._writeback = (
            _fsutil.WriteBack(self._fd, _FLUSH_EVERY) if self._fd is not None else None
        )
        body = manifest.encode()
        self._write([header(body), body])

    def _emit(self, parts: list[bytes | memoryview]) -> None:  # in the helper thread
        if self._fd is not None:
            _fsutil.write_all(self._fd, parts)
            if self._writeback is not None:
                self._writeback.wrote(sum(len(p) for p in parts))
        else:
            for part in parts:
                self._out.write(part)
        for part in parts:
            self._hash.update(part)

    def _write(self, parts: list[bytes | memoryview]) -> None:
        self._pos += sum(len(p) for p in parts)
        self._queued.append(self._sink.submit(self._emit, parts))
        while len(self._queued) > SINK_DEPTH or (self._queued and self._queued[0].done()):
            self._queued.popleft().result()

    def add(self, kind: int, oid: bytes, how: int, raw_len: int, payload: bytes) -> None:
        """Append one object as stored (payload encoded with codec ``how``)."""
        self.add_many([(kind, oid, how, raw_len, payload)])

    def add_many(self, objects: list[tuple[int, bytes, int, int, bytes | memoryview]]) -> None:
        """Append objects as stored: ``(type, id, codec, raw length, payload)`` each."""
        parts: list[bytes | memoryview] = []
        pos = self._pos
        for kind, oid, how, raw_len, payload in objects:
            if oid in self._index:
                continue
            n = len(payload)
            self._index[oid] = index_entry(oid, kind, how, pos + RECORD_HEADER.size, n, raw_len)
            parts += (record_header(kind, how, raw_len, n, oid), payload)
            pos += RECORD_HEADER.size + n
        if parts:
            self._write(parts)

    @property
    def pos(self) -> int:
        """Bytes of the archive handed to the writer so far."""
        return self._pos

    def finish(self) -> None:
        """Write the end marker, the index and the footer with the checksum."""
        self._write([END_RECORD])
        offset, count = self._pos, len(self._index)
        index = b"".join(self._index[oid] for oid in sorted(self._index))
        self._write([INDEX_HEAD.pack(INDEX_MAGIC, count), index])
        self._write([footer(offset, count)])
        self._drain()
        digest = self._hash.digest()
        self._emit_raw(digest)
        self._pos += len(digest)

    def _emit_raw(self, data: bytes) -> None:
        if self._fd is not None:
            _fsutil.write_all(self._fd, [data])
        else:
            self._out.write(data)

    def _drain(self) -> None:
        try:
            while self._queued:
                self._queued.popleft().result()
        finally:
            self._sink.shutdown()
        if self._writeback is not None:
            self._writeback.wait()  # a write-back error is reported here

    def close(self) -> None:
        """Stop the helper thread (after an error: drop what it has not written yet)."""
        for fut in self._queued:
            fut.cancel()
        with contextlib.suppress(Exception):
            self._drain()


def _resolve(repo: Repository, tag: str | Tag | RefValue) -> RefValue:
    return tag if isinstance(tag, RefValue) else repo.refs.resolve(Tag.coerce(tag))


def export_model(
    repo: Repository,
    tag: str | Tag | RefValue,
    dest: str,
    *,
    base: str | Tag | RefValue | None = None,
    progress: Callable[[int], None] | None = None,
) -> str:
    """Write ``tag`` as one ``.bentomodel`` archive at ``dest``; return its path or URL.

    ``tag`` and ``base`` are tags (``name`` alone: its newest version) or refs already
    resolved. ``dest`` is a local path or fsspec URL; a folder (existing, or ending in
    ``/``) receives ``<name>-<version>.bentomodel``. Each object is checked against its
    id first; compressed payloads are copied as stored, raw chunks encoded for the trip
    (byte planes or zstd) when it pays. The file appears under its final name only once
    complete. With ``base`` the archive is thin: it leaves out what ``base`` reaches.
    ``progress``, if given, is called with each number of archive bytes written (they
    add up to its size).

    Raises:
        NotFound: no such tag or base.
        IntegrityError: an object of the model is damaged in the store (nothing written).
        RemoteError: the URL's backend failed (nothing written).
    """
    ref = _resolve(repo, tag)
    skip: set[bytes] = set()
    base_ref = None
    if base is not None:
        b = _resolve(repo, base)
        skip, _ = maintenance.reachable(repo, [b.model_id])
        base_ref = (b.tag, b.model_id)
    manifest = Manifest(ref.tag, ref.model_id, base_ref)
    name = f"{ref.tag.name}-{ref.tag.version}{SUFFIX}"

    def objects() -> Iterator[tuple[bytes, ObjType, int]]:
        for oid, info in walk(ref.model_id, skip, lambda oid: stored_info(repo, oid)):
            if info is None:
                raise IntegrityError(f"object {oid.hex()} of {ref.tag} is missing from the store")
            yield oid, info[0], info[1] if info[0] == ObjType.CHUNK else 0

    packs = _PackFiles(repo)
    with (
        ThreadPoolExecutor(2, thread_name_prefix="modelvault-export") as pool,
        open_output(dest, name) as (out, where),
        contextlib.closing(packs),
    ):
        writer = ArchiveWriter(out, manifest)
        written = Progress(progress)
        try:
            for _, loaded in ordered_map(pool, packs.load, _batches(objects()), WINDOW):
                writer.add_many(loaded)
                written.to(writer.pos)
            writer.finish()
            written.to(writer.pos)
        finally:
            writer.close()
    return where


def _batches(
    objects: Iterator[tuple[bytes, ObjType, int]],
) -> Iterator[list[tuple[bytes, ObjType]]]:
    """Group ``(id, type, size)`` into tasks of at most ``BATCH`` objects or about
    ``BATCH_BYTES`` bytes."""
    batch: list[tuple[bytes, ObjType]] = []
    size = 0
    for oid, kind, n in objects:
        batch.append((oid, kind))
        size += n
        if len(batch) == BATCH or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


Loaded = tuple[int, bytes, int, int, bytes | memoryview]  # type, id, codec, raw length, payload


class _PackFiles:
    """Reads stored payloads for export: one open file per pack, neighbours in one pread.

    Thread-safe. An open pack stays readable even if gc replaces it meanwhile; a pack
    that is gone before it is opened is looked up again through the pack database.
    """

    def __init__(self, repo: Repository) -> None:
        self._db = repo.objects
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def _fd(self, pack: str) -> int | None:
        with self._lock:
            fd = self._fds.get(pack)
            if fd is None:
                try:
                    fd = os.open(self._db.pack_dir / f"{pack}.pack", os.O_RDONLY)
                except FileNotFoundError:
                    return None
                self._fds[pack] = fd
            return fd

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def _read(self, items: list[tuple[bytes, ObjType]]) -> list[tuple[Entry, bytes | memoryview]]:
        """The stored payloads of ``items``; records next to each other come in one read."""
        db = self._db
        found: list[tuple[Entry, bytes | memoryview] | None] = [None] * len(items)
        spans: list[tuple[Entry, int]] = []
        for i, (oid, _) in enumerate(items):
            e = db.entry(oid)
            if e is None:
                found[i] = db.read_stored(oid)  # raises NotFound / IntegrityError
            else:
                spans.append((e, i))
        run: list[tuple[Entry, int]] = []
        for e, i in [*spans, (None, -1)]:
            if run and (
                e is None
                or e.pack != run[-1][0].pack
                or e.offset != run[-1][0].offset + run[-1][0].stored_len + RECORD_HEADER.size
                or e.offset + e.stored_len - run[0][0].offset > _READ_SPAN
            ):
                self._read_run(items, run, found)
                run = []
            if e is not None:
                run.append((e, i))
        return [x for x in found if x is not None]

    def _read_run(
        self,
        items: list[tuple[bytes, ObjType]],
        run: list[tuple[Entry, int]],
        found: list[tuple[Entry, bytes | memoryview] | None],
    ) -> None:
        first, last = run[0][0], run[-1][0]
        fd = self._fd(first.pack)
        if fd is None:  # repacked by gc since the index was loaded: ask the pack database
            for _, i in run:
                found[i] = self._db.read_stored(items[i][0])
            return
        data = memoryview(os.pread(fd, last.offset + last.stored_len - first.offset, first.offset))
        for e, i in run:
            at = e.offset - first.offset
            found[i] = (e, data[at : at + e.stored_len])

    def load(self, items: list[tuple[bytes, ObjType]]) -> list[Loaded]:
        """Read, verify (never copy damage forward) and encode one batch, in order.

        Compressed objects are copied as stored, never recompressed. The store keeps fp32
        weights raw (zstd shrinks them ~8% only, not worth decoding on every read); an
        archive is for moving bytes, so raw chunks are encoded for the trip.
        """
        out: list[Loaded] = []
        encoder = TransferEncoder()  # chunks come in file order: it reuses what it probed
        for (oid, kind), (entry, payload) in zip(items, self._read(items), strict=True):
            raw = verify_payload(oid, entry, payload, kind)
            if entry.codec == Codec.RAW and kind == ObjType.CHUNK:
                how, packed = encoder.encode(raw)
                out.append((kind, oid, how, entry.raw_len, packed))
                continue
            if kind == ObjType.CHUNK:
                encoder.skip(entry.raw_len)
            elif kind == ObjType.FILE:
                encoder.next_file()
            out.append((kind, oid, entry.codec, entry.raw_len, payload))
        return out
