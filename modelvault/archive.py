"""``.bentomodel`` archives: one model in one self-describing file (docs/format.md, Archives).

Byte layout, format version 3 (integers little-endian); version 2 is the same layout
with a 32-byte BLAKE3 checksum, version 1 as version 2 without codec 2, and both are
still read::

    header
      0   8  magic b"MVAR\\r\\n\\x1a\\n"
      8   2  format version, u16 (3; readers take 1, 2 and 3)
      10  2  flags, u16 (0; readers refuse any other value)
      12  4  manifest length M, u32 (at most MAX_MANIFEST)
      16  M  manifest, msgpack: {"tags": [{"tag": "name:version", "model": <32-byte id>}],
                                 "base": None | {"tag": "name:version", "model": <32-byte id>}}
    records, from offset 16 + M: one per object, ids unique, in any order
      0   1  object type (ObjType), 1..4
      1   1  codec (Codec): 0 raw, 1 zstd, 2 byte planes (from version 2)
      2   2  zero
      4   4  raw length, u32
      8   4  stored length, u32
      12 32  object id
      44 ..  stored payload (stored length bytes)
    end of records: one record header of 44 zero bytes
    index, at offset I
      0   4  magic b"MVAI"
      4   4  entry count N, u32
      8  ..  N entries sorted by id, 52 bytes each (the pack index entry layout):
             id (32), type (1), codec (1), zero (2), payload offset u64, stored u32, raw u32
    footer, the last 32 bytes (48 in versions 1 and 2)
      0   8  index offset I, u64
      8   4  entry count N, u32
      12  4  magic b"MVAE"
      16 16  XXH3-128 of every byte of the file before this field, canonical (big-endian)
             form (versions 1 and 2: 32 bytes, BLAKE3)

Every object is checked against its BLAKE3 id, so the checksum only has to catch damage
to the framing (header, manifest, record headers, index): a fast non-cryptographic hash
does, at a fifth of BLAKE3's cost.

Records use the pack record layout (``modelvault.core.packfmt``), so export copies
compressed payloads as they are stored; chunks the store keeps raw are encoded for the
trip by ``codec.TransferEncoder`` (byte planes for float weights, zstd level 1 for other
compressible chunks, raw when neither saves 1%). Import stores raw and zstd
payloads as they arrive and byte-planes payloads raw (the bytes it decoded to check the
id), so the local store keeps codecs 0 and 1 only. The writer streams in one pass (the
index goes last); the importer reads in one pass too and trusts nothing: every bound is
checked before bytes are read, every id recomputed, the checksum checked, the closure
walked, and only then are the objects committed and the tag published.

Errors::

    InvalidInput    import: the source is neither a path, a URL nor a file object
    NotFound        export: unknown tag or base
    PathNotFound    import: the local source file does not exist
    IntegrityError  export: the store's own bytes are damaged (nothing is written)
    ArchiveError    import: truncated, corrupt, unknown version, hostile, or incomplete
    ModelExists     import: the tag holds a different model already
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import os
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, NamedTuple, NoReturn, Protocol

import msgpack
import xxhash
from blake3 import blake3

from modelvault import _fsutil
from modelvault._parallel import ordered_map
from modelvault.core.chunking import MAX_SIZE as MAX_CHUNK
from modelvault.core.codec import (
    Codec,
    TransferEncoder,
    join_planes,
    planes_bound,
    split_planes,
    zstd_bound,
)
from modelvault.core.hashing import ID_LEN, ObjType, object_id
from modelvault.core.objects import KIND_TREE, FileObject, ModelObject, TreeObject
from modelvault.core.packfmt import IDX_ENTRY, RECORD_HEADER, Entry, record_header
from modelvault.errors import (
    ArchiveError,
    IntegrityError,
    InvalidInput,
    InvalidTag,
    ModelExists,
    NotFound,
    PathNotFound,
)
from modelvault.model import Model
from modelvault.odb.packs import verify_payload
from modelvault.refs import RefValue
from modelvault.repo import maintenance
from modelvault.tags import Tag

if TYPE_CHECKING:
    from modelvault.store import Store

ArchiveSource = str | os.PathLike[str] | BinaryIO

MAGIC = b"MVAR\r\n\x1a\n"
VERSION = 3
READABLE = (1, 2, 3)  # archive format versions import_model reads
SUFFIX = ".bentomodel"
HEADER = struct.Struct("<8sHHI")
INDEX_HEAD = struct.Struct("<4sI")
INDEX_MAGIC = b"MVAI"
FOOTER = struct.Struct("<QI4s")  # followed by the checksum
FOOTER_MAGIC = b"MVAE"
END_RECORD = bytes(RECORD_HEADER.size)

MAX_MANIFEST = 1 << 20
MAX_METADATA = 64 << 20  # raw bytes of one file, tree or model object (~100 GB in one file)
MAX_RAW = {ObjType.CHUNK: MAX_CHUNK, ObjType.FILE: MAX_METADATA}
MAX_RAW |= {ObjType.TREE: MAX_METADATA, ObjType.MODEL: MAX_METADATA}
_KINDS = {int(t): t for t in ObjType}
_CODECS = {1: frozenset({Codec.RAW, Codec.ZSTD}), 2: frozenset(Codec), 3: frozenset(Codec)}


class _Hash(Protocol):
    @property
    def digest_size(self) -> int: ...

    def update(self, data: bytes | memoryview, /) -> object: ...
    def digest(self) -> bytes: ...


_CHECKSUMS: dict[int, Callable[[], _Hash]] = {1: blake3, 2: blake3, 3: xxhash.xxh3_128}


def checksum(version: int) -> _Hash:
    """A new hash of the trailer checksum of archive format ``version`` (its
    ``digest_size`` is the checksum's length: 32 bytes, then 16 from version 3)."""
    return _CHECKSUMS[version]()


class _Progress:
    """Hands a ``progress`` callback (if any) the growth of a count of bytes done."""

    def __init__(self, progress: Callable[[int], None] | None) -> None:
        self._progress = progress
        self._done = 0

    def to(self, done: int) -> None:
        """``done`` bytes are done now."""
        if self._progress is not None and done > self._done:
            self._progress(done - self._done)
            self._done = done


_IO_BLOCK = 1 << 20
_READ_BLOCK = 4 << 20  # import reads the archive this many bytes at a time
_MAP_BLOCK = 16 << 20  # or maps a local archive this many bytes at a time
_BATCH = 64  # objects per worker task (export and import): amortises the thread hand-off
_BATCH_BYTES = 4 << 20  # bytes of chunks per worker task, about
_WINDOW = 4  # worker tasks in flight: bounds memory to ~_WINDOW * (_BATCH_BYTES + 512 KiB)
_SINK_DEPTH = 4  # batches queued for the thread that writes (export) or stages (import)
_LANES = 2  # import stages into this many packs at once, one thread each
_READ_SPAN = 8 << 20  # export reads neighbouring records together up to this many bytes
_FLUSH_EVERY = 64 << 20  # export starts writing a local archive back to disk this often
_UPLOAD_ON_CLOSE = {"s3", "s3a", "gs", "gcs"}  # an object appears only once its upload ends


def stored_bound(how: int, raw_len: int) -> int:
    """The most stored bytes a valid payload of codec ``how`` has for ``raw_len`` raw."""
    if how == Codec.RAW:
        return raw_len
    if how == Codec.ZSTD:
        return zstd_bound(raw_len)
    return planes_bound(raw_len)


# --- manifest ---------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """What an archive carries: the tag and model id, and for a thin one its base."""

    tag: Tag
    model_id: bytes
    base: tuple[Tag, bytes] | None = None

    def encode(self) -> bytes:
        def ref(tag: Tag, oid: bytes) -> dict[str, Any]:
            return {"tag": str(tag), "model": oid}

        base = ref(*self.base) if self.base else None
        doc = {"tags": [ref(self.tag, self.model_id)], "base": base}
        return msgpack.packb(doc, use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """Parse and check a manifest; raises ArchiveError naming what is wrong."""
        try:
            doc = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types
            raise ArchiveError(f"archive manifest is not valid msgpack: {exc}") from exc
        _need(isinstance(doc, dict) and set(doc) == {"tags", "base"}, "bad archive manifest")
        tags = doc["tags"]
        _need(isinstance(tags, list) and len(tags) == 1, "archive must carry exactly one tag")
        tag, oid = _ref(tags[0])
        manifest = cls(tag, oid, None if doc["base"] is None else _ref(doc["base"]))
        _need(manifest.encode() == data, "archive manifest is not in canonical form")
        return manifest


def _ref(doc: Any) -> tuple[Tag, bytes]:
    _need(isinstance(doc, dict) and set(doc) == {"tag", "model"}, "bad tag in archive manifest")
    oid = doc["model"]
    _need(isinstance(oid, bytes) and len(oid) == ID_LEN, "bad model id in archive manifest")
    try:
        tag = Tag.from_str(doc["tag"]) if isinstance(doc["tag"], str) else None
    except InvalidTag as exc:
        raise ArchiveError(f"bad tag in archive manifest: {exc}") from exc
    _need(tag is not None and not tag.is_latest, f"archive tag {doc['tag']!r} has no version")
    assert tag is not None
    return tag, oid


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise ArchiveError(what)


# --- writing ----------------------------------------------------------------------


class ArchiveWriter:
    """Streams one archive into ``out``: header, records, then index and footer.

    Writing and the running checksum happen in one helper thread (both release the
    GIL), in the order parts were given; at most ``_SINK_DEPTH`` batches wait for it.
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
        self._write([HEADER.pack(MAGIC, VERSION, 0, len(body)), body])

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
        while len(self._queued) > _SINK_DEPTH or (self._queued and self._queued[0].done()):
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
            self._index[oid] = IDX_ENTRY.pack(oid, kind, how, pos + RECORD_HEADER.size, n, raw_len)
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
        self._write([FOOTER.pack(offset, count, FOOTER_MAGIC)])
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


# --- walking a model --------------------------------------------------------------

Child = tuple[ObjType, bytes, int | None]  # kind, id, and the size the parent says it has
Info = tuple[ObjType, int, list[Child]]  # an object's kind, size and children


def _decode(kind: ObjType, raw: bytes) -> Info:
    """Kind, size and children of a metadata object; ValueError if it is malformed."""
    if kind == ObjType.MODEL:
        return _model_info(ModelObject.decode(raw))
    if kind == ObjType.TREE:
        entries = TreeObject.decode(raw).entries
        kids: list[Child] = [
            (ObjType.TREE if e.kind == KIND_TREE else ObjType.FILE, e.oid, e.size) for e in entries
        ]
        return kind, sum(e.size for e in entries), kids
    f = FileObject.decode(raw)
    return kind, f.size, [(ObjType.CHUNK, cid, n) for cid, n in f.chunks]


def _model_info(m: ModelObject) -> Info:
    co: list[Child] = [(ObjType.FILE, m.custom_objects, None)] if m.custom_objects else []
    return ObjType.MODEL, m.size, [(ObjType.TREE, m.tree, m.size), *co]


def _stored_info(store: Store, oid: bytes) -> Info | None:
    """Kind, size and children of an object of the store, or None if it is absent."""
    entry = store.repo.objects.entry(oid)
    if entry is None:
        return None
    kind = ObjType(entry.kind)
    if kind == ObjType.CHUNK:
        return kind, entry.raw_len, []
    try:
        return _decode(kind, store.repo.objects.read(oid, kind))
    except ValueError as exc:
        raise IntegrityError(f"stored object {oid.hex()} is malformed: {exc}") from exc


def _walk(
    root: bytes, skip: set[bytes], info: Callable[[bytes], Info | None]
) -> Iterator[tuple[bytes, Info | None]]:
    """Every object ``root`` reaches, once each, depth first, with its info (None: absent).

    ``skip`` cuts branches: neither those ids nor what only they reach are visited.
    """
    stack = [root]
    seen: set[bytes] = set()
    while stack:
        oid = stack.pop()
        if oid in seen or oid in skip:
            continue
        seen.add(oid)
        found = info(oid)
        yield oid, found
        if found is not None:
            stack.extend(c for _, c, _ in reversed(found[2]))


# --- export -----------------------------------------------------------------------


def export_model(
    store: Store,
    tag: str | Tag,
    dest: str,
    *,
    base: str | Tag | None = None,
    progress: Callable[[int], None] | None = None,
) -> str:
    """Write ``tag`` as one ``.bentomodel`` archive at ``dest``; return its path or URL.

    ``dest`` is a local path or fsspec URL; a folder (existing, or ending in ``/``)
    receives ``<name>-<version>.bentomodel``. Each object is checked against its id
    first; compressed payloads are copied as stored, raw chunks encoded for the trip
    (byte planes or zstd) when it pays.
    The file appears under its final name only once complete. With ``base`` the
    archive is thin: it leaves out what ``base`` reaches. ``progress``, if given, is
    called with each number of archive bytes written (they add up to its size).

    Raises:
        NotFound: no such tag or base.
        IntegrityError: an object of the model is damaged in the store (nothing written).
    """
    model = store.get(tag)
    skip: set[bytes] = set()
    base_ref = None
    if base is not None:
        base_model = store.get(base)
        skip, _ = maintenance.reachable(store.repo, [base_model.ref.model_id])
        base_ref = (base_model.tag, base_model._oid)
    manifest = Manifest(model.tag, model._oid, base_ref)
    name = f"{model.tag.name}-{model.tag.version}{SUFFIX}"

    def objects() -> Iterator[tuple[bytes, ObjType, int]]:
        for oid, info in _walk(model._oid, skip, lambda oid: _stored_info(store, oid)):
            if info is None:
                raise IntegrityError(f"object {oid.hex()} of {model.tag} is missing from the store")
            yield oid, info[0], info[1] if info[0] == ObjType.CHUNK else 0

    packs = _PackFiles(store)
    with (
        ThreadPoolExecutor(2, thread_name_prefix="modelvault-export") as pool,
        _output(dest, name) as (out, where),
        contextlib.closing(packs),
    ):
        writer = ArchiveWriter(out, manifest)
        written = _Progress(progress)
        try:
            for _, loaded in ordered_map(pool, packs.load, _batches(objects()), _WINDOW):
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
    """Group ``(id, type, size)`` into tasks of at most ``_BATCH`` objects or about
    ``_BATCH_BYTES`` bytes."""
    batch: list[tuple[bytes, ObjType]] = []
    size = 0
    for oid, kind, n in objects:
        batch.append((oid, kind))
        size += n
        if len(batch) == _BATCH or size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


Loaded = tuple[int, bytes, int, int, bytes | memoryview]  # type, id, codec, raw length, payload


class _PackFiles:
    """Reads stored payloads for export: one open file per pack, neighbours in one pread.

    Thread-safe. An open pack stays readable even if gc replaces it meanwhile; a pack
    that is gone before it is opened is looked up again through the store.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def _fd(self, pack: str) -> int | None:
        with self._lock:
            fd = self._fds.get(pack)
            if fd is None:
                try:
                    fd = os.open(self._store.repo.objects.pack_dir / f"{pack}.pack", os.O_RDONLY)
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
        db = self._store.repo.objects
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
        if fd is None:  # repacked by gc since the index was loaded: ask the store
            for _, i in run:
                found[i] = self._store.repo.objects.read_stored(items[i][0])
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
            raw = verify_payload(oid, entry, payload, kind)  # type: ignore[arg-type]
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


@contextlib.contextmanager
def _output(dest: str, name: str) -> Iterator[tuple[IO[bytes], str]]:
    """An output stream for ``dest`` that appears under its final name only when complete."""
    if "://" not in dest:
        local = Path(dest).expanduser().absolute()
        if dest.endswith(("/", os.sep)) or local.is_dir():
            local = local / name
        with _local_output(local) as out:
            yield out, str(local)
        return
    from fsspec.core import url_to_fs
    from fsspec.implementations.local import LocalFileSystem

    from modelvault.remote.transport import refuse_password

    refuse_password(dest)  # a secret in the URL would reach fsspec, its logs and errors
    fs, path = url_to_fs(dest)
    if dest.endswith("/") or fs.isdir(path):
        path = f"{path.rstrip('/')}/{name}"
    if isinstance(fs, LocalFileSystem):
        with _local_output(Path(path)) as out:
            yield out, fs.unstrip_protocol(path)
        return
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    output = _upload_output if protocols & _UPLOAD_ON_CLOSE else _renamed_output
    with output(fs, path) as out:
        yield out, fs.unstrip_protocol(path)


@contextlib.contextmanager
def _local_output(path: Path) -> Iterator[IO[bytes]]:
    """Temp file in the same folder, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fsutil.temp_name(path.parent, SUFFIX)
    try:
        with open(tmp, "xb", buffering=0) as f:  # ArchiveWriter batches its writes
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsutil.fsync_dir(path.parent)


@contextlib.contextmanager
def _upload_output(fs: Any, path: str) -> Iterator[IO[bytes]]:
    """Object stores: the object appears when the upload completes; on error it is aborted."""
    f = fs.open(path, "wb")
    try:
        yield f
    except BaseException:
        f.discard()  # aborts the multipart upload, or drops the single-PUT buffer
        f.closed = True  # so that close() (also from __del__) uploads nothing
        raise
    f.close()


@contextlib.contextmanager
def _renamed_output(fs: Any, path: str) -> Iterator[IO[bytes]]:
    """Other file systems: write a hidden temporary beside the target, then move it."""
    parent, _, base = path.rpartition("/")
    tmp = f"{parent}/{_fsutil.temp_name(Path(), '-' + base).name}"
    try:
        with fs.open(tmp, "wb") as f:
            yield f
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(tmp)
        raise


# --- import -----------------------------------------------------------------------


class _Reader:
    """Reads an archive stream exactly, in large blocks, counting the offset.

    Every byte read before ``digest()`` is hashed with the checksum of the archive's
    format, which ``checksum_with`` sets once the header is read (bytes read before
    are kept for it), in a helper thread, in file order; payloads are views of the
    blocks, copied only when one straddles two blocks.

    A local regular file is memory-mapped one window of ``_MAP_BLOCK`` bytes at a time
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
        self._hash: _Hash | None = None  # until checksum_with
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
        while len(self._hashing) > _SINK_DEPTH or (self._hashing and self._hashing[0].done()):
            self._hashing.popleft().result()

    def _next_block(self) -> bool:
        self._hash_to(len(self._block))
        self._block = (
            self._mapped()
            if self._map is not None
            else memoryview(self._f.read(_READ_BLOCK) or b"")
        )
        self._at = self._hashed = 0
        return bool(len(self._block))

    def _mapped(self) -> memoryview:
        """The next window of the mapped file (empty at its end)."""
        import mmap

        assert self._map is not None
        fd, size = self._map
        start = self._file_pos
        n = min(_MAP_BLOCK, size - start)
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
    import io
    import stat

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
class _Received:
    """What the records held: per id its index entry and info; the model objects decoded."""

    entries: dict[bytes, bytes]  # id -> the index entry it must have
    info: dict[bytes, Info]
    models: dict[bytes, ModelObject]


def _read_header(r: _Reader) -> tuple[int, Manifest]:
    """The archive's format version and its manifest."""
    magic, version, flags, length = HEADER.unpack(r.read(HEADER.size, "header"))
    _need(magic == MAGIC, "not a .bentomodel archive (wrong magic)")
    readable = ", ".join(map(str, READABLE[:-1])) + f" and {READABLE[-1]}"
    _need(
        version in READABLE, f"archive format version {version} is unknown (this reads {readable})"
    )
    _need(flags == 0, f"archive has unknown flags {flags:#x}")
    r.checksum_with(version)
    _need(length <= MAX_MANIFEST, f"archive manifest declares {length} bytes (> {MAX_MANIFEST})")
    return version, Manifest.decode(bytes(r.read(length, "manifest")))


def _records(r: _Reader, version: int) -> Iterator[_Record]:
    """Parse record headers and read payloads, checking every bound before reading."""
    codecs = _CODECS[version]
    while True:
        start = r.pos
        head = bytes(r.read(RECORD_HEADER.size, "record header"))
        kind, how, raw_len, stored_len, oid = RECORD_HEADER.unpack(head)
        if kind == 0:
            _need(head == END_RECORD, f"malformed end-of-records marker at offset {start}")
            return
        t = _KINDS.get(kind)
        if (
            t is None
            or how not in codecs
            or head[2:4] != b"\0\0"
            or raw_len > MAX_RAW[t]
            or stored_len > stored_bound(how, raw_len)
        ):
            _refuse_record(start, head, version)
        payload = r.read(stored_len, functools.partial(_payload_name, oid, start))
        yield _Record(t, oid, how, raw_len, payload, start + RECORD_HEADER.size)


def _payload_name(oid: bytes, start: int) -> str:
    return f"payload of object {oid.hex()} at offset {start}"


def _refuse_record(start: int, head: bytes, version: int) -> NoReturn:
    """Raise the ArchiveError naming what is wrong with the record header ``head``."""
    kind, how, raw_len, stored_len, oid = RECORD_HEADER.unpack(head)
    where = f"object {oid.hex()} at offset {start}"
    _need(head == record_header(kind, how, raw_len, stored_len, oid), f"{where}: bad padding")
    _need(kind in ObjType._value2member_map_, f"{where} has unknown type {kind}")
    _need(how in Codec._value2member_map_, f"{where} has unknown codec {how}")
    _need(
        how in _CODECS[version],
        f"{where} uses codec {how} ({Codec(how).name.lower()}), "
        f"which archive format version {version} does not have",
    )
    limit = MAX_RAW[ObjType(kind)]
    _need(raw_len <= limit, f"{where} declares {raw_len} raw bytes (more than {limit})")
    raise ArchiveError(f"{where} declares {stored_len} stored bytes for {raw_len} raw")


def _record_batches(records: Iterator[_Record]) -> Iterator[list[_Record]]:
    batch: list[_Record] = []
    size = 0
    for rec in records:
        batch.append(rec)
        size += len(rec.payload)
        if len(batch) == _BATCH or size >= _BATCH_BYTES:
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


def _verify(rec: _Record, decoded: memoryview | None = None) -> _Verified:
    """Decode one record (never past its raw length), check its id, decode metadata.

    Raw and zstd payloads are staged as they arrived; a byte-planes payload comes
    ``decoded`` already (:func:`_verify_batch`) and is staged as those raw bytes (the
    local store holds codecs 0 and 1).
    """
    entry = Entry("", rec.offset, len(rec.payload), rec.raw_len, rec.kind, rec.codec)
    try:
        staged: Staged = rec[:5]
        raw: bytes | memoryview
        if decoded is None:
            raw = verify_payload(rec.oid, entry, rec.payload, rec.kind)  # type: ignore[arg-type]
        else:
            raw = decoded
            if object_id(rec.kind, raw) != rec.oid:
                raise IntegrityError(f"object {rec.oid.hex()} does not match its id")
            staged = (rec.kind, rec.oid, Codec.RAW, rec.raw_len, raw)
        if rec.kind == ObjType.CHUNK:
            return _Verified((rec.kind, rec.raw_len, []), None, staged)
        if rec.kind == ObjType.MODEL:
            model = ModelObject.decode(bytes(raw))
            return _Verified(_model_info(model), model, staged)
        return _Verified(_decode(rec.kind, bytes(raw)), None, staged)
    except IntegrityError as exc:
        raise _damaged(rec, exc) from exc
    except ValueError as exc:  # a malformed or hostile metadata object
        what = f"archive {rec.kind.name.lower()} {rec.oid.hex()}"
        raise ArchiveError(f"{what} is malformed: {exc}") from exc


def _damaged(rec: _Record, exc: IntegrityError) -> ArchiveError:
    what = f"archive {rec.kind.name.lower()} {rec.oid.hex()}"
    return ArchiveError(f"{what} at offset {rec.offset}: {exc}")


class _Buffers:
    """Buffers for the byte-planes interleave's output, handed out again once the batch
    whose raw bytes one holds has been written to the pack (a copy): fresh memory costs a
    page fault per 4 KiB touched (35k of the 53k faults of one 1 GiB import, measured
    before). A buffer not given back (an import that failed) is simply freed."""

    _KEEP = 16  # spare buffers kept, at most (batches in flight take fewer)

    def __init__(self) -> None:
        self._free: deque[bytearray] = deque()

    def take(self, n: int) -> bytearray:
        while True:
            try:
                buf = self._free.pop()  # (atomic: workers take concurrently)
            except IndexError:
                return bytearray(-(-n // _IO_BLOCK) * _IO_BLOCK)
            if len(buf) >= n:
                return buf

    def give(self, bufs: list[bytearray]) -> None:
        for buf in bufs:
            if len(self._free) < self._KEEP:
                self._free.append(buf)


def _verify_batch(
    batch: list[_Record], buffers: _Buffers | None = None
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
    return [_verify(rec, decoded.get(k)) for k, rec in enumerate(batch)], taken


def _receive(
    r: _Reader,
    version: int,
    stage: Callable[[list[Staged], list[bytearray]], None],
    pool: ThreadPoolExecutor,
    buffers: _Buffers,
    report: Callable[[int], None],
) -> _Received:
    """Read and verify every record, handing what to store of each verified batch to
    ``stage`` in order, with the buffers its raw bytes are in; then ``report`` where
    the batch ends in the file."""
    got = _Received({}, {}, {})
    batches = _record_batches(_records(r, version))
    verify = functools.partial(_verify_batch, buffers=buffers)
    for batch, (results, taken) in ordered_map(pool, verify, batches, _WINDOW):
        for rec, (info, model, _) in zip(batch, results, strict=True):
            _need(
                rec.oid not in got.entries, f"object {rec.oid.hex()} appears twice in the archive"
            )
            got.entries[rec.oid] = IDX_ENTRY.pack(
                rec.oid, rec.kind, rec.codec, rec.offset, len(rec.payload), rec.raw_len
            )
            got.info[rec.oid] = info
            if model is not None:
                got.models[rec.oid] = model
        stage([v.staged for v in results], taken)
        report(batch[-1].offset + len(batch[-1].payload))
    return got


def _read_trailer(r: _Reader, got: _Received) -> None:
    """Check the index against the records, then the footer, checksum and end of file."""
    offset = r.pos
    magic, count = INDEX_HEAD.unpack(r.read(INDEX_HEAD.size, "index header"))
    _need(magic == INDEX_MAGIC, f"archive index at offset {offset} has a wrong magic")
    held = len(got.entries)
    _need(count == held, f"archive index lists {count} objects, the archive holds {held}")
    expected = iter(sorted(got.entries))
    for i in range(count):
        entry = bytes(r.read(IDX_ENTRY.size, "index entry"))
        oid = entry[:ID_LEN]
        _need(oid == next(expected), f"archive index entry {i} is out of order or unknown")
        _need(entry == got.entries[oid], f"archive index entry {i} does not match its record")
    index_at, n, end_magic = FOOTER.unpack(r.read(FOOTER.size, "footer"))
    _need(end_magic == FOOTER_MAGIC, "archive footer has a wrong magic")
    _need(index_at == offset, f"archive footer puts the index at {index_at}, it is at {offset}")
    _need(n == count, f"archive footer counts {n} objects, the index {count}")
    digest = r.digest()
    stored = r.read(r.checksum_len, "checksum")
    _need(stored == digest, "archive checksum does not match its content")
    _need(r.at_eof(), "archive has trailing bytes after its checksum")


def _check_closure(store: Store, manifest: Manifest, got: _Received) -> ModelObject:
    """The model must be whole (archive + store), consistent, and the archive hold no extra."""
    infos: dict[bytes, Info] = {}
    missing: list[bytes] = []

    def info(oid: bytes) -> Info | None:
        return got.info[oid] if oid in got.info else _stored_info(store, oid)

    for oid, found in _walk(manifest.model_id, set(), info):
        if found is None:
            missing.append(oid)
        else:
            infos[oid] = found
    if missing:
        raise ArchiveError(_missing_message(store, manifest, missing))
    extra = len(set(got.info) - set(infos))
    _need(not extra, f"archive holds {extra} objects its model does not reach")
    root_kind = infos[manifest.model_id][0]
    _need(root_kind == ObjType.MODEL, f"archive model id names a {root_kind.name.lower()}")
    for oid, (kind, _, children) in infos.items():
        for want_kind, child, want_size in children:
            have_kind, size, _ = infos[child]
            what = f"{kind.name.lower()} {oid.hex()}"
            _need(have_kind == want_kind, f"{what} refers to {child.hex()} with the wrong type")
            _need(want_size in (None, size), f"{what} gives {child.hex()} a wrong size")
    model = got.models.get(manifest.model_id)
    if model is None:
        model = ModelObject.decode(store.repo.objects.read(manifest.model_id, ObjType.MODEL))
    named = f"{model.name}:{model.version}"
    _need(named == str(manifest.tag), f"archive tag {manifest.tag} holds the model {named}")
    return model


def _missing_message(store: Store, manifest: Manifest, missing: list[bytes]) -> str:
    first = f"{len(missing)} objects of {manifest.tag} (first {missing[0].hex()})"
    if manifest.base is None:
        return f"archive is incomplete: {first} are neither in it nor in the store"
    base, base_id = manifest.base
    try:
        present = store.repo.refs.read(base).model_id == base_id
    except NotFound:
        present = False
    if not present:
        return (
            f"thin archive needs its base {base} (model {base_id.hex()}) in the store: "
            f"import {base} first ({first} are missing)"
        )
    return f"thin archive is incomplete: {first} are neither in it nor in the store nor in {base}"


@contextlib.contextmanager
def _input(src: ArchiveSource) -> Iterator[IO[bytes]]:
    """A binary stream over ``src``: a file object as is, a local path, or an fsspec URL."""
    if not isinstance(src, (str, os.PathLike)):
        yield src
        return
    text = os.fspath(src)
    try:
        if "://" in text:
            from fsspec.core import url_to_fs

            from modelvault.remote.transport import refuse_password

            refuse_password(text)  # a secret in the URL would reach fsspec, logs, errors
            fs, path = url_to_fs(text)
            f = fs.open(path, "rb", block_size=8 * _IO_BLOCK)
        else:
            f = open(text, "rb", buffering=0)  # noqa: SIM115  (_Reader reads big blocks)
            with contextlib.suppress(OSError, AttributeError):  # read-ahead hint only
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except FileNotFoundError:
        raise PathNotFound(f"cannot import {text}: no such file") from None
    with f:
        yield f


def import_model(
    store: Store, src: ArchiveSource, *, progress: Callable[[int], None] | None = None
) -> Model:
    """Import one ``.bentomodel`` archive (local path, fsspec URL or binary file object).

    Every object is verified against its id and the whole file against its checksum,
    and the model must be whole (a thin archive's base in the store) before anything
    is committed and the tag published; importing the identical model again is a no-op.
    ``progress``, if given, is called with each number of archive bytes read and
    verified (they add up to its size).

    Importing a model whose tag the store holds already writes every object of it the
    store lacks (so an import restores objects the store lost) and leaves the ref as it is.

    Raises:
        InvalidInput: ``src`` is neither a path, a URL nor a binary file object.
        PathNotFound: ``src`` is a local path that does not exist.
        ArchiveError: the archive is truncated, corrupt, of an unknown version, hostile
            or incomplete; the store is left exactly as it was.
        ModelExists: the tag already holds a different model (the store is unchanged).
    """
    if not isinstance(src, (str, os.PathLike)) and not callable(getattr(src, "read", None)):
        raise InvalidInput(
            "import_model reads a .bentomodel path, an fsspec URL or a binary file object, "
            f"not {type(src).__name__}"
        )
    with (
        _input(src) as f,
        store.repo.writing() as writer,
        ThreadPoolExecutor(2, thread_name_prefix="modelvault-import") as pool,
        ThreadPoolExecutor(1, thread_name_prefix="modelvault-import-hash") as hasher,
    ):
        writer.publish_at_commit()  # sealed packs stay hidden until commit; abort drops them
        r = _Reader(f, hasher)
        version, manifest = _read_header(r)
        staging: deque[Future[None]] = deque()
        stagers = [  # one per pack lane: copies into the page cache run in parallel
            ThreadPoolExecutor(1, thread_name_prefix=f"modelvault-import-stage{lane}")
            for lane in range(_LANES)
        ]
        staged = itertools.count()
        buffers = _Buffers()
        checked = _Progress(progress)  # bytes of the file verified, from its start

        def write(batch: list[Staged], taken: list[bytearray], lane: int) -> None:
            writer.add_prepared_many(batch, lane)
            buffers.give(taken)  # written (copied): nothing reads those bytes again

        def stage(batch: list[Staged], taken: list[bytearray]) -> None:
            lane = next(staged) % _LANES  # batches take turns: each lane has its stager
            staging.append(stagers[lane].submit(write, batch, taken, lane))
            while len(staging) > _SINK_DEPTH or (staging and staging[0].done()):
                staging.popleft().result()

        try:
            got = _receive(r, version, stage, pool, buffers, checked.to)
            while staging:
                staging.popleft().result()
        finally:
            for fut in staging:  # after an error: stop staging before the writer aborts
                fut.cancel()
            for stager in stagers:
                stager.shutdown()
        _read_trailer(r, got)
        checked.to(r.pos)
        model = _check_closure(store, manifest, got)
        try:
            ref = RefValue.of(manifest.tag, manifest.model_id, model).check()
        except ValueError as exc:
            raise ArchiveError(
                f"archive model object of {manifest.tag} is unusable: {exc}"
            ) from None
        _check_free(store, ref)
        writer.commit()  # invariant 1: objects durable before the ref exists
        if not store.repo.refs.create(ref):
            _check_free(store, ref)  # created meanwhile: the same model, or ModelExists
    return Model(store.repo, ref)


def _check_free(store: Store, ref: RefValue) -> None:
    """Raise ModelExists if ``ref.tag`` holds another model (the same one is fine)."""
    try:
        held = store.repo.refs.read(ref.tag).model_id
    except NotFound:
        return
    if held != ref.model_id:
        raise ModelExists(
            f"model {ref.tag} already exists as {held.hex()}; the archive holds "
            f"{ref.model_id.hex()}: versions are immutable"
        )
