"""Pack records, one at a time: checking a stored payload against its id, walking a pack's
record headers, grouping reads into spans, and the pack-file checks and salvage that
verify and repair use (:class:`PackChecks`, a part of :class:`~modelvault.odb.PackDB`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

from blake3 import blake3

from modelvault import _fsutil
from modelvault.core import codec
from modelvault.core.chunking import Source
from modelvault.core.hashing import ObjType, matching_ids, object_id
from modelvault.core.packfmt import (
    FILE_HEADER,
    RECORD_HEADER,
    Entry,
    PackFormatError,
    decode_index,
)
from modelvault.errors import IntegrityError

__all__ = [
    "CHECK_GROUP",
    "CHECK_RUN",
    "CheckBuffers",
    "PackChecks",
    "PackReads",
    "check_payloads",
    "verify_all",
    "verify_payload",
]


class PackChecks:
    """Checks of whole pack files, and what verify salvages from a damaged one. Mixed into
    :class:`~modelvault.odb.PackDB`, whose index supplies the methods declared here."""

    pack_dir: Path

    def entries_of(self, pack: str) -> dict[bytes, Entry]:
        raise NotImplementedError

    def ids_of(self, pack: str) -> list[bytes]:
        raise NotImplementedError

    def _find(self, oid: bytes) -> Entry | None:
        raise NotImplementedError

    removing: Callable[[], contextlib.AbstractContextManager[None]]

    def verify_pack(self, name: str, scratch: bytearray | None = None) -> list[bytes]:
        """Re-hash every object of one pack; return the ids that do not match.
        ``scratch``: a buffer for :func:`check_payloads` that the caller reuses."""
        bad: list[bytes] = []
        try:
            entries = self.entries_of(name)
        except IntegrityError:
            return self.ids_of(name)
        try:
            f = open(self.pack_dir / f"{name}.pack", "rb")  # noqa: SIM115
        except FileNotFoundError:
            return list(entries)
        items = list(entries.items())
        if scratch is None:  # reused by every group: no fresh pages per chunk
            scratch = bytearray(CHECK_RUN)
        with f:
            for k in range(0, len(items), CHECK_GROUP):
                group = [
                    (oid, e, os.pread(f.fileno(), e.stored_len, e.offset))
                    for oid, e in items[k : k + CHECK_GROUP]
                ]
                bad += [group[i][0] for i in check_payloads(group, None, scratch)]
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
            other = self._find(oid)
            if sound and (other is None or other.pack == name):
                yield e.kind, oid, e.codec, e.raw_len, payload

    def set_aside(self, name: str, folder: Path) -> None:
        """Move a pack and its index out of view into ``folder`` (index first, so no
        reader finds an index without its pack); kept for inspection, freed by gc."""
        folder.mkdir(exist_ok=True)
        with self.removing():
            for ext in (".idx", ".pack"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.pack_dir / f"{name}{ext}", folder / f"{name}{ext}")
        _fsutil.fsync_dir(self.pack_dir)
        _fsutil.fsync_dir(folder)


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


@overload
def verify_payload(oid: bytes, e: Entry, payload: bytes, kind: ObjType | None) -> bytes: ...
@overload
def verify_payload(
    oid: bytes,
    e: Entry,
    payload: bytes | memoryview,
    kind: ObjType | None,
    into: memoryview | None = None,
) -> bytes | memoryview: ...
def verify_payload(
    oid: bytes,
    e: Entry,
    payload: bytes | memoryview,
    kind: ObjType | None,
    into: memoryview | None = None,
) -> bytes | memoryview:
    """Decode a stored payload and check it against its id; returns the raw bytes (a raw
    payload given as a memoryview comes back as that view, uncopied; a float payload is
    decoded into ``into`` where given: see :func:`codec.decode`)."""
    if kind is not None and e.kind != kind:
        raise IntegrityError(f"object {oid.hex()} is a {e.kind}, expected a {kind.name.lower()}")
    if len(payload) != e.stored_len:
        raise IntegrityError(f"object {oid.hex()} is truncated on disk")
    raw = codec.decode(e.codec, payload, e.raw_len, into)
    if object_id(ObjType(e.kind), raw) != oid:
        raise IntegrityError(f"object {oid.hex()} does not match its id: the store is damaged")
    return raw


def _check_run(
    oids: Sequence[bytes],
    entries: Sequence[Entry],
    payloads: Sequence[bytes | memoryview],
    kind: ObjType | None,
    into: memoryview,
) -> list[int]:
    """:func:`verify_payload` of Huffman-planes payloads of objects of one kind, decoded
    into ``into`` end to end in one compiled call and hashed in another (a reader of many
    chunks takes the GIL back a few times, not twice a chunk); returns where each object
    ends in ``into``.

    Raises:
        IntegrityError: an object is of another kind, truncated, not a valid payload, or
            does not hash to its id (the first of them is named).
    """
    first = entries[0]
    if kind is not None and first.kind != kind:
        name = oids[0].hex()
        raise IntegrityError(f"object {name} is a {first.kind}, expected a {kind.name.lower()}")
    ends: list[int] = []
    end = 0
    for oid, e, payload in zip(oids, entries, payloads, strict=True):
        if len(payload) != e.stored_len:
            raise IntegrityError(f"object {oid.hex()} is truncated on disk")
        end += e.raw_len
        ends.append(end)
    room = into[:end]
    bad = codec.decode_float_batch(payloads, [e.raw_len for e in entries], room)
    if bad is not None:
        raise IntegrityError(f"invalid float payload (Huffman planes): {bad[1]}")
    good = matching_ids(ObjType(first.kind), room, ends, oids)
    if good < len(oids):
        raise IntegrityError(
            f"object {oids[good].hex()} does not match its id: the store is damaged"
        )
    return ends


def _decode_run(
    oids: list[bytes],
    entries: list[Entry],
    payloads: dict[int, memoryview],
    kind: ObjType | None,
    into: memoryview | None,
    at: int,
    run: list[int],
    out: list[bytes | memoryview],
) -> None:
    """:func:`_check_run` of the objects ``run`` (indexes), their raw bytes going into
    ``into`` from ``at``: sets ``out[i]`` to each object's view of ``into``. Where the run
    fails, its objects are read again one by one, so the error is the one
    :func:`verify_payload` gives for the first bad object, as without runs."""
    assert into is not None
    try:
        ends = _check_run(
            [oids[i] for i in run],
            [entries[i] for i in run],
            [payloads[i] for i in run],
            kind,
            into[at:],
        )
    except (IntegrityError, ValueError):
        for i in run:
            verify_payload(oids[i], entries[i], payloads[i], kind)
        raise
    start = 0
    for i, stop in zip(run, ends, strict=True):
        out[i] = into[at + start : at + stop]
        start = stop


CHECK_RUN = 8 * 1024 * 1024  # raw bytes check_payloads decodes at once into its buffer
CHECK_GROUP = 64  # objects read, then checked at once (verify_pack, a push)


class CheckBuffers(threading.local):
    """A :data:`CHECK_RUN` buffer for :func:`check_payloads` per thread, made on its first
    use there and reused by every later check of that thread (one of these per pool of
    checking threads: the buffers go with it)."""

    def __init__(self) -> None:
        self.buffer = bytearray(CHECK_RUN)


def check_payloads(
    items: Sequence[tuple[bytes, Entry, bytes | memoryview]],
    kind: ObjType | None = None,
    scratch: bytearray | None = None,
) -> list[int]:
    """The indexes of the ``(id, entry, stored payload)`` items that :func:`verify_payload`
    refuses, without keeping any raw bytes: for a pull, a push or a verify, which only
    need to know that every object is sound.

    Huffman-planes payloads are decoded a run of up to :data:`CHECK_RUN` raw bytes at a
    time into one buffer (``scratch``, if it is large enough, else one of this call) and
    hashed there (:func:`_check_run`), not each into fresh memory with the GIL taken back
    twice; the rest one by one. Where a run fails, its objects are checked one by one to
    name each bad one (damage is rare)."""
    bad: list[int] = []
    run: list[int] = []
    size = 0
    buf = scratch

    def flush() -> None:
        nonlocal buf, size
        if not run:
            return
        if buf is None or len(buf) < size:
            buf = bytearray(size)
        try:
            _check_run(
                [items[i][0] for i in run],
                [items[i][1] for i in run],
                [items[i][2] for i in run],
                kind,
                memoryview(buf),
            )
        except (IntegrityError, ValueError):
            for i in run:
                try:
                    verify_payload(*items[i], kind)
                except IntegrityError:
                    bad.append(i)
        run.clear()
        size = 0

    for i, (oid, e, payload) in enumerate(items):
        if (
            e.codec == codec.Codec.FLOAT
            and 0 <= e.raw_len <= CHECK_RUN
            and codec.decodes_in_batch(payload)
        ):
            if run and (size + e.raw_len > CHECK_RUN or items[run[0]][1].kind != e.kind):
                flush()
            run.append(i)
            size += e.raw_len
            continue
        try:
            verify_payload(oid, e, payload, kind)
        except IntegrityError:
            bad.append(i)
    flush()
    return sorted(bad)


def verify_all(
    items: Sequence[tuple[bytes, Entry, bytes | memoryview]],
    kind: ObjType | None = None,
    scratch: bytearray | None = None,
) -> None:
    """:func:`check_payloads`, raising :func:`verify_payload`'s error for the first
    object that is not sound."""
    for i in check_payloads(items, kind, scratch):
        verify_payload(*items[i], kind)  # raises, naming what is wrong
        raise IntegrityError(f"object {items[i][0].hex()} does not match its id")


class PackReads:
    """Reading objects' payloads. Mixed into :class:`~modelvault.odb.PackDB`, whose
    index supplies the methods declared here."""

    pack_dir: Path
    _damaged: dict[str, str]

    def entry(self, oid: bytes) -> Entry | None:
        raise NotImplementedError

    def entries(self, oids: Sequence[bytes]) -> list[Entry | None]:
        raise NotImplementedError

    def refresh(self, *, full: bool = False) -> None:
        raise NotImplementedError

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
                self.refresh(full=True)  # the pack was repacked by gc meanwhile
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

    def read_many(
        self, oids: list[bytes], kind: ObjType | None = None, into: memoryview | None = None
    ) -> list[bytes | memoryview]:
        """The raw bytes of several objects, in order, each checked against its id.

        Payloads lying next to each other in a pack (a file's chunks usually do) are
        memory-mapped together (hashed and handed on without a copy; the mapping goes
        when the last view of it does), and each pack is opened once per call. Falls back
        to :meth:`read` one by one if a pack disappears meanwhile (gc elsewhere).

        ``into``, if given, has room for the objects' raw bytes end to end (their sizes
        summed): where a payload is decoded in place (the float codec's Huffman planes,
        compiled), object ``i`` is written at the sum of the sizes before it and returned
        as a view of ``into``. A reader that reuses such buffers (``checkout.write_file``)
        spares the kernel from handing out and zeroing fresh pages for every batch. An
        object that would not fit (its index entry damaged) is decoded into fresh memory,
        and its check reports the damage. Consecutive Huffman-planes payloads going into
        ``into`` are decoded in one compiled call and hashed in another
        (:func:`_decode_run`): readers beside a writer then take the GIL a few times
        a batch, not twice a chunk, and wait for it far less.

        Raises:
            IntegrityError: an object is missing, or stored bytes do not hash to their id.
        """
        found = self.entries(oids)  # at once; a miss looks again for new packs
        maybe = [
            e if e is not None else self.entry(oid) for oid, e in zip(oids, found, strict=True)
        ]
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
        if into is not None and (into.format != "B" or into.ndim != 1):
            into = into.cast("B")
        out: list[bytes | memoryview] = []
        run: list[int] = []  # float payloads to decode into ``into`` in one call
        at = run_at = 0
        for i, (oid, e) in enumerate(zip(oids, entries, strict=True)):
            end = at + e.raw_len
            if (
                into is not None
                and end <= len(into)
                and e.codec == codec.Codec.FLOAT
                and codec.decodes_in_batch(payloads[i])
            ):
                if run and entries[run[0]].kind != e.kind:  # a run holds one kind
                    _decode_run(oids, entries, payloads, kind, into, run_at, run, out)
                    run = []
                if not run:
                    run_at = at
                run.append(i)
                out.append(b"")  # set by _decode_run
            else:
                if run:
                    _decode_run(oids, entries, payloads, kind, into, run_at, run, out)
                    run = []
                room = into[at:end] if into is not None and end <= len(into) else None
                out.append(verify_payload(oid, e, payloads[i], kind, room))
            at = end
        if run:
            _decode_run(oids, entries, payloads, kind, into, run_at, run, out)
        return out
