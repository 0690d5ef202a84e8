"""Reading an archive: the stream in large blocks, its records, and their verification.

Nothing read is trusted: every bound is checked before bytes are read, every id is
recomputed, the index is checked against the records and the checksum against the bytes.
"""

from __future__ import annotations

import contextlib
import functools
import io
import mmap
import os
import stat
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

from modelvault._parallel import ordered_map
from modelvault.archive.format import (
    FOOTER,
    FOOTER_MAGIC,
    HEADER,
    INDEX_HEAD,
    INDEX_MAGIC,
    Checksum,
    Manifest,
    checksum,
    index_entry,
    need,
    parse_header,
    parse_record_head,
)
from modelvault.archive.pipeline import BATCH, BATCH_BYTES, IO_BLOCK, SINK_DEPTH, WINDOW
from modelvault.core.codec import Codec, join_planes, split_planes
from modelvault.core.graph import Info, decode_info, model_info
from modelvault.core.hashing import ID_LEN, ObjType, object_id
from modelvault.core.objects import ModelObject
from modelvault.core.packfmt import IDX_ENTRY, RECORD_HEADER, Entry
from modelvault.errors import ArchiveError, IntegrityError
from modelvault.odb.packs import CheckBuffers, check_payloads, verify_payload

__all__ = [
    "BATCH",
    "MAP_BLOCK",
    "READ_BLOCK",
    "ArchiveReader",
    "Buffers",
    "Received",
    "Staged",
    "read_header",
    "read_trailer",
    "receive",
]

# tuning, not format: BATCH (from pipeline) records per verified batch; READ_BLOCK bytes
# read at a time, or MAP_BLOCK bytes of a local archive mapped at a time
READ_BLOCK = 4 << 20
MAP_BLOCK = 16 << 20


