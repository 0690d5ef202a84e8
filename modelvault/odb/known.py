"""Chunks the store holds already, recognised by comparing bytes instead of cutting and hashing.

A new version of a model mostly repeats the chunks of the version before, at other
offsets. Cutting and hashing those bytes again costs ~0.7 CPU-s per GiB; comparing
them with the stored copy costs ~0.1. :class:`KnownChunks` holds the chunk list of one
stored file (the same path in the newest version of the model being saved). A pass over
one segment of the new file (:class:`Match`) follows the stored file chunk by chunk: at
each cut point it compares the stored chunk after the last one it recognised. Where that
fails (an edit), the new bytes are cut and hashed as usual until a cut chunk is one of
the stored file's chunks again, which content-defined chunking brings about at the first
cut point the two files share; the pass goes on from that chunk. Nothing is read up
front: building the pass costs a dictionary of the file's chunk ids.

Why the answer is exactly what cutting and hashing would give:

- *The cut.* With more than ``MAX_SIZE`` bytes left, the FastCDC cut from offset ``s``
  reads only bytes ``s .. s+L`` (the byte after the chunk included) when it cuts at
  length ``L < MAX_SIZE``, and only ``s .. s+MAX_SIZE-1`` when it cuts at ``MAX_SIZE``
  (see ``chunking.Stitcher``). A stored chunk that is not the last of its file was cut
  the same way (fewer bytes left only narrow the positions tried, and the end of the
  file is then the last chunk's), so it qualifies when its byte after is known (the
  first byte of the next chunk of its file) or it is ``MAX_SIZE`` long, and the new file
  has more than ``MAX_SIZE`` bytes left. Equal bytes then give an equal cut.
- *The id.* The stored payload (kept raw) is compared byte for byte with the new bytes,
  so the new chunk has the stored chunk's bytes and therefore its id. Damage on disk
  cannot make two different byte strings compare equal; a damaged stored chunk simply
  does not match, and the bytes are cut and hashed as usual (``Store.verify`` reports the
  damage). Chunks stored compressed are compared by hashing the new bytes at their cuts
  (:meth:`Match._hashed`): equal ids, equal bytes.

Stored chunks whose pages are not in the page cache take no part (``mincore``): reading
them from disk would cost more than hashing the new bytes. Packs are memory-mapped and
compared with ``memcmp`` (the GIL let go: segments are compared on the save's threads at
once); a pass gives back the pack pages it touched when it ends, so the mapped memory
stays bounded whatever the file size.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import itertools
import mmap
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelvault.core.chunking import MAX_SIZE
from modelvault.core.codec import Codec
from modelvault.core.hashing import ObjType, matching_ids

if TYPE_CHECKING:
    from modelvault.odb.packs import PackDB

__all__ = [
    "KnownChunks",
    "Match",
]

_PAGE = mmap.PAGESIZE
HASH_RUN = 4 << 20  # bytes of stored-compressed chunks compared by one batch of hashes


class Match:
    """One sequential pass over a new file, or over one segment of it (it keeps state).

    :meth:`run`, given a view of the new file and a cut point in it, answers the stored
    chunks that cuts from there give, as many in a row as it can compare (a whole unedited
    stretch of the file in one call). It only ever tries the stored chunk after the last
    one it found or was told of, then the ones after that. Tell it of every chunk that was
    cut and hashed instead (:meth:`learn`): a chunk of the old file puts the pass back in
    step with it, which after an edit happens at the first cut that content-defined
    chunking shares with the old file. No table of the stored chunks is built: a file's
    chunks are looked at only as the pass reaches them.
    """

    def __init__(self, known: KnownChunks) -> None:
        self.known = known
        self._memcmp = known._libc.memcmp
        self._expect = -1  # index of the stored chunk to try at the next cut point
        self._view: memoryview | None = None  # the view last asked about ...
        self._address = 0  # ... its address ...
        self._pin: list[Any] = []  # ... kept valid by this
        self.touched: dict[_Pack, list[int]] = {}  # pack -> [lowest, highest] compared

    def expect(self, i: int) -> None:
        """Try stored chunk ``i`` at the next cut point (a guess: :meth:`run` compares it)."""
        self._expect = i

    def learn(self, oid: bytes) -> None:
        """The chunk just before the next cut point is ``oid`` (cut and hashed)."""
        i = self.known.index(oid)
        self._expect = -1 if i is None else i + 1

    def run(self, view: memoryview, at: int, limit: int) -> tuple[int, int, int] | None:
        """The stored chunks that cutting ``view`` from ``at`` (a cut point) gives, each
        starting before ``limit``: ``(i, k, end)`` for chunks ``i .. k-1`` of the stored
        file, the last ending at ``end``; or None when not even chunk ``i`` is one.

        Each chunk kept raw is compared byte for byte (``memcmp``), one stored compressed
        (a float codec) by hashing the new bytes (runs of them at once, :meth:`_hashed`);
        the byte after each, which vouches for its cut, is the first byte of the next,
        compared with it, and for the last one it is checked on its own where that chunk
        is kept raw (else the last is left to the cutter). A chunk is only tried with more
        than ``MAX_SIZE`` bytes of the view after its start (so the file goes on that far).
        """
        i, self._expect = self._expect, -1
        last_start = min(limit, len(view) - MAX_SIZE)  # a chunk must start before this
        if i < 0 or at >= last_start:  # near the end of the file: cut as usual
            return None
        if view is not self._view:
            self._pin.clear()
            self._view, self._address = view, self.known._libc.address(view, self._pin)
        known, memcmp, base = self.known, self._memcmp, self._address
        stored = known._at
        k, pos, n = i, at, 0
        pack: _Pack | None = None
        name = ""
        lo = hi = 0  # the span of ``pack`` compared in this call
        while pos < last_start:
            c = stored[k]
            if c is None:
                break
            _, n, where, offset = c
            if not where:  # stored compressed: the new bytes must hash to its id
                nbytes, chunks, whole = self._hashed(view, pos, k, last_start)
                pos, k = pos + nbytes, k + chunks
                if whole:
                    continue
                break
            if where != name:
                if pack is not None:
                    self._touch(pack, lo, hi)
                pack, name = known.pack(where), where
                if pack is None:
                    break
                lo = hi = offset
            assert pack is not None
            if not pack.holds(offset, n):
                break
            lo, hi = min(lo, offset), max(hi, offset + n)
            if memcmp(base + pos, pack.address + offset, n):
                break
            pos += n
            k += 1
        if pack is not None:
            self._touch(pack, lo, hi)
        if k == i:
            return None
        n = stored[k - 1][1]  # type: ignore[index]  # (chunk k-1 was compared: not None)
        if n != MAX_SIZE:  # its cut is vouched for by the byte after it: chunk k's first
            d = known.payload(k)
            if d is None or view[pos] != d[2].view[d[3]]:
                k, pos = k - 1, pos - n
                if k == i:
                    return None
        self._expect = k
        return i, k, pos

    def _hashed(self, view: memoryview, pos: int, k: int, last_start: int) -> tuple[int, int, bool]:
        """Compare the run of stored-compressed chunks from chunk ``k`` at ``pos``, each
        starting before ``last_start``, by hashing the new bytes at their cut points, a
        batch of up to :data:`HASH_RUN` bytes (and the chunk that crosses it) in one call
        that stops at the first chunk that differs (:func:`matching_ids`: nothing past an
        edit is hashed): ``(bytes, chunks, all)``, what matched in a row and whether every
        chunk of the batch did."""
        stored = self.known._at
        ends: list[int] = []
        expect: list[bytes] = []
        p, j = pos, k
        while p < last_start and p - pos < HASH_RUN:
            c = stored[j]
            if c is None or c[2]:
                break
            p += c[1]
            ends.append(p - pos)
            expect.append(c[0])
            j += 1
        i = matching_ids(ObjType.CHUNK, view[pos:p], ends, expect)
        if i < len(ends):
            return (ends[i - 1] if i else 0), i, False
        return p - pos, len(ends), True

    def __call__(self, view: memoryview, at: int) -> tuple[bytes, int] | None:
        """The one stored chunk that a cut at ``at`` gives, as ``(id, length)``, or None."""
        hit = self.run(view, at, at + 1)
        if hit is None:
            return None
        oid, n, _, _ = self.known._at[hit[0]]  # type: ignore[misc]
        return oid, n

    def _touch(self, pack: _Pack, lo: int, hi: int) -> None:
        span = self.touched.get(pack)
        if span is None:
            self.touched[pack] = [lo, hi]
        else:
            span[0], span[1] = min(span[0], lo), max(span[1], hi)

    def give_back(self) -> None:
        """Give back the pack pages this pass touched so far (the page cache keeps them),
        so memory stays bounded however long the pass; and let the last view go."""
        self._view = None
        self._pin.clear()
        for pack, (lo, hi) in self.touched.items():
            pack.give_back(lo, hi)
        self.touched.clear()


class _Pack:
    """One pack, memory-mapped read-only, with its address and which pages are cached."""

    def __init__(self, path: Path, libc: _Libc) -> None:
        with open(path, "rb") as f:
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.view = memoryview(self.map)
        self._pin: list[Any] = []
        self.address = libc.address(self.view, self._pin)
        self.cached = libc.resident(self.address, len(self.view))

    def holds(self, offset: int, n: int) -> bool:
        """Whether ``[offset, offset + n)`` is in the file and its first and last pages are
        cached (a damaged pack is never read past its end, which would be a SIGBUS)."""
        if offset + n > len(self.view):
            return False
        return bool(self.cached[offset // _PAGE] & self.cached[(offset + n - 1) // _PAGE] & 1)

    def give_back(self, lo: int, hi: int) -> None:
        """Unmap pages of ``[lo, hi)`` from this process (the page cache keeps them)."""
        lo -= lo % _PAGE
        with contextlib.suppress(OSError, ValueError):
            self.map.madvise(mmap.MADV_DONTNEED, lo, min(hi, len(self.map)) - lo)

    def close(self) -> None:
        self._pin.clear()
        self.view.release()
        with contextlib.suppress(BufferError):  # a view of it still in use elsewhere
            self.map.close()


_UNOPENED = object()
_Payload = tuple[bytes, int, _Pack, int]  # id, length, pack, offset of payload


class KnownChunks:
    """The stored chunks of one file, found again by their bytes in a new file."""

    def __init__(self, db: PackDB, chunks: Sequence[tuple[bytes, int]]) -> None:
        self._db = db
        self._libc = _Libc()
        self.chunks = chunks
        oids = [oid for oid, _ in chunks]
        # id -> index of its first occurrence (the last one written, counting down)
        last = range(len(oids) - 1, -1, -1)
        self._where: dict[bytes, int] = dict(zip(reversed(oids), last, strict=True))
        # where each chunk starts in the stored file, then the file's size
        self._offsets = [0, *itertools.accumulate(n for _, n in chunks)]
        entries = db.entries(oids)
        # each chunk: id, length, pack and offset of its payload when it is kept raw (compared
        # byte for byte), pack "" when it is stored compressed (compared by its id: the
        # new bytes are hashed); None where it is not stored, and after the last
        self._at: list[tuple[bytes, int, str, int] | None] = [
            (oid, n, e.pack if e.codec == Codec.RAW else "", e.offset)
            if e is not None and e.kind == ObjType.CHUNK and e.raw_len == n and n > 0
            else None
            for e, (oid, n) in zip(entries, chunks, strict=True)
        ]
        self._at.append(None)
        self._packs: dict[str, _Pack | None] = {}  # opened on first use
        self._lock = threading.Lock()  # opening packs (segments are matched in threads)

    def __len__(self) -> int:
        return len(self._at) - 1

    def index(self, oid: bytes) -> int | None:
        """The index of the first stored chunk with id ``oid``, or None."""
        return self._where.get(oid)

    def offset(self, i: int) -> int:
        """Where stored chunk ``i`` starts in the stored file."""
        return self._offsets[i]

    def chunk_at(self, offset: int) -> tuple[int, int] | None:
        """The first stored chunk that starts at or after ``offset`` of the stored file:
        ``(index, its offset)``, or None past the last."""
        i = bisect.bisect_left(self._offsets, offset)
        return None if i >= len(self._at) - 1 else (i, self._offsets[i])

    def ends(self, i: int, k: int) -> list[int]:
        """Where chunks ``i + 1 .. k`` end, counted from the start of chunk ``i``."""
        offsets = self._offsets
        first = offsets[i]
        return [end - first for end in offsets[i + 1 : k + 1]]

    def payload(self, i: int) -> _Payload | None:
        """Chunk ``i`` if it is kept raw, whole in its pack, with its pages cached."""
        at = self._at[i] if 0 <= i < len(self._at) else None
        if at is None or not at[2]:
            return None
        oid, n, name, offset = at
        pack = self.pack(name)
        if pack is None or not pack.holds(offset, n):
            return None
        return oid, n, pack, offset

    def pack(self, name: str) -> _Pack | None:
        """The pack called ``name``, mapped (on first use), or None if it cannot be."""
        pack = self._packs.get(name, _UNOPENED)
        return self._open(name) if pack is _UNOPENED else pack  # type: ignore[return-value]

    def _open(self, name: str) -> _Pack | None:
        with self._lock:
            if name not in self._packs:
                try:
                    self._packs[name] = _Pack(self._db.pack_dir / f"{name}.pack", self._libc)
                except (OSError, ValueError):
                    self._packs[name] = None
            return self._packs[name]

    @contextlib.contextmanager
    def matching(self) -> Iterator[Match]:
        """A :class:`Match` for one pass; the pack pages it touched are given back when
        the pass ends."""
        match = Match(self)
        try:
            yield match
        finally:
            match.give_back()

    def close(self) -> None:
        """Let the pack mappings go."""
        with self._lock:
            for pack in self._packs.values():
                if pack is not None:
                    pack.close()
            self._packs = {}


class _Libc:
    """``memcmp`` and ``mincore`` through ctypes. ``memcmp`` compares a GiB in 0.06-0.1 s,
    where ``memoryview ==`` takes 2 s.

    Addresses come from the buffer protocol (``PyObject_GetBuffer``, which accepts
    read-only buffers such as a read-only memory map), not from numpy: importing numpy
    would cost a save ~0.15 s.
    """

    def __init__(self) -> None:
        self._fns = _libc_functions()
        self.memcmp: Callable[[int, int, int], int] = (  # nonzero where bytes differ
            self._fns[0] if self._fns is not None else _compare_copies
        )

    def address(self, view: memoryview, pin: list[Any]) -> int:
        """The address of ``view``'s first byte; valid while ``pin`` holds what is added to
        it (the exported buffer, released when it is dropped)."""
        held = _Exported(view)
        pin.append(held)
        return held.address

    def resident(self, address: int, length: int) -> bytes:
        """One byte per page, bit 0 set where the page is in the page cache (all set
        where that cannot be asked)."""
        import ctypes

        pages = -(-length // _PAGE)
        if self._fns is None or not length:
            return b"\x01" * pages
        vec = ctypes.create_string_buffer(pages)
        if self._fns[1](address, length, vec) != 0:
            return b"\x01" * pages
        return vec.raw


def _compare_copies(a: int, b: int, n: int) -> int:
    """``memcmp`` where no C library can be loaded: compare copies (nonzero if differ)."""
    import ctypes

    return int(ctypes.string_at(a, n) != ctypes.string_at(b, n))


@functools.cache
def _libc_functions() -> tuple[Any, Any] | None:
    """``(memcmp, mincore)`` of the C library, or None where there is none to load.

    Loaded as a ``CDLL``: the GIL goes for the call, so the segments of a new version,
    compared on the save's threads, compare chunks at the same time (one ``memcmp`` is a
    chunk, ~15 µs). A 90%-shared version of the 1 GiB fp32 benchmark model, whose chunks are
    kept raw: 0.407 -> 0.335 s against comparing on one thread with the GIL kept (a
    ``PyDLL``), which was as fast as two threads taking turns with it (RESULTS.md,
    session 19).
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)  # this process's symbols: the C library's among them
        memcmp, mincore = libc.memcmp, libc.mincore
    except (OSError, AttributeError, TypeError):
        try:
            import ctypes.util

            libc = ctypes.CDLL(ctypes.util.find_library("c"))
            memcmp, mincore = libc.memcmp, libc.mincore
        except (OSError, AttributeError, TypeError):
            return None
    memcmp.restype = ctypes.c_int
    memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    mincore.restype = ctypes.c_int
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    return memcmp, mincore


