"""PackDB: has / read / write / iterate / delete objects kept in pack files.

Layout under the store's ``objects/`` folder (see docs/format.md)::

    objects/packs/<hex>.pack   records of objects, named by the BLAKE3 of the file
    objects/packs/<hex>.idx    the pack's index; a pack without its index is invisible
    objects/tmp/               packs being written

Write order: a pack is written under a temporary name, fsync'd, renamed to
``<hex>.pack``; then its index is written the same way and renamed to
``<hex>.idx``. Only then do its objects exist for readers.

:class:`PackBuilder` is the one place where records are laid out, entries made and the
pack digest (its name) computed: :class:`PackWriter` streams a builder's records into a
file, :func:`build_pack` joins them in memory (a push builds the packs it sends so).
The file recipe (fsync, rename) is ``_fsutil``'s.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from blake3 import blake3

from modelvault import _fsutil
from modelvault.core import codec
from modelvault.core.chunking import Source
from modelvault.core.hashing import ObjType, object_id
from modelvault.core.packfmt import (
    FILE_HEADER,
    RECORD_HEADER,
    Entry,
    PackFormatError,
    decode_index,
    encode_index,
    pack_header,
    record_header,
)
from modelvault.errors import IntegrityError

if TYPE_CHECKING:
    from concurrent.futures import Future

PACK_TARGET = 64 * 1024 * 1024  # a pack is sealed once it holds this many bytes
_MAX_PARTS = 512  # buffers per writev (IOV_MAX is 1024 on Linux)
_WRITEBACK = 8 * 1024 * 1024  # start writing the open pack to disk every this many bytes

Prepared = tuple[bytes, int, bytes | memoryview]  # (id, codec, payload)
Record = tuple[int, bytes, int, int, bytes | memoryview]  # (type, id, codec, raw len, payload)


def prepare(kind: ObjType, data: bytes | memoryview, *, probe: bool = True) -> Prepared:
    """Hash and encode one object: the CPU work of a write, safe to run in threads."""
    oid = object_id(kind, data)
    how, payload = codec.encode(data, probe=probe)
    return oid, int(how), payload


class PackDB:
    """The objects of one store. Thread-safe; several processes may share one folder."""

    def __init__(self, root: Path) -> None:
        self.pack_dir = root / "packs"
        self.tmp_dir = root / "tmp"
        self.pack_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._index: dict[bytes, Entry] = {}
        self._packs: set[str] = set()
        self._damaged: dict[str, str] = {}  # pack -> why its index is unreadable
        self._loaded = False  # indexes are read on first use: listing refs needs none

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.refresh()

    # -- index -----------------------------------------------------------------
    def refresh(self) -> None:
        """Load indexes of packs written since the last look (by any process).

        When packs have disappeared (gc elsewhere), the index is rebuilt, since an
        object may have lived in a removed pack and in a newer one too.
        """
        on_disk = {p.stem for p in self.pack_dir.glob("*.idx")}
        self._loaded = True
        with self._lock:
            rebuild = bool(self._packs - on_disk)
            new = on_disk if rebuild else on_disk - self._packs
        loaded: dict[str, dict[bytes, Entry]] = {}
        damaged: dict[str, str] = {}
        for name in sorted(new):
            try:
                loaded[name] = self._load_index(name)
            except IntegrityError as exc:  # the store still opens; verify reports it
                damaged[name] = str(exc)
        with self._lock:
            if rebuild:
                self._index, self._packs = {}, set()
            for name, entries in loaded.items():
                self._index.update(entries)
                self._packs.add(name)
            self._damaged = {
                n: why
                for n, why in (self._damaged | damaged).items()
                if n in on_disk and n not in self._packs
            }

    def damaged_indexes(self) -> dict[str, str]:
        """Packs whose index file is unreadable (their objects cannot be found): name -> why."""
        self._ensure_loaded()
        with self._lock:
            return dict(self._damaged)

    def _load_index(self, name: str) -> dict[bytes, Entry]:
        try:
            data = (self.pack_dir / f"{name}.idx").read_bytes()
            return decode_index(name, data)[0]
        except FileNotFoundError:
            return {}
        except PackFormatError as exc:
            raise IntegrityError(str(exc)) from exc

    def _add_entries(self, name: str, entries: dict[bytes, Entry]) -> None:
        with self._lock:  # a newer copy wins: gc writes one before dropping the old pack
            self._index.update(entries)
            self._packs.add(name)

    def entry(self, oid: bytes) -> Entry | None:
        """Where ``oid`` is stored, or None; looks for new packs once on a miss."""
        e = self._index.get(oid)
        if e is None:
            self.refresh()
            e = self._index.get(oid)
        return e

    def entries(self, oids: Sequence[bytes]) -> list[Entry | None]:
        """Where each of ``oids`` is stored, None where the loaded indexes do not know it
        (no new look for new packs: for many ids at once, where a miss is no error)."""
        self._ensure_loaded()
        get = self._index.get
        return [get(oid) for oid in oids]

    def has(self, oid: bytes) -> bool:
        """True if the object is stored (as far as the loaded indexes know)."""
        self._ensure_loaded()
        return oid in self._index

    def ids(self) -> list[bytes]:
        """Every stored object id."""
        self._ensure_loaded()
        with self._lock:
            return list(self._index)

    def packs(self) -> list[str]:
        """Names of every visible pack."""
        self._ensure_loaded()
        with self._lock:
            return sorted(self._packs)

    def entries_of(self, pack: str) -> dict[bytes, Entry]:
        """The index of one pack, read from disk."""
        return self._load_index(pack)

    # -- reading ---------------------------------------------------------------
    def read_stored(self, oid: bytes) -> tuple[Entry, bytes]:
        """The stored (maybe compressed) payload of ``oid``, not yet verified.

        Raises:
            IntegrityError: no visible pack holds the object (it was referenced, so the
                store is damaged), its pack is gone, or an index that may list it is.
        """
        for attempt in range(2):
            e = self.entry(oid)
            if e is None:
                break
            try:
                with open(self.pack_dir / f"{e.pack}.pack", "rb") as f:
                    payload = os.pread(f.fileno(), e.stored_len, e.offset)
            except FileNotFoundError:
                if attempt:
                    raise IntegrityError(
                        f"pack {e.pack} is missing: the store is damaged"
                    ) from None
                self.refresh()  # the pack was repacked by gc meanwhile
                continue
            return e, payload
        if self._damaged:
            why = "; ".join(self._damaged.values())
            raise IntegrityError(f"object {oid.hex()} cannot be found, the store is damaged: {why}")
        # Whoever reads an object got its id from a ref, a model, a tree or a file: its
        # absence is damage (or a damaged pack that verify set aside), not a lookup miss.
        raise IntegrityError(
            f"object {oid.hex()} is missing from the store: `mv verify` names the tags it "
            "breaks; `mv pull` or `mv import` a healthy copy of them to repair"
        )

    def read(self, oid: bytes, kind: ObjType | None = None) -> bytes:
        """The raw bytes of ``oid``, checked against the id.

        Raises:
            IntegrityError: the object is missing, or the bytes on disk do not hash to
                ``oid`` (or are of another type).
        """
        e, payload = self.read_stored(oid)
        return verify_payload(oid, e, payload, kind)

    def read_many(self, oids: list[bytes], kind: ObjType | None = None) -> list[bytes | memoryview]:
        """The raw bytes of several objects, in order, each checked against its id.

        Payloads lying next to each other in a pack (a file's chunks usually do) are
        memory-mapped together (hashed and handed on without a copy; the mapping goes
        when the last view of it does), and each pack is opened once per call. Falls back
        to :meth:`read` one by one if a pack disappears meanwhile (gc elsewhere).

        Raises:
            IntegrityError: an object is missing, or stored bytes do not hash to their id.
        """
        maybe = [self.entry(oid) for oid in oids]
        entries = [e for e in maybe if e is not None]
        if len(entries) != len(oids):
            return [self.read(oid, kind) for oid in oids]
        payloads: dict[int, memoryview] = {}
        try:
            for pack, spans in _spans(entries).items():
                with open(self.pack_dir / f"{pack}.pack", "rb") as f:
                    source = Source(os.fstat(f.fileno()).st_size, fd=f.fileno())
                    for start, end, members in spans:
                        if end > source.size:  # truncated: read() names the damaged object
                            return [self.read(oid, kind) for oid in oids]
                        block = source.view(start, end)
                        for i in members:
                            off = entries[i].offset - start
                            payloads[i] = block[off : off + entries[i].stored_len]
        except FileNotFoundError:
            return [self.read(oid, kind) for oid in oids]
        return [
            verify_payload(oid, entries[i], payloads[i], kind)  # type: ignore[arg-type]
            for i, oid in enumerate(oids)
        ]

    # -- writing ---------------------------------------------------------------
    def writer(self, *, repack: bool = False) -> PackWriter:
        """A new writer; call ``commit()`` to make its objects durable and visible.

        With ``repack`` it writes objects even if a visible pack holds them (gc
        copies the live objects out of a pack before deleting it).
        """
        return PackWriter(self, skip_stored=not repack)

    # -- maintenance -----------------------------------------------------------
    def stored_bytes(self) -> int:
        """Bytes the visible packs and their indexes take on disk."""
        total = 0
        for name in self.packs():
            for ext in (".pack", ".idx"):
                with contextlib.suppress(FileNotFoundError):
                    total += (self.pack_dir / f"{name}{ext}").stat().st_size
        return total

    def verify_pack(self, name: str) -> list[bytes]:
        """Re-hash every object of one pack; return the ids that do not match."""
        bad: list[bytes] = []
        try:
            entries = self.entries_of(name)
        except IntegrityError:
            return [oid for oid, e in self._index.items() if e.pack == name]
        try:
            f = open(self.pack_dir / f"{name}.pack", "rb")  # noqa: SIM115
        except FileNotFoundError:
            return list(entries)
        with f:
            for oid, e in entries.items():
                payload = os.pread(f.fileno(), e.stored_len, e.offset)
                try:
                    verify_payload(oid, e, payload, None)
                except IntegrityError:
                    bad.append(oid)
        return bad

    def check_pack_file(self, name: str) -> str | None:
        """What is wrong with a pack file outside its payloads, or None.

        Payloads are checked object by object (:meth:`verify_pack`); every other byte
        is the file header or a record header, which the pack digest (its name)
        covers, and the records must tile the file with nothing between or after.
        """
        try:
            entries = sorted(self.entries_of(name).values(), key=lambda e: e.offset)
            with open(self.pack_dir / f"{name}.pack", "rb") as f:
                size = os.fstat(f.fileno()).st_size
                digest = blake3(os.pread(f.fileno(), FILE_HEADER.size, 0))
                pos = FILE_HEADER.size
                for e in entries:
                    if e.offset - RECORD_HEADER.size != pos:
                        return f"record at {pos} is not where its index says"
                    digest.update(os.pread(f.fileno(), RECORD_HEADER.size, pos))
                    pos = e.offset + e.stored_len
        except FileNotFoundError:
            return "the pack file is missing"
        except IntegrityError as exc:
            return str(exc)
        if pos != size:
            return f"the file has {size} bytes, its records end at {pos}"
        if digest.hexdigest() != name:
            return "a file or record header does not match the pack's digest"
        return None

    def delete_pack(self, name: str) -> int:
        """Remove a pack and its index (index first); returns the bytes freed.

        Objects it held must be copied elsewhere first if still needed. The loaded
        index still lists them until :meth:`refresh` (gc deletes several packs, then
        refreshes once).
        """
        freed = 0
        for ext in (".idx", ".pack"):
            path = self.pack_dir / f"{name}{ext}"
            with contextlib.suppress(FileNotFoundError):
                freed += path.stat().st_size
                path.unlink()
        _fsutil.fsync_dir(self.pack_dir)
        return freed

    def records(
        self, name: str, folder: Path | None = None
    ) -> Iterator[tuple[bytes, Entry, bytes, bool]]:
        """``(id, entry, payload, sound)`` of each object of a pack in ``folder`` (the
        pack folder unless told), found through its index where that is readable, else
        by walking the pack's records (their headers carry the ids) until one is
        malformed; ``sound`` tells whether the payload matches its id."""
        folder = self.pack_dir if folder is None else folder
        try:
            data = (folder / f"{name}.idx").read_bytes()
            entries: Iterable[tuple[bytes, Entry]] | None = decode_index(name, data)[0].items()
        except (OSError, PackFormatError):
            entries = None
        try:
            f = open(folder / f"{name}.pack", "rb")  # noqa: SIM115
        except FileNotFoundError:
            return
        with f:
            fd = f.fileno()
            for oid, e in _walk_records(fd, name) if entries is None else entries:
                payload = os.pread(fd, e.stored_len, e.offset)
                try:
                    verify_payload(oid, e, payload, None)
                    sound = True
                except (IntegrityError, ValueError):
                    sound = False
                yield oid, e, payload, sound

    def salvage(self, name: str) -> Iterator[tuple[int, bytes, int, int, bytes]]:
        """The sound objects of a damaged pack that no other pack holds, as
        ``(type, id, codec, raw length, payload)`` for ``PackWriter.add_prepared``."""
        for oid, e, payload, sound in self.records(name):
            other = self._index.get(oid)
            if sound and (other is None or other.pack == name):
                yield e.kind, oid, e.codec, e.raw_len, payload

    def set_aside(self, name: str, folder: Path) -> None:
        """Move a pack and its index out of view into ``folder`` (index first, so no
        reader finds an index without its pack); kept for inspection, freed by gc."""
        folder.mkdir(exist_ok=True)
        for ext in (".idx", ".pack"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.pack_dir / f"{name}{ext}", folder / f"{name}{ext}")
        _fsutil.fsync_dir(self.pack_dir)
        _fsutil.fsync_dir(folder)

    def orphan_files(self) -> Iterator[Path]:
        """Pack files without index and leftover temporaries (only safe to delete under lock)."""
        indexed = {p.stem for p in self.pack_dir.glob("*.idx")}
        for p in self.pack_dir.iterdir():
            if p.suffix != ".idx" and p.stem not in indexed:
                yield p
        yield from self.tmp_dir.iterdir()


def _walk_records(fd: int, pack: str) -> Iterator[tuple[bytes, Entry]]:
    """``(id, entry)`` of each record of a pack file, in order, until a header is malformed."""
    size = os.fstat(fd).st_size
    pos = FILE_HEADER.size
    while pos + RECORD_HEADER.size <= size:
        kind, how, raw_len, stored_len, oid = RECORD_HEADER.unpack(
            os.pread(fd, RECORD_HEADER.size, pos)
        )
        offset = pos + RECORD_HEADER.size
        if offset + stored_len > size:
            return
        yield oid, Entry(pack, offset, stored_len, raw_len, kind, how)
        pos = offset + stored_len


_GAP = 64 * 1024  # read through holes up to this size rather than issuing another pread


def _spans(entries: list[Entry]) -> dict[str, list[tuple[int, int, list[int]]]]:
    """Group entries by pack into ``(start, end, member indexes)`` byte ranges to read."""
    by_pack: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        by_pack.setdefault(e.pack, []).append(i)
    out: dict[str, list[tuple[int, int, list[int]]]] = {}
    for pack, members in by_pack.items():
        members.sort(key=lambda i: entries[i].offset)
        spans: list[tuple[int, int, list[int]]] = []
        for i in members:
            e = entries[i]
            if spans and e.offset - spans[-1][1] <= _GAP:
                start, end, idx = spans[-1]
                spans[-1] = (start, max(end, e.offset + e.stored_len), [*idx, i])
            else:
                spans.append((e.offset, e.offset + e.stored_len, [i]))
        out[pack] = spans
    return out


def verify_payload(oid: bytes, e: Entry, payload: bytes, kind: ObjType | None) -> bytes:
    """Decode a stored payload and check it against its id; returns the raw bytes."""
    if kind is not None and e.kind != kind:
        raise IntegrityError(f"object {oid.hex()} is a {e.kind}, expected a {kind.name.lower()}")
    if len(payload) != e.stored_len:
        raise IntegrityError(f"object {oid.hex()} is truncated on disk")
    raw = codec.decode(e.codec, payload, e.raw_len)
    if object_id(ObjType(e.kind), raw) != oid:
        raise IntegrityError(f"object {oid.hex()} does not match its id: the store is damaged")
    return raw


@dataclass(frozen=True)
class SealedPack:
    """A finished pack: its name (the hex digest), the digest, and its entries."""

    name: str
    digest: bytes
    entries: dict[bytes, Entry]

    def index(self) -> bytes:
        """The pack's index file."""
        return encode_index(self.entries, self.digest)


class PackBuilder:
    """Lays out one pack: the file header, then a record header and the payload per object.

    It keeps the entries (payload offsets) and the running digest over the file header
    and record headers, which names the pack. The caller writes the bytes: ``header``
    first, then for each object the record header :meth:`add` returns and the payload
    (no copy is made here).
    """

    def __init__(self) -> None:
        self.header = pack_header()
        self.hash = blake3(self.header)
        self.pos = len(self.header)  # bytes laid out so far
        self.entries: dict[bytes, Entry] = {}

    def add(
        self, kind: int, oid: bytes, how: int, raw_len: int, payload: bytes | memoryview
    ) -> bytes:
        """Lay out one object (each id once); returns its record header."""
        header = record_header(kind, how, raw_len, len(payload), oid)
        self.entries[oid] = Entry("", self.pos + len(header), len(payload), raw_len, kind, how)
        self.hash.update(header)
        self.pos += len(header) + len(payload)
        return header

    def seal(self) -> SealedPack:
        """The pack's name, digest and entries (named after it)."""
        digest = self.hash.digest()
        name = digest.hex()
        return SealedPack(
            name, digest, {oid: e._replace(pack=name) for oid, e in self.entries.items()}
        )


def build_pack(records: Iterable[Record]) -> tuple[bytes, SealedPack]:
    """A whole pack in memory, of ``(type, id, codec, raw length, payload)`` records (each
    id once; payloads as stored): its bytes, and its name, digest and entries."""
    pack = PackBuilder()
    parts: list[bytes | memoryview] = [pack.header]
    for kind, oid, how, raw_len, payload in records:
        parts += (pack.add(kind, oid, how, raw_len, payload), payload)
    return b"".join(parts), pack.seal()


class _OpenPack(PackBuilder):
    """One pack being written to a temporary file by a :class:`PackWriter` lane."""

    def __init__(self, db: PackDB) -> None:
        super().__init__()
        self.tmp = _fsutil.temp_name(db.tmp_dir, ".pack")
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _fsutil.write_all(self.fd, [self.header])
        except BaseException:
            self.discard()
            raise
        self.flushed = self.pos  # write-back started up to here

    def write(self, parts: list[bytes | memoryview]) -> None:
        _fsutil.write_all(self.fd, parts)
        if self.pos - self.flushed >= _WRITEBACK:  # let the disk start on it now
            _fsutil.start_writeback(self.fd, self.flushed, self.pos - self.flushed)
            self.flushed = self.pos

    def discard(self) -> None:
        os.close(self.fd)
        self.tmp.unlink(missing_ok=True)


class PackWriter:
    """Appends new objects to packs; seals full packs in the background.

    Objects already stored (or already added to this writer) are skipped.
    Nothing becomes visible to other readers before the pack holding it is
    sealed; ``commit()`` seals the last pack and waits until all are durable.

    Objects go to *lanes* (``lane=0`` unless told): each lane appends to a pack of its
    own, so threads that write at the same time, each to its own lane, copy into the
    page cache in parallel. One lane must not be used by two threads at once.
    """

    def __init__(self, db: PackDB, target: int = PACK_TARGET, *, skip_stored: bool = True) -> None:
        self._db = db
        self._target = target
        self._skip_stored = skip_stored
        self._pending: set[bytes] = set()  # ids added, in open or sealed packs
        from concurrent.futures import ThreadPoolExecutor

        self._sealer = ThreadPoolExecutor(1, thread_name_prefix="modelvault-seal")
        self._sealing: list[Future[None]] = []
        self._lock = threading.Lock()  # _pending, _lanes, _sealing and the counters
        self._lanes: dict[int, _OpenPack] = {}  # lane -> its open pack
        self._defer = False  # publish_at_commit(): sealed packs wait in objects/tmp/
        self._held: list[tuple[Path, Path, SealedPack]] = []
        self.new_objects = 0
        self.new_bytes = 0  # stored payload bytes written

    def has(self, oid: bytes) -> bool:
        """True if the object is stored already or written by this writer."""
        return oid in self._pending or (self._skip_stored and self._db.has(oid))

    def publish_at_commit(self) -> None:
        """Keep every pack of this writer invisible until ``commit()``.

        Full packs are still sealed in the background (fsync'd, index written and
        fsync'd) but stay under temporary names in ``objects/tmp/``; ``commit()``
        renames them all into view and ``abort()`` removes them all. Call it before
        adding anything (an import stages a whole archive this way).
        """
        if self._lanes or self._sealing:
            raise RuntimeError("publish_at_commit() must come before the first object")
        self._defer = True

    def add(self, kind: ObjType, data: bytes | memoryview, *, probe: bool = True) -> bytes:
        """Store one object (unless it exists) and return its id."""
        oid = object_id(kind, data)
        if not self.has(oid):
            how, payload = codec.encode(data, probe=probe)
            self.add_prepared(kind, oid, int(how), len(data), payload)
        return oid

    def add_prepared(
        self, kind: int, oid: bytes, how: int, raw_len: int, payload: bytes | memoryview
    ) -> None:
        """Append an object already hashed and encoded (the caller vouches for ``oid``)."""
        self.add_prepared_many([(kind, oid, how, raw_len, payload)])

    def add_prepared_many(self, objects: Iterable[Record], lane: int = 0) -> None:
        """Append objects already hashed and encoded: ``(type, id, codec, raw length,
        payload)`` each, to ``lane``'s pack, with ``writev`` straight from the payloads
        (``_fsutil.write_all``: no copy, GIL released)."""
        parts: list[bytes | memoryview] = []
        pack = None
        for kind, oid, how, raw_len, payload in objects:
            with self._lock:
                if self.has(oid):
                    continue
                pack = self._lanes.get(lane)
                if pack is None:
                    pack = self._lanes[lane] = _OpenPack(self._db)
                self._pending.add(oid)
                self.new_objects += 1
                self.new_bytes += len(payload)
            parts += (pack.add(kind, oid, how, raw_len, payload), payload)  # (the lane's own)
            if pack.pos >= self._target or len(parts) >= _MAX_PARTS:
                pack.write(parts)
                parts = []
                if pack.pos >= self._target:
                    self._seal(lane)
        if parts and pack is not None:
            pack.write(parts)

    def _seal_all(self) -> None:
        for lane in sorted(self._lanes):
            self._seal(lane)

    def _seal(self, lane: int) -> None:
        with self._lock:
            pack = self._lanes.pop(lane, None)
        if pack is None:
            return
        fut = self._sealer.submit(self._publish, pack.fd, pack.tmp, pack.seal())
        with self._lock:
            self._sealing.append(fut)

    def _publish(self, fd: int, tmp: Path, pack: SealedPack) -> None:
        """Make a sealed pack durable and visible: the pack, then its index (each fsync'd
        and renamed into view; the folder is fsync'd once, by ``commit``)."""
        if self._defer:
            self._hold(fd, tmp, pack)
            return
        _fsutil.seal(fd, tmp)
        _fsutil.rename_into(tmp, self._db.pack_dir / f"{pack.name}.pack", sync_dir=False)
        idx_tmp = _fsutil.temp_name(self._db.tmp_dir, ".idx")
        _fsutil.write_new(idx_tmp, pack.index())
        _fsutil.rename_into(idx_tmp, self._db.pack_dir / f"{pack.name}.idx", sync_dir=False)
        self._db._add_entries(pack.name, pack.entries)

    def _hold(self, fd: int, tmp: Path, pack: SealedPack) -> None:
        """``publish_at_commit`` mode: make a pack and its index durable, still hidden."""
        idx_tmp = _fsutil.temp_name(self._db.tmp_dir, ".idx")
        try:
            _fsutil.seal(fd, tmp)
            _fsutil.write_new(idx_tmp, pack.index())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._held.append((tmp, idx_tmp, pack))

    def commit(self) -> None:
        """Seal the open packs and wait until every pack and index is durable and visible."""
        self._seal_all()
        try:
            for fut in self._sealing:
                fut.result()
            while self._held:  # publish_at_commit mode: every pack is durable, reveal them
                tmp, idx_tmp, pack = self._held[0]
                _fsutil.rename_into(tmp, self._db.pack_dir / f"{pack.name}.pack", sync_dir=False)
                _fsutil.rename_into(idx_tmp, self._db.pack_dir / f"{pack.name}.idx", sync_dir=False)
                self._db._add_entries(pack.name, pack.entries)
                del self._held[0]
            _fsutil.fsync_dir(self._db.pack_dir)
        except BaseException:
            self._drop_held()
            raise
        finally:
            self._sealing = []
            self._sealer.shutdown()

    def abort(self) -> None:
        """Drop the open packs; packs sealed already stay (unreferenced, freed by gc).

        In ``publish_at_commit`` mode no pack was visible yet: every one is removed.
        """
        with self._lock:
            lanes, self._lanes = self._lanes, {}
        for pack in lanes.values():
            pack.discard()
        for fut in self._sealing:
            with contextlib.suppress(Exception):
                fut.result()
        self._sealer.shutdown()
        self._drop_held()

    def _drop_held(self) -> None:
        for tmp, idx_tmp, _ in self._held:
            idx_tmp.unlink(missing_ok=True)
            tmp.unlink(missing_ok=True)
        self._held = []

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