class ArchiveReader:
    """Reads an archive stream exactly, in large blocks, counting the offset.

    Every byte read before ``digest()`` is hashed with the checksum of the archive's
    format, which ``checksum_with`` sets once the header is read (bytes read before
    are kept for it), in a helper thread, in file order; payloads are views of the
    blocks, copied only when one straddles two blocks.

    A local regular file is memory-mapped one window of ``MAP_BLOCK`` bytes at a time
    instead of read: no copy into fresh buffers (whose first touch costs a page fault
    per 4 KiB), and a window is unmapped once no payload view of it is left, as a read
    block would be freed. Only the size the file had when the import began is mapped,
    and a window is mapped only after checking the file still reaches its end. (A file
    cut short while mapped, by another process, would end the import with SIGBUS
    before anything was committed: the store stays as it was.)
    """

    def __init__(self, f: IO[bytes], hasher: ThreadPoolExecutor) -> None:
        self._f = f
        self._map = _mappable(f)  # (fd, size) of a local regular file, else None
        self._file_pos = f.tell() if self._map is not None else 0  # next byte to map
        self._hash: Checksum | None = None  # until checksum_with
        self._early: list[bytes] = []  # bytes read before it, to hash then
        self._hasher = hasher
        self._hashing: deque[Future[Any]] = deque()
        self._block = memoryview(b"")
        self._at = 0  # next unread byte of the block
        self._hashed = 0  # bytes of the block handed to the hasher
        self._sealed = False  # digest() was taken: nothing more is hashed
        self.pos = 0

    def checksum_with(self, version: int) -> None:
        """Hash with the checksum of archive format ``version``, from the first byte."""
        self._hash = checksum(version)
        for data in self._early:
            self._hash.update(data)
        self._early.clear()

    @property
    def checksum_len(self) -> int:
        """Bytes of the archive's checksum (known once ``checksum_with`` was called)."""
        assert self._hash is not None, "checksum_with() was not called"
        return self._hash.digest_size

    def _hash_to(self, end: int) -> None:
        if self._sealed or end <= self._hashed:
            return
        part = self._block[self._hashed : end]
        self._hashed = end
        if self._hash is None:  # the header straddles blocks: keep what was read of it
            self._early.append(bytes(part))
            return
        self._hashing.append(self._hasher.submit(self._hash.update, part))
        while len(self._hashing) > SINK_DEPTH or (self._hashing and self._hashing[0].done()):
            self._hashing.popleft().result()

    def _next_block(self) -> bool:
        self._hash_to(len(self._block))
        self._block = (
            self._mapped() if self._map is not None else memoryview(self._f.read(READ_BLOCK) or b"")
        )
        self._at = self._hashed = 0
        return bool(len(self._block))

    def _mapped(self) -> memoryview:
        """The next window of the mapped file (empty at its end)."""
        assert self._map is not None
        fd, size = self._map
        start = self._file_pos
        n = min(MAP_BLOCK, size - start)
        if n <= 0:
            return memoryview(b"")
        if os.fstat(fd).st_size < start + n:
            raise ArchiveError(f"archive file was cut short while being imported (at {start})")
        base = start - start % mmap.ALLOCATIONGRANULARITY
        window = mmap.mmap(fd, start + n - base, offset=base, access=mmap.ACCESS_READ)
        with contextlib.suppress(OSError, AttributeError):  # a read-ahead hint only
            window.madvise(mmap.MADV_SEQUENTIAL)
        self._file_pos = start + n
        return memoryview(window)[start - base :]

    def read(self, n: int, what: str | Callable[[], str]) -> bytes | memoryview:
        """The next ``n`` bytes; ``what`` (or what it returns) names them if the file ends."""
        at = self._at
        if at + n <= len(self._block):  # the common case: a view, no copy
            self._at = at + n
            self.pos += n
            return self._block[at : at + n]
        parts: list[bytes | memoryview] = []
        left = n
        while left:
            if self._at == len(self._block) and not self._next_block():
                name = what if isinstance(what, str) else what()
                raise ArchiveError(
                    f"archive is truncated: {name} at offset {self.pos} is cut short"
                )
            take = min(left, len(self._block) - self._at)
            parts.append(self._block[self._at : self._at + take])
            self._at += take
            left -= take
        self.pos += n
        return b"".join(parts)

    def digest(self) -> bytes:
        """The hash of every byte read so far; later reads are not hashed."""
        self._hash_to(self._at)
        self._sealed = True
        while self._hashing:
            self._hashing.popleft().result()
        assert self._hash is not None, "checksum_with() was not called"
        return self._hash.digest()

    def at_eof(self) -> bool:
        if self._at != len(self._block):
            return False
        if self._map is not None:  # (the file may have grown since it was mapped)
            return not os.pread(self._map[0], 1, self._file_pos)
        return not self._f.read(1)


def _mappable(f: IO[bytes]) -> tuple[int, int] | None:
    """``(fd, size)`` if ``f`` is a local regular file opened unbuffered, else None."""
    if not isinstance(f, io.FileIO):
        return None
    try:
        st = os.fstat(f.fileno())
    except OSError:
        return None
    return (f.fileno(), st.st_size) if stat.S_ISREG(st.st_mode) else None


class _Record(NamedTuple):
    """One record as read; its first five fields are what ``PackWriter.add_prepared_many``
    takes."""

    kind: ObjType
    oid: bytes
    codec: int
    raw_len: int
    payload: bytes | memoryview
    offset: int  # of the payload


@dataclass
class Received:
    """What the records held: per id its index entry and info; the model objects decoded."""

    entries: dict[bytes, bytes]  # id -> the index entry it must have
    info: dict[bytes, Info]
    models: dict[bytes, ModelObject]


def read_header(r: ArchiveReader) -> tuple[int, Manifest]:
    """The archive's format version and its manifest."""
    version, length = parse_header(r.read(HEADER.size, "header"))
    r.checksum_with(version)
    return version, Manifest.decode(bytes(r.read(length, "manifest")))


def _records(r: ArchiveReader, version: int) -> Iterator[_Record]:
    """Parse record headers and read payloads, checking every bound before reading."""
    while True:
        start = r.pos
        head = parse_record_head(bytes(r.read(RECORD_HEADER.size, "record header")), start, version)
        if head.kind is None:
            return
        payload = r.read(head.stored_len, functools.partial(_payload_name, head.oid, start))
        offset = start + RECORD_HEADER.size
        yield _Record(head.kind, head.oid, head.codec, head.raw_len, payload, offset)


