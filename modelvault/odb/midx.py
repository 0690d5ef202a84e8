"""Multi-pack index files: ``objects/packs/multi-<hex>.midx`` (docs/format.md section 4.3).

One file maps every object of many packs to its pack, offset, lengths, type and codec:
the ids sorted, a 256-entry fan-out table over their first byte, a column of fixed-size
entries, a pack list and a trailing BLAKE3. It is memory-mapped, so a lookup is a binary
search over pages the kernel caches: a process's RSS and start-up do not grow with the
number of objects (:class:`MultiIndex`). The per-pack ``.idx`` files stay the source of
truth: a multi-pack index is rebuilt from them (and from other sound multi-pack indexes)
by :func:`write_midx` (in memory up to 65,536 ids; else a run of fan-out buckets at a
time), under a temporary name, fsync'd, then renamed into view; a kill -9 mid-way leaves
the old indexes in force.

A multi-pack index is *in force* only while every pack it lists has its ``.idx`` in the
pack folder (gc deleting one of them makes it stale: readers then ignore it, read those
packs' own indexes, and the next merge or gc removes it).

numpy is imported only by the batched lookup and the merge (``mv list``, ``get`` and ``du``
never load it).
"""

from __future__ import annotations

import array
import contextlib
import functools
import itertools
import math
import mmap
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blake3 import blake3

from modelvault import _fsutil
from modelvault.core.packfmt import (
    FILE_HEADER,
    FILTER_BLOCK,
    FILTER_K,
    HASH_LEN,
    IDX_COUNT,
    IDX_ENTRY,
    MIDX_ENTRY,
    MIDX_FANOUT,
    MIDX_HEADER,
    MIDX_MAGIC,
    MIDX_VERSION,
    MIDX_VERSIONS,
    Entry,
    MidxLayout,
    PackFormatError,
    check_index,
    midx_layout,
)
from modelvault.errors import IntegrityError

if TYPE_CHECKING:
    import numpy as np

try:
    from modelvault import _cdc
except ImportError:  # built without a C compiler: the filter is tested in Python
    _cdc = None  # type: ignore[assignment]

__all__ = [
    "GROUP",
    "MIDX_PREFIX",
    "MIDX_SUFFIX",
    "MultiIndex",
    "id_list",
    "idx_array",
    "is_midx_name",
    "publish_midx",
    "write_midx",
]

MIDX_PREFIX = "multi-"
MIDX_SUFFIX = ".midx"
_HASH_BLOCK = 4 * 1024 * 1024
_GIVE_BACK = 256  # single lookups between two give_back(): each maps ~30 KiB (fault-around)
_INTERPOLATE = 64  # buckets larger than this are narrowed by a guess before the search
_READ_AHEAD = 64  # a screen of this many ids at once reads the whole filter ahead
GROUP = 1 << 20  # a merge reads at most about this many .idx entries into memory at once
_MERGE_RUN = 1 << 16  # a merge sorts the entries of at most this many ids at once (or a bucket)
_SMALL_MERGE = 1 << 16  # a merge of at most this many ids is done without numpy, in memory


def id_list(ids: np.ndarray) -> list[bytes]:
    """An ``S32`` array as a list of 32-byte ids (``tolist`` would drop trailing zeros)."""
    raw = ids.tobytes()
    return [raw[i : i + HASH_LEN] for i in range(0, len(raw), HASH_LEN)]