class _Exported:
    """A buffer exported through ``PyObject_GetBuffer`` (its address), released when this
    object goes. The exporter (a memory map, say) cannot be closed or resized meanwhile."""

    def __init__(self, obj: memoryview) -> None:
        import ctypes

        get, self._release, struct = _buffer_api()
        self._buf = struct()
        if get(obj, ctypes.byref(self._buf), 0) != 0:  # 0: PyBUF_SIMPLE, read-only is fine
            raise ValueError("cannot take the address of this buffer")
        self.address: int = self._buf.buf or 0

    def __del__(self) -> None:
        if getattr(self, "address", None) is not None:
            self._release(self._buf)
            del self.address


@functools.cache
def _buffer_api() -> tuple[Any, Any, Any]:
    """``PyObject_GetBuffer``, ``PyBuffer_Release`` and the ``Py_buffer`` struct (the
    CPython C API, stable since 3.11)."""
    import ctypes

    class PyBuffer(ctypes.Structure):
        _fields_ = [
            ("buf", ctypes.c_void_p),
            ("obj", ctypes.c_void_p),
            ("len", ctypes.c_ssize_t),
            ("itemsize", ctypes.c_ssize_t),
            ("readonly", ctypes.c_int),
            ("ndim", ctypes.c_int),
            ("format", ctypes.c_char_p),
            ("shape", ctypes.c_void_p),
            ("strides", ctypes.c_void_p),
            ("suboffsets", ctypes.c_void_p),
            ("internal", ctypes.c_void_p),
        ]

    get, release = ctypes.pythonapi.PyObject_GetBuffer, ctypes.pythonapi.PyBuffer_Release
    get.argtypes = [ctypes.py_object, ctypes.POINTER(PyBuffer), ctypes.c_int]
    get.restype = ctypes.c_int
    release.argtypes = [ctypes.POINTER(PyBuffer)]
    release.restype = None
    return get, release, PyBuffer