def _payload_name(oid: bytes, start: int) -> str:
    return f"payload of object {oid.hex()} at offset {start}"


def _record_batches(records: Iterator[_Record]) -> Iterator[list[_Record]]:
    batch: list[_Record] = []
    size = 0
    for rec in records:
        batch.append(rec)
        size += len(rec.payload)
        if len(batch) == BATCH or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


Staged = tuple[int, bytes, int, int, bytes | memoryview]  # what add_prepared_many takes


class _Verified(NamedTuple):
    """One record checked: its info, its model object if it is one, and what to store."""

    info: Info
    model: ModelObject | None
    staged: Staged


_buffers = CheckBuffers()  # a verifying thread's, for float chunks


def _entry(rec: _Record) -> Entry:
    return Entry("", rec.offset, len(rec.payload), rec.raw_len, rec.kind, rec.codec)


def _verify(rec: _Record, decoded: memoryview | None = None, checked: bool = False) -> _Verified:
    """Decode one record (never past its raw length), check its id, decode metadata.

    Raw, zstd and float payloads are staged as they arrived; a byte-planes payload comes
    ``decoded`` already (:func:`_verify_batch`) and is staged as those raw bytes (the
    local store holds codecs 0, 1 and 3). A chunk ``checked`` already
    (:func:`_verify_batch`) is only staged.
    """
    if checked:
        return _Verified((rec.kind, rec.raw_len, []), None, rec[:5])
    entry = _entry(rec)
    try:
        staged: Staged = rec[:5]
        raw: bytes | memoryview
        if decoded is None:
            raw = verify_payload(rec.oid, entry, rec.payload, rec.kind)
        else:
            raw = decoded
            if object_id(rec.kind, raw) != rec.oid:
                raise IntegrityError(f"object {rec.oid.hex()} does not match its id")
            staged = (rec.kind, rec.oid, Codec.RAW, rec.raw_len, raw)
        if rec.kind == ObjType.CHUNK:
            return _Verified((rec.kind, rec.raw_len, []), None, staged)
        if rec.kind == ObjType.MODEL:
            model = ModelObject.decode(bytes(raw))
            return _Verified(model_info(model), model, staged)
        return _Verified(decode_info(rec.kind, bytes(raw)), None, staged)
    except IntegrityError as exc:
        raise _damaged(rec, exc) from exc
    except ValueError as exc:  # a malformed or hostile metadata object
        what = f"archive {rec.kind.name.lower()} {rec.oid.hex()}"
        raise ArchiveError(f"{what} is malformed: {exc}") from exc


def _damaged(rec: _Record, exc: IntegrityError) -> ArchiveError:
    what = f"archive {rec.kind.name.lower()} {rec.oid.hex()}"
    return ArchiveError(f"{what} at offset {rec.offset}: {exc}")