def filter_bits(ids: np.ndarray, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """The filter block of each of ``ids`` (an ``S32`` array) among ``blocks``, and its
    :data:`FILTER_K` bit positions in that block (docs/format.md section 5.1)."""
    import numpy as np

    fields = np.ascontiguousarray(ids).view(
        np.dtype([("top", ">u4"), ("skip", "V4"), ("bits", "<u8"), ("rest", "V16")])
    )
    top = fields["top"].astype(np.uint64)
    block = ((top * np.uint64(blocks)) >> np.uint64(32)).astype(np.intp)
    shifts = np.arange(FILTER_K, dtype=np.uint64) * np.uint64(9)
    bits = (fields["bits"].astype(np.uint64)[:, None] >> shifts) & np.uint64(511)
    return block, bits


def is_midx_name(name: str) -> bool:
    return name.startswith(MIDX_PREFIX) and name.endswith(MIDX_SUFFIX)


def _dtypes() -> tuple[Any, Any]:
    """numpy dtypes of a ``.idx`` entry (52 bytes) and a ``.midx`` entry (24 bytes)."""
    import numpy as np

    idx = np.dtype(
        [
            ("id", "S32"),
            ("kind", "u1"),
            ("codec", "u1"),
            ("pad", "<u2"),
            ("offset", "<u8"),
            ("stored", "<u4"),
            ("raw", "<u4"),
        ]
    )
    midx = np.dtype(
        [
            ("pack", "<u4"),
            ("kind", "u1"),
            ("codec", "u1"),
            ("pad", "<u2"),
            ("offset", "<u8"),
            ("stored", "<u4"),
            ("raw", "<u4"),
        ]
    )
    assert idx.itemsize == 52 and midx.itemsize == MIDX_ENTRY.size
    return idx, midx


def idx_array(pack: str, data: bytes) -> np.ndarray:
    """The entries of one ``.idx`` file as a numpy structured array (sorted by id).

    Raises:
        PackFormatError: the file is damaged (magic, length or checksum).
    """
    return _idx_entries(data, check_index(pack, data))


def _idx_entries(data: bytes, count: int) -> np.ndarray:
    """The ``count`` entries of a ``.idx`` file already checked (:func:`check_index`)."""
    import numpy as np

    return np.frombuffer(data, _dtypes()[0], count, offset=FILE_HEADER.size + IDX_COUNT.size)


class MultiIndex:
    """One memory-mapped multi-pack index. Lookups are thread-safe (read-only).

    Opening checks the header, the file's length and the fan-out table (not the
    checksum, which would read every byte: :meth:`checksum_ok` does, for verify and
    before a merge copies the file's entries).

    Raises:
        PackFormatError: the file does not follow the layout.
        OSError: it cannot be read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        self._lookups = 0  # since the pages were last given back
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            size, self.inode = st.st_size, st.st_ino
            if size < MIDX_HEADER.size:
                raise PackFormatError(f"{self.name} is truncated")
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._check(size)
        except BaseException:
            self.close()
            raise

    def _check(self, size: int) -> None:
        mm = self._map
        magic, version, npacks, count = MIDX_HEADER.unpack_from(mm, 0)
        if magic != MIDX_MAGIC or version not in MIDX_VERSIONS:
            raise PackFormatError(f"{self.name}: bad magic or version {version}")
        self.version = int(version)
        self.layout = lay = midx_layout(npacks, count, version)
        if size != lay.size:
            raise PackFormatError(f"{self.name} has {size} bytes, its header says {lay.size}")
        self.count = int(count)
        self.npacks = int(npacks)
        self._names: dict[int, str] = {}  # pack number -> name, as lookups resolve them
        with contextlib.suppress(OSError, ValueError, AttributeError):
            # lookups touch scattered pages: no readahead around each (it would read
            # and map ~30x the bytes a lookup needs: time and RSS)
            mm.madvise(mmap.MADV_RANDOM)
        fan = MIDX_FANOUT.unpack_from(mm, lay.fanout)
        if any(b > a for a, b in zip(fan[1:], fan, strict=False)) or fan[255] != count:
            raise PackFormatError(f"{self.name}: its fan-out table is not sound")
        self._fan: tuple[int, ...] = (0, *fan)  # bucket b spans ids [_fan[b], _fan[b + 1])
        self._fan_q = array.array("q", self._fan).tobytes()  # (for _cdc.find)
        self._ids = lay.ids
        self._entries = lay.entries
        self._filter, self._blocks = lay.filter, lay.blocks  # (0 blocks: version 1)
        self._read_ahead = False  # the filter was asked into the page cache

    def __repr__(self) -> str:
        return f"MultiIndex({self.name}, {self.npacks} packs, {self.count} ids)"

    # -- the pack list (read only where needed: 16,000 names cost ~10 ms and MiBs) ------
    @functools.cached_property
    def packs(self) -> list[str]:
        """Every covered pack's name, in pack-number order (ascending)."""
        at = self.layout.packs
        raw = self._map[at : at + HASH_LEN * self.npacks].hex()
        step = 2 * HASH_LEN
        return [raw[i : i + step] for i in range(0, len(raw), step)]

    @functools.cached_property
    def pack_set(self) -> frozenset[str]:
        return frozenset(self.packs)

    def pack_name(self, k: int) -> str:
        """The name of pack number ``k`` (read from the mapping on first use)."""
        name = self._names.get(k)
        if name is None:
            if not 0 <= k < self.npacks:
                raise self.damaged(f"an entry names pack {k} of {self.npacks}")
            at = self.layout.packs + HASH_LEN * k
            name = self._names[k] = self._map[at : at + HASH_LEN].hex()
        return name

    def pack_number(self, name: str) -> int:
        """The number of pack ``name``, or -1 if this index does not cover it (binary
        search in the sorted pack list: no list of names is made)."""
        try:
            digest = bytes.fromhex(name)
        except ValueError:
            return -1
        mm, base = self._map, self.layout.packs
        lo, hi = 0, self.npacks
        while lo < hi:
            mid = (lo + hi) >> 1
            at = base + HASH_LEN * mid
            if mm[at : at + HASH_LEN] < digest:
                lo = mid + 1
            else:
                hi = mid
        if lo < self.npacks and mm[base + HASH_LEN * lo : base + HASH_LEN * (lo + 1)] == digest:
            return lo
        return -1

    def covers(self, name: str) -> bool:
        return self.pack_number(name) >= 0

    # -- lookups ---------------------------------------------------------------------
    def position(self, oid: bytes) -> int:
        """The position of ``oid`` among the ids, or -1.

        Ids are BLAKE3 digests, uniform: the position is guessed from the id's bytes 1-8
        within its fan-out bucket, guessed again from the id read there (as many ids lie
        between as the gap in key predicts, give or take its square root), and the ids
        of a window of about four standard deviations around that guess are read at once
        (its ends tell whether the id can be inside; if not, the rest of the bucket is
        searched); a binary search in it finishes. So a lookup touches ~2 pages of the
        mapping where a binary search over the bucket would touch ~log2(pages) + 1: on a
        cold page cache each is a disk read. Every :data:`_GIVE_BACK` lookups the pages
        are given back (the page cache keeps them), so the RSS of a process making many
        lookups stays bounded. (``pread`` would map nothing, but costs ~4x the time.)
        """
        self._lookups += 1
        if self._lookups >= _GIVE_BACK:
            self.give_back()
        b = oid[0]
        lo, hi = self._fan[b], self._fan[b + 1]
        n = hi - lo
        if n > _INTERPOLATE:
            mm, base = self._map, self._ids
            q = int.from_bytes(oid[1:9], "big")
            guess = lo + ((n * q) >> 64)
            probe = mm[base + HASH_LEN * guess : base + HASH_LEN * (guess + 1)]
            if probe == oid:
                return guess
            d = ((q - int.from_bytes(probe[1:9], "big")) * n) >> 64
            guess = min(max(guess + d, lo), hi - 1)
            w = 4 * math.isqrt(abs(d)) + 8
            s, e = max(lo, guess - w), min(hi, guess + w + 1)
            block = mm[base + HASH_LEN * s : base + HASH_LEN * e]
            if s > lo and block[:HASH_LEN] > oid:
                hi = s
            elif e < hi and block[-HASH_LEN:] < oid:
                lo = e
            else:
                return _search(block, oid, s)
        return self._search_file(oid, lo, hi)

    def positions_of(self, ids: bytes) -> Sequence[int]:
        """:meth:`position` of each 32-byte id of ``ids`` (joined): in one compiled call
        (a binary search in each id's bucket) where ``modelvault._cdc`` was built, else
        one at a time. The pages read are given back afterwards, as for lookups."""
        n = len(ids) // HASH_LEN
        if _cdc is None:
            pos = self.position
            return [pos(ids[i : i + HASH_LEN]) for i in range(0, len(ids), HASH_LEN)]
        out = memoryview(_cdc.find(self._map, self._ids, self._fan_q, ids)).cast("q")
        self._lookups += n
        if self._lookups >= _GIVE_BACK:
            self.give_back()
        return out

    def might_have(self, oid: bytes) -> bool:
        """False if ``oid`` is surely not in this index (its filter, version 2: one
        64-byte block read; ~1% of absent ids pass); True for a version-1 index."""
        if not self._blocks:
            return True
        if _cdc is not None:
            return _cdc.screen(self._map, self._filter, self._blocks, oid) != b"\0"
        at = self._filter + FILTER_BLOCK * ((int.from_bytes(oid[:4], "big") * self._blocks) >> 32)
        block = int.from_bytes(self._map[at : at + FILTER_BLOCK], "little")
        v = int.from_bytes(oid[8:16], "little")
        mask = 0
        for _ in range(FILTER_K):
            mask |= 1 << (v & 511)
            v >>= 9
        return block & mask == mask

    def screen_ids(self, ids: bytes) -> bytes:
        """:meth:`might_have` of each 32-byte id of ``ids`` (joined), as one byte each
        (1: may hold it): in one compiled call where ``modelvault._cdc`` was built."""
        if not self._blocks:
            return b"\1" * (len(ids) // HASH_LEN)
        self._lookups += len(ids) // (8 * HASH_LEN)  # (pages mapped: given back as lookups')
        if not self._read_ahead and len(ids) >= _READ_AHEAD * HASH_LEN:
            self._read_filter_ahead()
        if _cdc is not None:
            return _cdc.screen(self._map, self._filter, self._blocks, ids)
        have = self.might_have
        return bytes(have(ids[i : i + HASH_LEN]) for i in range(0, len(ids), HASH_LEN))

    def _read_filter_ahead(self) -> None:
        """Ask the kernel to read the whole filter into the page cache (once): a save
        screening many new chunks hits about one filter page each, which on a cold page
        cache would each be a disk read (the mapping reads no further ahead: random);
        the filter is 1.25 bytes an id, read at the disk's sequential speed."""
        self._read_ahead = True
        start = self._filter - self._filter % mmap.PAGESIZE
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self._map.madvise(
                mmap.MADV_WILLNEED, start, self._filter + FILTER_BLOCK * self._blocks - start
            )

    def _search_file(self, oid: bytes, lo: int, hi: int) -> int:
        """Binary search of ids ``[lo, hi)``."""
        mm, base = self._map, self._ids
        end = hi
        while lo < hi:
            mid = (lo + hi) >> 1
            if mm[base + HASH_LEN * mid : base + HASH_LEN * (mid + 1)] < oid:
                lo = mid + 1
            else:
                hi = mid
        if lo < end and mm[base + HASH_LEN * lo : base + HASH_LEN * (lo + 1)] == oid:
            return lo
        return -1

    def entry_at(self, i: int) -> Entry:
        pack, kind, how, offset, stored, raw = MIDX_ENTRY.unpack_from(
            self._map, self._entries + MIDX_ENTRY.size * i
        )
        return Entry(self.pack_name(pack), offset, stored, raw, kind, how)

    def entries_at(self, positions: Sequence[int]) -> list[Entry | None]:
        """:meth:`entry_at` of each of ``positions``, None where it is -1 (as
        :meth:`positions_of` answers an absent id), in one loop with no method call or
        keyword arguments per entry: a new version's lookup of its parent's chunks
        (``odb.known``) asks for thousands at once."""
        unpack, size, base, mm = MIDX_ENTRY.unpack_from, MIDX_ENTRY.size, self._entries, self._map
        names, name, make = self._names, self.pack_name, tuple.__new__
        out: list[Entry | None] = []
        add = out.append
        for i in positions:
            if i < 0:
                add(None)
                continue
            pack, kind, how, offset, stored, raw = unpack(mm, base + size * i)
            add(make(Entry, (names.get(pack) or name(pack), offset, stored, raw, kind, how)))
        return out

    def give_back(self) -> None:
        """Unmap the pages lookups touched from this process (the page cache keeps
        them; the next lookups fault them in again)."""
        self._lookups = 0
        with contextlib.suppress(OSError, ValueError):
            self._map.madvise(mmap.MADV_DONTNEED, 0, len(self._map))

    def damaged(self, why: str) -> IntegrityError:
        return IntegrityError(
            f"the multi-pack index objects/packs/{self.name} is damaged ({why}): "
            "`mv verify` rebuilds it from the packs' own indexes"
        )

    def lookup(self, oid: bytes) -> Entry | None:
        i = self.position(oid)
        return None if i < 0 else self.entry_at(i)

    def ids(self) -> np.ndarray:
        """The sorted id column (an ``S32`` view of the mapping, no copy)."""
        import numpy as np

        return np.frombuffer(self._map, "S32", self.count, offset=self._ids)

    def entries(self) -> np.ndarray:
        """The entry column (a structured view of the mapping, no copy)."""
        import numpy as np

        return np.frombuffer(self._map, _dtypes()[1], self.count, offset=self._entries)

    def positions(self, needles: np.ndarray) -> np.ndarray:
        """Positions of ``needles`` (an ``S32`` array) among the ids, -1 where absent."""
        import numpy as np

        ids = self.ids()
        if not self.count:
            return np.full(len(needles), -1, np.int64)
        pos = ids.searchsorted(needles)
        clipped = np.minimum(pos, self.count - 1)
        found = ids[clipped] == needles
        return np.where(found, clipped, -1)

    def bounds(self) -> Sequence[int]:
        """The fan-out as 257 bucket boundaries."""
        return self._fan

    # -- checks ----------------------------------------------------------------------
    def checksum_ok(self) -> bool:
        """True if the trailing BLAKE3 covers the file (reads every byte)."""
        mm, end = self._map, self.layout.checksum
        h = blake3()
        view = memoryview(mm)
        try:
            for at in range(0, end, _HASH_BLOCK):
                h.update(view[at : min(end, at + _HASH_BLOCK)])
            return h.digest() == mm[end : end + HASH_LEN] and self.name == _midx_name(
                mm[end : end + HASH_LEN]
            )
        finally:
            view.release()

    def filter_ok(self) -> bool:
        """True if the filter lets every id of the index through (reads the id column
        and the filter; a version-1 index has none). A checksum that matches cannot tell
        a filter written wrong: one that left an id out would have saves store it again."""
        for at in range(0, self.count if self._blocks else 0, GROUP):
            end = min(self.count, at + GROUP)
            ids = self._map[self._ids + HASH_LEN * at : self._ids + HASH_LEN * end]
            if b"\0" in self.screen_ids(ids):
                return False
        return True

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # a numpy view of it is still in use
            self._map.close()


def _search(block: bytes, oid: bytes, first: int) -> int:
    """``first`` + the index of ``oid`` among the ids of ``block`` (sorted), or -1."""
    lo, hi = 0, len(block) // HASH_LEN
    while lo < hi:
        mid = (lo + hi) >> 1
        if block[HASH_LEN * mid : HASH_LEN * (mid + 1)] < oid:
            lo = mid + 1
        else:
            hi = mid
    return first + lo if block[HASH_LEN * lo : HASH_LEN * (lo + 1)] == oid else -1


def _midx_name(digest: bytes) -> str:
    return f"{MIDX_PREFIX}{digest.hex()}{MIDX_SUFFIX}"


def publish_midx(layer: MultiIndex, pack_dir: Path) -> None:
    """Rename an index written with ``hidden`` into ``pack_dir`` under its name (the hex
    of its checksum), fsync'ing the folder; ``layer`` then names the file there."""
    at = layer.layout.checksum
    final = pack_dir / _midx_name(bytes(layer._map[at : at + HASH_LEN]))
    _fsutil.rename_into(layer.path, final)
    layer.path, layer.name = final, final.name


# -- writing ---------------------------------------------------------------------------


class _Source:
    """One input of a merge: a sorted id column, its entries, bucket bounds, pack map."""

    def __init__(self, ids: Any, entries: Any, bounds: Sequence[int], packmap: Any) -> None:
        self.ids, self.entries, self.bounds, self.packmap = ids, entries, bounds, packmap


def write_midx(
    pack_dir: Path,
    tmp_dir: Path,
    layers: Iterable[MultiIndex],
    packs: Iterable[str],
    *,
    hidden: bool = False,
) -> MultiIndex | None:
    """Merge ``layers`` and the ``.idx`` files of ``packs`` into one new multi-pack index
    (written under a temporary name, fsync'd, renamed into ``pack_dir``); returns it
    opened, or None when there is nothing to cover.

    Packs whose ``.idx`` is missing or damaged are left out (they stay uncovered, and
    their readers report them). Memory: the ``.idx`` files of ``packs`` (callers pass a
    bounded group: :data:`GROUP`), and up to :data:`_SMALL_MERGE` ids (in memory, no
    numpy: :func:`_write_small`) or else a run of fan-out buckets of every input at a
    time (:data:`_MERGE_RUN` entries, or one bucket: :func:`_write_large`).
    With ``hidden`` the index stays under its temporary name in ``tmp_dir`` (a step of a
    larger merge; the caller removes it).
    """
    layers = list(layers)
    loose: dict[str, tuple[bytes, int]] = {}  # name -> its .idx, checked, and its count
    size = sum(layer.count for layer in layers)
    for name in sorted(set(packs)):
        try:
            data = (pack_dir / f"{name}.idx").read_bytes()
            count = check_index(name, data)
        except (OSError, PackFormatError):
            continue
        loose[name] = data, count
        size += count
    names = sorted({*loose, *(p for layer in layers for p in layer.packs)})
    if not names:
        return None
    tmp = _fsutil.temp_name(tmp_dir, ".midx")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if _cdc is not None and size <= _SMALL_MERGE:
            fan, count = _write_small(fd, names, layers, loose)
        else:
            fan, count = _write_large(fd, tmp_dir, names, layers, loose)
        os.pwrite(fd, MIDX_HEADER.pack(MIDX_MAGIC, MIDX_VERSION, len(names), count), 0)
        os.pwrite(fd, MIDX_FANOUT.pack(*fan), midx_layout(len(names), count).fanout)
        h = blake3()
        at = 0
        while block := os.pread(fd, _HASH_BLOCK, at):
            h.update(block)
            at += len(block)
        digest = h.digest()
        _fsutil.write_all(fd, [digest])
        _fsutil.seal(fd, tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    if hidden:
        return MultiIndex(tmp)
    final = pack_dir / _midx_name(digest)
    _fsutil.rename_into(tmp, final)
    return MultiIndex(final)


def _head(names: list[str]) -> bytes:
    """The header room, pack list and fan-out room of an index of ``names``."""
    lay = midx_layout(len(names), 0)
    head = bytearray(lay.ids)
    for i, name in enumerate(names):
        head[lay.packs + HASH_LEN * i : lay.packs + HASH_LEN * (i + 1)] = bytes.fromhex(name)
    return bytes(head)


def _write_small(
    fd: int, names: list[str], layers: list[MultiIndex], loose: dict[str, tuple[bytes, int]]
) -> tuple[list[int], int]:
    """Write the index of a merge of at most :data:`_SMALL_MERGE` ids, all in memory and
    without numpy (whose import costs a process ~75 ms and an OpenBLAS thread's ~0.1 s
    spin: most merges are of the few packs one commit wrote), up to its fan-out table and
    header; returns the fan-out and the id count. The same bytes as :func:`_write_large`:
    ids sorted, the first source's entry kept for an id held twice (layers, then packs in
    name order), each entry's pack renumbered, the padding of a pack's entries zeroed."""
    assert _cdc is not None
    number = {n: i for i, n in enumerate(names)}
    ids: list[bytes] = []
    entries: list[bytes] = []
    size = MIDX_ENTRY.size
    for layer in layers:
        remap = [number[p].to_bytes(4, "little") for p in layer.packs]
        col = layer._map[layer._ids : layer._ids + HASH_LEN * layer.count]
        ent = layer._map[layer._entries : layer._entries + size * layer.count]
        ids += [col[i : i + HASH_LEN] for i in range(0, len(col), HASH_LEN)]
        for at in range(0, len(ent), size):
            k = int.from_bytes(ent[at : at + 4], "little")
            if k >= len(remap):
                raise layer.damaged(f"an entry names pack {k} of {len(remap)}")
            entries.append(remap[k] + ent[at + 4 : at + size])
    start, step = FILE_HEADER.size + IDX_COUNT.size, IDX_ENTRY.size
    for name, (data, count) in loose.items():
        pack = number[name].to_bytes(4, "little")
        end = start + step * count
        ids += [data[at : at + HASH_LEN] for at in range(start, end, step)]
        entries += [  # kind, codec; padding; offset, stored, raw
            pack + data[at + 32 : at + 34] + b"\0\0" + data[at + 36 : at + 52]
            for at in range(start, end, step)
        ]
    order = sorted(range(len(ids)), key=ids.__getitem__)  # stable: the first source first
    kept = [i for j, i in enumerate(order) if not j or ids[i] != ids[order[j - 1]]]
    column = b"".join(ids[i] for i in kept)
    counts = [0] * 256
    for i in kept:
        counts[ids[i][0]] += 1
    fan = list(itertools.accumulate(counts))
    lay = midx_layout(len(names), len(kept))
    bits = bytearray(FILTER_BLOCK * lay.blocks)
    _cdc.filter_add(bits, lay.blocks, column)
    column_entries = b"".join(entries[i] for i in kept)
    _fsutil.write_all(fd, [_head(names), column, column_entries, memoryview(bits)])
    return fan, len(kept)


def _write_large(
    fd: int,
    tmp_dir: Path,
    names: list[str],
    layers: list[MultiIndex],
    loose: dict[str, tuple[bytes, int]],
) -> tuple[list[int], int]:
    """Write the index of a merge with numpy, a run of fan-out buckets at a time (the ids
    to ``fd``, the entries to a temporary beside it, then appended), then its filter, up
    to its fan-out table and header; returns the fan-out and the id count."""
    import numpy as np

    midx_dtype = _dtypes()[1]
    number = {n: i for i, n in enumerate(names)}
    sources: list[_Source] = []
    for layer in layers:
        packmap = np.array([number[p] for p in layer.packs], np.uint32)
        entries = layer.entries()
        k = int(entries["pack"].max()) if layer.count else 0
        if k >= len(packmap):  # (as _write_small reports it)
            raise layer.damaged(f"an entry names pack {k} of {len(packmap)}")
        sources.append(_Source(layer.ids(), entries, layer.bounds(), packmap))
    for name, (data, count) in loose.items():
        arr = _idx_entries(data, count)
        first = _first_bytes(arr["id"].tobytes())
        bounds = [0, *np.searchsorted(first, np.arange(256), side="right").tolist()]
        ent = np.zeros(len(arr), midx_dtype)
        for col in ("kind", "codec", "offset", "stored", "raw"):
            ent[col] = arr[col]
        sources.append(_Source(arr["id"], ent, bounds, np.array([number[name]], np.uint32)))
    side = _fsutil.temp_name(tmp_dir, ".midx-entries")
    side_fd = os.open(side, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fan, count = _write_buckets(fd, side_fd, names, sources)
        os.lseek(side_fd, 0, os.SEEK_SET)
        while block := os.read(side_fd, _HASH_BLOCK):
            _fsutil.write_all(fd, [block])
    finally:
        os.close(side_fd)
        side.unlink(missing_ok=True)
    _write_filter(fd, midx_layout(len(names), count), fan)
    return fan, count


def _first_bytes(column: bytes) -> np.ndarray:
    """The first byte of each 32-byte id of ``column`` (a view, no copy)."""
    import numpy as np

    return np.frombuffer(column, np.uint8)[::HASH_LEN]


def _write_buckets(
    fd: int, side_fd: int, names: list[str], sources: list[_Source]
) -> tuple[list[int], int]:
    """Write the header room, pack list and fan-out room, then the ids a run of buckets
    at a time to ``fd`` and their entries to ``side_fd``; returns the fan-out and the id
    count. A run holds :data:`_MERGE_RUN` entries of the inputs or one bucket: memory
    stays bounded, and a small merge is one sort rather than 256 (each costs numpy ~0.2
    ms of overhead a source)."""
    import numpy as np

    _fsutil.write_all(fd, [_head(names)])
    fan: list[int] = []
    count = 0
    b = 0
    while b < 256:
        e, size = b, 0
        while e < 256:  # buckets b .. e - 1: at least one, at most _MERGE_RUN entries
            more = sum(src.bounds[e + 1] - src.bounds[e] for src in sources)
            if e > b and size + more > _MERGE_RUN:
                break
            size += more
            e += 1
        id_parts, ent_parts = [], []
        for src in sources:
            lo, hi = src.bounds[b], src.bounds[e]
            if hi > lo:
                id_parts.append(src.ids[lo:hi])
                ent = np.array(src.entries[lo:hi])  # a copy: pack numbers are remapped
                ent["pack"] = src.packmap[ent["pack"]]
                ent_parts.append(ent)
        if id_parts:
            ids = np.concatenate(id_parts)
            ents = np.concatenate(ent_parts)
            order = np.argsort(ids, kind="stable")
            ids, ents = ids[order], ents[order]
            keep = np.ones(len(ids), bool)
            keep[1:] = ids[1:] != ids[:-1]
            ids, ents = ids[keep], ents[keep]
            column = ids.tobytes()
            _fsutil.write_all(fd, [column])
            _fsutil.write_all(side_fd, [ents.tobytes()])
            ends = np.searchsorted(_first_bytes(column), np.arange(b, e), side="right")
            fan += (count + ends).tolist()
            count += len(ids)
        else:
            fan += [count] * (e - b)
        b = e
    return fan, count


def _write_filter(fd: int, lay: MidxLayout, fan: Sequence[int]) -> None:
    """Append the filter of the ids already written to ``fd`` (at ``lay.ids``), bucket
    by bucket: ids are sorted and a block is picked by their bytes 0-3, so each bucket's
    ids fall in a run of blocks, the first of which it may share with the bucket before.
    Memory: one bucket's ids."""
    import numpy as np

    blocks = lay.blocks
    bits_per = 8 * FILTER_BLOCK
    carry: np.ndarray | None = None  # the last block so far, which the next may share
    last = -1  # its number
    first = 0
    for b in range(256):
        s = ((b << 24) * blocks) >> 32
        e = ((((b + 1) << 24) - 1) * blocks) >> 32
        flags = np.zeros((e - s + 1) * bits_per, bool)
        n = fan[b] - first
        if n:
            ids = np.frombuffer(os.pread(fd, HASH_LEN * n, lay.ids + HASH_LEN * first), "S32")
            if len(ids) != n:
                raise OSError(f"the index being written is {len(ids)} ids short")
            block, bits = filter_bits(ids, blocks)
            flags[((block - s) * bits_per)[:, None] + bits.astype(np.intp)] = True
        first = fan[b]
        part = np.packbits(flags, bitorder="little").reshape(-1, FILTER_BLOCK)
        if carry is not None:
            if s == last:  # the bucket before's last block is this one's first
                part[0] |= carry
            else:
                _fsutil.write_all(fd, [carry.tobytes()])
        _fsutil.write_all(fd, [part[:-1].tobytes()])
        carry, last = part[-1], e
    assert carry is not None
    _fsutil.write_all(fd, [carry.tobytes()])
