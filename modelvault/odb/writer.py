"""Writing packs: :class:`PackBuilder` lays out one pack (records, entries, the digest that
names it); :class:`PackWriter` streams a builder's records into files under
``objects/tmp/`` and seals them into view; :func:`build_pack` joins them in memory (a push
builds the packs it sends so). Re-exported by :mod:`modelvault.odb.packs`.
The file recipe (fsync, rename) is ``_fsutil``'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from blake3 import blake3

from modelvault import _fsutil
from modelvault.core import codec
from modelvault.core.hashing import ObjType, object_id
from modelvault.core.packfmt import Entry, encode_index, pack_header, record_header

logger = logging.getLogger("modelvault.store")

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from modelvault.odb.packs import PackDB

PACK_TARGET = 64 * 1024 * 1024  # a pack is sealed once it holds this many bytes
_MAX_PARTS = 512  # buffers per writev (IOV_MAX is 1024 on Linux)
_WRITEBACK = 8 * 1024 * 1024  # start writing the open pack to disk every this many bytes

Record = tuple[int, bytes, int, int, bytes | memoryview]  # (type, id, codec, raw len, payload)


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

    def __init__(
        self,
        db: PackDB,
        target: int = PACK_TARGET,
        *,
        skip_stored: bool = True,
        merge: bool = True,
    ) -> None:
        self._db = db
        self._merge = merge  # commit merges the uncovered packs' indexes once there are many
        self._target = target
        self._skip_stored = skip_stored
        self._pending: set[bytes] = set()  # ids added, in open or sealed packs
        self._sealer: ThreadPoolExecutor | None = None  # made by the first seal
        self._sealing: list[Future[None]] = []
        self._lock = threading.Lock()  # _pending, _lanes, _sealing and the counters
        self._lanes: dict[int, _OpenPack] = {}  # lane -> its open pack
        self._defer = False  # publish_at_commit(): sealed packs wait in objects/tmp/
        self._held: list[tuple[Path, Path, SealedPack]] = []
        self.new_objects = 0
        self.new_bytes = 0  # stored payload bytes written
        self._committed = False

    def has(self, oid: bytes, stored: bool | None = None) -> bool:
        """True if the object is stored already or written by this writer.

        ``stored``: whether the store holds it, where the caller has just asked
        (:meth:`stored_many`); None asks the store's index now."""
        if oid in self._pending:
            return True
        if not self._skip_stored:
            return False
        return self._db.has(oid) if stored is None else stored

    def stored_many(self, oids: Sequence[bytes]) -> list[bool]:
        """Whether the store (not counting this writer's own objects) holds each of
        ``oids``, asked at once (:meth:`PackDB.has_many`); all False for a writer that
        writes objects even if stored (``repack``)."""
        return self._db.has_many(oids) if self._skip_stored else [False] * len(oids)

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

    def add_prepared_many(
        self, objects: Iterable[Record], lane: int = 0, *, checked: bool = False
    ) -> None:
        """Append objects already hashed and encoded: ``(type, id, codec, raw length,
        payload)`` each, to ``lane``'s pack, with ``writev`` straight from the payloads
        (``_fsutil.write_all``: no copy, GIL released).

        ``checked``: the caller found each object missing from the store with
        :meth:`has` just before, so only this writer's own pending objects are checked
        again (the store's index is not searched twice for every new chunk; at worst an
        object another process stored meanwhile is stored twice, which gc tidies).
        """
        parts: list[bytes | memoryview] = []
        pack = None
        for kind, oid, how, raw_len, payload in objects:
            with self._lock:
                if oid in self._pending or (not checked and self.has(oid)):
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
            if self._sealer is None:  # the first seal (again after a commit: objects added since)
                from concurrent.futures import ThreadPoolExecutor  # (not at start-up)

                self._sealer = ThreadPoolExecutor(1, thread_name_prefix="modelvault-seal")
            sealer = self._sealer
        fut = sealer.submit(self._publish, pack.fd, pack.tmp, pack.seal())
        with self._lock:
            self._sealing.append(fut)

    def _publish(self, fd: int, tmp: Path, pack: SealedPack) -> None:
        """Make a sealed pack durable and visible: the pack, then its index (each fsync'd
        and renamed into view; the folder is fsync'd once, by ``commit``)."""
        if self._defer:
            self._hold(fd, tmp, pack)
            return
        _fsutil.seal(fd, tmp)
        idx_tmp = _fsutil.temp_name(self._db.tmp_dir, ".idx")
        try:
            _fsutil.write_new(idx_tmp, pack.index())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:
            with self._db.publishing({pack.name: pack.entries}):
                _fsutil.rename_into(tmp, self._db.pack_dir / f"{pack.name}.pack", sync_dir=False)
                _fsutil.rename_into(idx_tmp, self._db.pack_dir / f"{pack.name}.idx", sync_dir=False)
        except BaseException:  # nothing left behind in objects/tmp/ (a visible pack
            tmp.unlink(missing_ok=True)  # without its index is an orphan gc removes)
            idx_tmp.unlink(missing_ok=True)
            raise

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
        """Seal the open packs and wait until every pack and index is durable and visible.
        (Again after a commit with nothing added since: nothing to do.)"""
        if self._committed and not self._lanes and not self._sealing and not self._held:
            return
        self._seal_all()
        try:
            for fut in self._sealing:
                fut.result()
            if self._held:  # publish_at_commit mode: every pack is durable, reveal them
                with self._db.publishing({p.name: p.entries for _, _, p in self._held}):
                    while self._held:
                        tmp, idx_tmp, pack = self._held[0]
                        pack_dir = self._db.pack_dir
                        _fsutil.rename_into(tmp, pack_dir / f"{pack.name}.pack", sync_dir=False)
                        _fsutil.rename_into(idx_tmp, pack_dir / f"{pack.name}.idx", sync_dir=False)
                        del self._held[0]
            _fsutil.fsync_dir(self._db.pack_dir)
        except BaseException:
            self._drop_held()
            raise
        finally:
            self._sealing = []
            self._stop_sealer()
        self._committed = True
        if self._merge:
            try:
                self._db.maybe_merge()
            except OSError as exc:  # the objects are durable: the merge is only an index
                logger.warning("could not merge pack indexes (the next write retries): %s", exc)

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
        self._stop_sealer()
        self._drop_held()

    def _stop_sealer(self) -> None:
        if self._sealer is not None:
            self._sealer.shutdown()
            self._sealer = None

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