class Buffers:
    """Buffers for the byte-planes interleave's output, handed out again once the batch
    whose raw bytes one holds has been written to the pack (a copy): fresh memory costs a
    page fault per 4 KiB touched (35k of the 53k faults of one 1 GiB import, measured
    before). A buffer not given back (an import that failed) is simply freed."""

    _KEEP = 16  # spare buffers kept, at most (batches in flight take fewer)

    def __init__(self) -> None:
        self._free: deque[bytearray] = deque()

    @property
    def spare(self) -> int:
        """Buffers given back and not handed out again yet."""
        return len(self._free)

    def take(self, n: int) -> bytearray:
        """A buffer of at least ``n`` bytes: a spare one, or a new one."""
        while True:
            try:
                buf = self._free.pop()  # (atomic: workers take concurrently)
            except IndexError:
                return bytearray(-(-n // IO_BLOCK) * IO_BLOCK)
            if len(buf) >= n:
                return buf

    def give(self, bufs: list[bytearray]) -> None:
        """Buffers nothing reads any more, to be handed out again."""
        for buf in bufs:
            if len(self._free) < self._KEEP:
                self._free.append(buf)


def _verify_batch(
    batch: list[_Record], buffers: Buffers | None = None
) -> tuple[list[_Verified], list[bytearray]]:
    """Verify a batch; its byte-planes payloads are decoded together (one interleave),
    into buffers from ``buffers`` (returned too: give them back once the batch is
    written)."""
    planes = [k for k, rec in enumerate(batch) if rec.codec == Codec.PLANES]
    decoded: dict[int, memoryview] = {}
    taken: list[bytearray] = []

    def alloc(n: int) -> memoryview:
        assert buffers is not None
        taken.append(buffers.take(n))
        return memoryview(taken[-1])

    if planes:
        split = []
        for k in planes:
            try:
                split.append(split_planes(batch[k].payload, batch[k].raw_len))
            except IntegrityError as exc:
                raise _damaged(batch[k], exc) from exc
        joined = join_planes(split, alloc if buffers is not None else None)
        decoded = dict(zip(planes, joined, strict=True))
    # float chunks: checked at once (decoded into a buffer this thread reuses, in one
    # compiled call, hashed in another); one that is not sound is verified again alone,
    # which names what is wrong with it
    floats = [
        k for k, rec in enumerate(batch) if rec.codec == Codec.FLOAT and rec.kind == ObjType.CHUNK
    ]
    checked = set(floats)
    if floats:
        items = [(batch[k].oid, _entry(batch[k]), batch[k].payload) for k in floats]
        checked -= {floats[i] for i in check_payloads(items, None, _buffers.buffer)}
    out = [_verify(rec, decoded.get(k), k in checked) for k, rec in enumerate(batch)]
    return out, taken


def receive(
    r: ArchiveReader,
    version: int,
    stage: Callable[[list[Staged], list[bytearray]], None],
    pool: ThreadPoolExecutor,
    buffers: Buffers,
    report: Callable[[int], None],
) -> Received:
    """Read and verify every record, handing what to store of each verified batch to
    ``stage`` in order, with the buffers its raw bytes are in; then ``report`` where
    the batch ends in the file."""
    got = Received({}, {}, {})
    batches = _record_batches(_records(r, version))
    verify = functools.partial(_verify_batch, buffers=buffers)
    for batch, (results, taken) in ordered_map(pool, verify, batches, WINDOW):
        for rec, (info, model, _) in zip(batch, results, strict=True):
            need(rec.oid not in got.entries, f"object {rec.oid.hex()} appears twice in the archive")
            got.entries[rec.oid] = index_entry(
                rec.oid, rec.kind, rec.codec, rec.offset, len(rec.payload), rec.raw_len
            )
            got.info[rec.oid] = info
            if model is not None:
                got.models[rec.oid] = model
        stage([v.staged for v in results], taken)
        report(batch[-1].offset + len(batch[-1].payload))
    return got


def read_trailer(r: ArchiveReader, got: Received) -> None:
    """Check the index against the records, then the footer, checksum and end of file."""
    offset = r.pos
    magic, count = INDEX_HEAD.unpack(r.read(INDEX_HEAD.size, "index header"))
    need(magic == INDEX_MAGIC, f"archive index at offset {offset} has a wrong magic")
    held = len(got.entries)
    need(count == held, f"archive index lists {count} objects, the archive holds {held}")
    expected = iter(sorted(got.entries))
    for i in range(count):
        entry = bytes(r.read(IDX_ENTRY.size, "index entry"))
        oid = entry[:ID_LEN]
        need(oid == next(expected), f"archive index entry {i} is out of order or unknown")
        need(entry == got.entries[oid], f"archive index entry {i} does not match its record")
    index_at, n, end_magic = FOOTER.unpack(r.read(FOOTER.size, "footer"))
    need(end_magic == FOOTER_MAGIC, "archive footer has a wrong magic")
    need(index_at == offset, f"archive footer puts the index at {index_at}, it is at {offset}")
    need(n == count, f"archive footer counts {n} objects, the index {count}")
    digest = r.digest()
    stored = r.read(r.checksum_len, "checksum")
    need(stored == digest, "archive checksum does not match its content")
    need(r.at_eof(), "archive has trailing bytes after its checksum")
