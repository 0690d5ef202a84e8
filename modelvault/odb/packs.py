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
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from modelvault.core.packfmt import (
    IDX_ENTRY,
    Entry,
    PackFormatError,
    decode_index,
)
from modelvault.errors import IntegrityError
from modelvault.odb.folder import FolderChanges
from modelvault.odb.midx import (
    GROUP,
    MultiIndex,
    id_list,
    idx_array,
    is_midx_name,
    write_midx,
)
from modelvault.odb.records import (
    CHECK_GROUP,
    CHECK_RUN,
    CheckBuffers,
    PackChecks,
    PackReads,
    check_payloads,
    verify_all,
    verify_payload,
)
from modelvault.odb.state import (
    DirKey,
    DirState,
    dir_key,
    hold,
    read_state,
    removals,
    settled,
)
from modelvault.odb.writer import (
    PACK_TARGET,
    PackBuilder,
    PackWriter,
    Record,
    SealedPack,
    _OpenPack,
    build_pack,
)

__all__ = [
    "CHECK_GROUP",
    "CHECK_RUN",
    "PACK_TARGET",
    "CheckBuffers",
    "PackBuilder",
    "PackDB",
    "PackWriter",
    "Record",
    "SealedPack",
    "_OpenPack",
    "build_pack",
    "check_payloads",
    "verify_all",
    "verify_payload",
]


_BATCH = 32  # from this many ids on, entries() searches each multi-pack index at once
_SPARSE = 256  # ... unless they are fewer than 1/_SPARSE of an index's ids: one at a time


MERGE_AT = 8  # a commit merges the packs no multi-pack index covers once there are this many
LOOSE_LIMIT = 64  # a process finding more uncovered packs than this merges them at once


class PackDB(PackChecks, PackReads, FolderChanges):
    """The objects of one store. Thread-safe; several processes may share one folder.

    The index is on disk: multi-pack indexes (``multi-<hex>.midx``, memory-mapped, see
    :mod:`modelvault.odb.midx`) cover most packs; the few packs written since the last
    merge are read from their own ``.idx`` into a small dict. A commit merges those into
    a new multi-pack index once there are :data:`MERGE_AT` of them (geometrically, so the
    number of index files stays ~log of the store's size), and gc rebuilds one index.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pack_dir = root / "packs"
        self.tmp_dir = root / "tmp"
        self.pack_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._loose: dict[bytes, Entry] = {}  # entries of the packs no layer covers
        self._loose_packs: set[str] = set()
        self._layers: tuple[MultiIndex, ...] = ()  # the multi-pack indexes in force
        self._opened: dict[str, MultiIndex] = {}  # every readable .midx seen, by name
        self._on_disk: frozenset[str] = frozenset()  # .idx and .midx names at the last look
        self._damaged: dict[str, str] = {}  # pack -> why its index is unreadable
        self._damaged_midx: dict[str, str] = {}  # .midx file -> why it cannot be opened
        self._distrusted: set[str] = set()  # .midx files verify found damaged
        self._inodes: dict[str, int] = {}  # .midx name -> inode at the last look
        self._loaded = False  # indexes are read on first use: listing refs needs none
        self._key: DirKey | None = None  # the pack folder's identity and time last seen
        self._merging = False  # refresh() is merging the uncovered packs (no recursion)

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.refresh()

    # -- index -----------------------------------------------------------------
    def refresh(self, *, full: bool = False) -> None:
        """Look again at the pack folder (packs written or removed by any process).

        Nothing is done while the folder's modification time is the one seen last. Else
        the record ``objects/packs.state`` (:mod:`modelvault.odb.state`) is taken when
        it is of the folder's present time; otherwise, or with ``full``, the folder is
        listed: the multi-pack indexes in force are chosen (every pack they list still
        there; no two covering one pack: the one covering more wins) and the ``.idx`` of
        every other pack is read. When a pack that was read so has disappeared (gc
        elsewhere), those entries are read afresh, since an object may have lived in a
        removed pack and in a newer one too.
        """
        began = time.time_ns()
        key = dir_key(self.pack_dir)
        if not full:
            with self._lock:
                if self._loaded and key == self._key:
                    return
            record = read_state(self.root)
            if record is not None and record.key == key and self._adopt(record):
                return
        self._list(began, key)

    def _adopt(self, record: DirState) -> bool:
        """Take the record of the folder as it is now; False where a file it names
        cannot be read (the folder is listed instead)."""
        if len(record.loose) > LOOSE_LIMIT or not self._distrusted.isdisjoint(record.midx):
            return False
        opened: dict[str, MultiIndex] = {}
        for n in record.midx:
            layer = self._opened.get(n)
            if layer is None:
                try:
                    layer = MultiIndex(self.pack_dir / n)
                except (OSError, PackFormatError):
                    return False
            opened[n] = layer
        uncovered = set(record.loose)
        with self._lock:
            keep = self._loaded and self._loose_packs <= uncovered
            have = set(self._loose_packs) if keep else set()
        loaded: dict[str, dict[bytes, Entry]] = {}
        for name in sorted(uncovered - have):
            try:
                entries = self._load_index(name, missing_ok=False)
            except (IntegrityError, FileNotFoundError):
                return False
            loaded[name] = entries
        with self._lock:
            self._install(keep, loaded, list(opened.values()), opened, {}, {})
            self._on_disk = frozenset()  # (not listed: a full refresh compares anew)
            self._inodes = {n: layer.inode for n, layer in opened.items()}
            self._key = record.key
        return True

    def _install(
        self,
        keep: bool,
        loaded: dict[str, dict[bytes, Entry]],
        chosen: list[MultiIndex],
        opened: dict[str, MultiIndex],
        damaged_midx: dict[str, str],
        damaged: dict[str, str],
    ) -> None:
        """Swap a new view in (``self._lock`` held): a new dict is filled, then swapped
        in, so lookups never see it half; the layers first, so an id moving from the
        dict into a new layer stays found."""
        loose = self._loose if keep else {}
        loose_packs = self._loose_packs if keep else set()
        for name, entries in loaded.items():
            loose.update(entries)
            loose_packs.add(name)
        # smallest first: recent objects are found in the small, cached indexes without
        # a page of the large one (which a miss must search anyway)
        self._layers = tuple(sorted(chosen, key=lambda m: m.count))
        self._loose, self._loose_packs = loose, loose_packs
        self._opened = opened
        self._damaged_midx = damaged_midx
        self._damaged = damaged
        self._loaded = True

    def _list(self, began: int, key: DirKey) -> None:
        """Refresh by listing the folder (see :meth:`refresh`); then write the record
        of it when that is safe (:mod:`modelvault.odb.state`)."""
        removed = removals(self.root)
        names = frozenset(n for n in os.listdir(self.pack_dir) if not n.startswith("."))
        inodes = {}  # a multi-pack index rebuilt under its own name is another file
        for n in names:
            if is_midx_name(n):
                with contextlib.suppress(FileNotFoundError):
                    inodes[n] = os.stat(self.pack_dir / n).st_ino
        with self._lock:
            if self._loaded and names == self._on_disk and inodes == self._inodes:
                self._key = key
                return
        idx = {n[:-4] for n in names if n.endswith(".idx")}
        opened: dict[str, MultiIndex] = {}
        damaged_midx: dict[str, str] = {}
        for n in sorted(inodes):
            if n in self._distrusted:
                continue
            layer = self._opened.get(n)
            if layer is not None and layer.inode != inodes[n]:
                layer = None
            if layer is None:
                try:
                    layer = MultiIndex(self.pack_dir / n)
                except FileNotFoundError:
                    continue
                except (OSError, PackFormatError) as exc:
                    damaged_midx[n] = str(exc)
                    continue
            opened[n] = layer
        chosen: list[MultiIndex] = []
        covered: set[str] = set()
        for layer in sorted(opened.values(), key=lambda m: (-m.npacks, m.name)):
            if layer.pack_set <= idx and covered.isdisjoint(layer.pack_set):
                chosen.append(layer)
                covered |= layer.pack_set
        uncovered = idx - covered
        with self._lock:
            keep = self._loaded and self._loose_packs <= uncovered
            have = set(self._loose_packs) if keep else set()
        if len(uncovered - have) > LOOSE_LIMIT and not self._merging:
            # many packs no index covers (a store written before format 3, or a merge
            # that failed): index them on disk rather than in a dict, once for all
            self._merging = True
            try:
                if self._merge([], set(uncovered)) is not None:
                    return  # (its refresh chose the new index)
            except OSError:  # a read-only store, a full disk: the dict it is
                pass
            finally:
                self._merging = False
        loaded: dict[str, dict[bytes, Entry]] = {}
        damaged: dict[str, str] = {}
        for name in sorted(uncovered - have):
            try:
                loaded[name] = self._load_index(name)
            except IntegrityError as exc:  # the store still opens; verify reports it
                damaged[name] = str(exc)
        with self._lock:
            before = self._damaged | damaged
            self._install(keep, loaded, chosen, opened, damaged_midx, {})
            self._damaged = damaged = {
                n: why
                for n, why in before.items()
                if n in idx and n not in self._loose_packs and n not in covered
            }
            self._on_disk = names
            self._inodes = inodes
            self._key = key
            clean = not damaged and not damaged_midx and len(opened) == len(chosen)
            record = DirState(
                key, tuple(sorted(m.name for m in chosen)), tuple(sorted(self._loose_packs))
            )
        if not (clean and not self._merging and settled(key, began)):
            return
        with contextlib.suppress(OSError), hold(self.root, self.tmp_dir) as held:
            # (no pack removed since the listing: a removal counts under this lock)
            same = dir_key(self.pack_dir) == key and removals(self.root) == removed
            if held is not None and same:  # (a record is a cache: failing to write is
                held.write(record)  # no failure of the read that listed)

    def damaged_indexes(self) -> dict[str, str]:
        """Packs whose index file is unreadable (their objects cannot be found): name -> why."""
        self._ensure_loaded()
        with self._lock:
            return dict(self._damaged)

    def damaged_multi_indexes(self) -> dict[str, str]:
        """Multi-pack index files that cannot be opened: file name -> why (their packs
        are read from their own indexes meanwhile; gc or a merge rebuilds them)."""
        self._ensure_loaded()
        with self._lock:
            return dict(self._damaged_midx)

    def multi_indexes(self) -> list[MultiIndex]:
        """Every readable multi-pack index file, in force or not."""
        self._ensure_loaded()
        with self._lock:
            return list(self._opened.values())

    def check_multi_indexes(self) -> dict[str, str]:
        """Every damaged multi-pack index file (reads each whole): name -> why. They
        are put out of force in this process at once (``rebuild_index`` replaces them)."""
        self.refresh(full=True)
        bad = self.damaged_multi_indexes()
        for layer in self.multi_indexes():
            if not layer.checksum_ok():
                bad[layer.name] = "its checksum does not match its bytes"
            elif not layer.filter_ok():
                bad[layer.name] = "its filter leaves out ids it holds"
        if bad:
            with self._lock:
                self._distrusted |= set(bad)
                self._loaded = False
                self._on_disk = frozenset()
            self.refresh(full=True)
        return bad

    def layers(self) -> tuple[MultiIndex, ...]:
        """The multi-pack indexes in force (no two cover one pack)."""
        self._ensure_loaded()
        return self._layers

    def _load_index(self, name: str, *, missing_ok: bool = True) -> dict[bytes, Entry]:
        try:
            data = (self.pack_dir / f"{name}.idx").read_bytes()
            return decode_index(name, data)[0]
        except FileNotFoundError:
            if missing_ok:
                return {}
            raise
        except PackFormatError as exc:
            raise IntegrityError(str(exc)) from exc

    def _add_entries(self, name: str, entries: dict[bytes, Entry]) -> None:
        with self._lock:  # a newer copy wins: gc writes one before dropping the old pack
            self._loose.update(entries)
            self._loose_packs.add(name)
            if self._on_disk:
                self._on_disk = self._on_disk | {f"{name}.idx", f"{name}.pack"}
            self._damaged.pop(name, None)  # written anew (verify's salvage)

    def _find(self, oid: bytes) -> Entry | None:
        e = self._loose.get(oid)
        if e is None:
            for layer in self._layers:
                e = layer.lookup(oid)
                if e is not None:
                    break
        return e

    def entry(self, oid: bytes) -> Entry | None:
        """Where ``oid`` is stored, or None; looks for new packs once on a miss."""
        self._ensure_loaded()
        e = self._find(oid)
        if e is None:
            self.refresh(full=True)  # (a record may miss a pack written in the same tick)
            e = self._find(oid)
        return e

    def entries(self, oids: Sequence[bytes]) -> list[Entry | None]:
        """Where each of ``oids`` is stored, None where the loaded indexes do not know it
        (no new look for new packs: for many ids at once, where a miss is no error).
        Many ids, unless few beside a large index, are looked up in each multi-pack index
        at once (one compiled call, :meth:`MultiIndex.positions_of`)."""
        self._ensure_loaded()
        layers = self._layers
        loose = self._loose
        out: list[Entry | None]
        if loose:
            get = loose.get
            out = [get(oid) for oid in oids]
            todo = [i for i, e in enumerate(out) if e is None]
        else:
            out = [None] * len(oids)
            todo = list(range(len(oids)))
        if not layers or not todo:
            return out
        if len(todo) < _BATCH or len(todo) * _SPARSE < max(m.count for m in layers):
            for i in todo:  # (a batch search touches ~log2(pages) pages of a bucket an id,
                out[i] = self._find(oids[i])  # a single lookup ~2: see MultiIndex.position)
            return out
        for layer in layers:
            found = layer.entries_at(layer.positions_of(b"".join(oids[i] for i in todo)))
            if len(todo) == len(out):  # none found yet: the answers as they are
                out = found
                todo = [i for i, e in enumerate(found) if e is None]
            else:
                rest = []
                for i, e in zip(todo, found, strict=True):
                    if e is not None:
                        out[i] = e
                    else:
                        rest.append(i)
                todo = rest
            if not todo:
                break
        return out

    def has(self, oid: bytes) -> bool:
        """True if the object is stored (as far as the loaded indexes know).

        (The save path asks this once per chunk: no ``Entry`` is made.)"""
        if not self._loaded:
            self.refresh()
        if oid in self._loose:
            return True
        for layer in self._layers:  # noqa: SIM110 (a loop: any() and its generator cost more)
            if layer.might_have(oid) and layer.position(oid) >= 0:
                return True
        return False

    def has_many(self, oids: Sequence[bytes]) -> list[bool]:
        """:meth:`has` of each of ``oids``, at once: each multi-pack index's filter
        screens them all in one call (:meth:`MultiIndex.screen_ids`), and only those it
        may hold are searched for.

        (The save path asks this once per cut segment: most new chunks are then
        answered by the filters, not by a search each.)"""
        if not self._loaded:
            self.refresh()
        loose, layers = self._loose, self._layers
        out = [oid in loose for oid in oids]
        todo = [oid for oid, hit in zip(oids, out, strict=True) if not hit]
        if not todo or not layers:
            return out
        found: set[bytes] = set()
        for layer in layers:
            flags = layer.screen_ids(b"".join(todo))
            pos = layer.position
            hits = [oid for oid, f in zip(todo, flags, strict=True) if f and pos(oid) >= 0]
            if hits:
                found.update(hits)
                todo = [oid for oid in todo if oid not in found]
                if not todo:
                    break
        return [hit or oid in found for oid, hit in zip(oids, out, strict=True)]

    def ids(self) -> list[bytes]:
        """Every stored object id (for tests and tools: O(objects) memory)."""
        self._ensure_loaded()
        with self._lock:
            out = set(self._loose)
            layers = self._layers
        for layer in layers:
            out.update(id_list(layer.ids()))
        return list(out)

    def count(self) -> int:
        """How many index entries the indexes in force hold (an id kept in two packs
        covered by two indexes counts twice)."""
        self._ensure_loaded()
        with self._lock:
            return len(self._loose) + sum(layer.count for layer in self._layers)

    def packs(self) -> list[str]:
        """Names of every visible pack (whose index is readable)."""
        self._ensure_loaded()
        with self._lock:
            covered = {p for layer in self._layers for p in layer.packs}
            return sorted(covered | self._loose_packs)

    def entries_of(self, pack: str) -> dict[bytes, Entry]:
        """The index of one pack, read from disk."""
        return self._load_index(pack)

    def index_array(self, pack: str) -> Any:
        """The entries of one pack's ``.idx`` as a numpy structured array sorted by id
        (fields id, kind, codec, offset, stored, raw), or None if it is missing or damaged."""
        try:
            return idx_array(pack, (self.pack_dir / f"{pack}.idx").read_bytes())
        except (FileNotFoundError, PackFormatError):
            return None

    @staticmethod
    def entry_in(pack: str, row: Any) -> Entry:
        """The entry of one row of :meth:`index_array`."""
        return Entry(
            pack,
            int(row["offset"]),
            int(row["stored"]),
            int(row["raw"]),
            int(row["kind"]),
            int(row["codec"]),
        )

    def ids_of(self, pack: str) -> list[bytes]:
        """The ids the indexes in force place in ``pack`` (for a pack whose own index
        is damaged, what a multi-pack index still says of it)."""
        self._ensure_loaded()
        with self._lock:
            out = [oid for oid, e in self._loose.items() if e.pack == pack]
            layers = self._layers
        for layer in layers:
            k = layer.pack_number(pack)
            if k >= 0:
                import numpy as np

                where = np.nonzero(layer.entries()["pack"] == k)[0]
                out += id_list(layer.ids()[where])
        return out

    # -- merging ---------------------------------------------------------------
    def maybe_merge(self, at: int | None = None) -> MultiIndex | None:
        """Merge the packs no multi-pack index covers into a new one when there are
        ``at`` (:data:`MERGE_AT`) or more, together with the smaller indexes in force
        (each at most twice what is merged so far, smallest first: geometric, so a
        commit rarely rewrites the large ones). Returns the new index, or None when it
        was not yet time."""
        self.refresh()
        with self._lock:
            loose = set(self._loose_packs)
            loose_n = len(self._loose)
            layers = sorted(self._layers, key=lambda m: m.count)
        if len(loose) < (MERGE_AT if at is None else at):
            return None
        absorb: list[MultiIndex] = []
        total = loose_n
        for layer in layers:
            if layer.count > 2 * total:
                break
            absorb.append(layer)
            total += layer.count
        return self._merge(absorb, loose)

    def index_is_whole(self) -> bool:
        """True if one multi-pack index covers every visible pack and no other index
        file is there (what :meth:`rebuild_index` leaves)."""
        self.refresh(full=True)
        with self._lock:
            return (
                len(self._layers) <= 1
                and not self._loose_packs
                and not self._damaged_midx
                and len(self._inodes) == len(self._layers)
            )

    def rebuild_index(self) -> MultiIndex | None:
        """One multi-pack index over every visible pack (gc, repair); removes every
        other multi-pack index file. Sound indexes in force are merged as they are;
        every other pack's ``.idx`` is read."""
        self.refresh(full=True)
        with self._lock:
            layers = list(self._layers)
            loose = set(self._loose_packs)
        return self._merge(layers, loose, every=True)

    def _merge(
        self, layers: list[MultiIndex], loose: set[str], *, every: bool = False
    ) -> MultiIndex | None:
        sound = []
        unsound = []
        for layer in layers:
            if layer.checksum_ok():  # never copy damage forward into a fresh checksum
                sound.append(layer)
            else:
                unsound.append(layer)
                loose |= layer.pack_set
        steps: list[MultiIndex] = []  # many uncovered packs: merged a group at a time
        try:
            group: list[str] = []
            size = 0
            for name in sorted(loose):
                with contextlib.suppress(FileNotFoundError):
                    size += (self.pack_dir / f"{name}.idx").stat().st_size // IDX_ENTRY.size
                group.append(name)
                if size >= GROUP:
                    step = write_midx(self.pack_dir, self.tmp_dir, [], group, hidden=True)
                    steps += [step] if step is not None else []
                    group, size = [], 0
            new = write_midx(self.pack_dir, self.tmp_dir, sound + steps, group, hidden=True)
        except FileNotFoundError:  # gc swept our temporary (a merge outside the lock)
            return None
        finally:
            for step in steps:
                step.close()
                step.path.unlink(missing_ok=True)
        try:
            self._publish_merge(new, [*sound, *unsound], every=every)
        except BaseException:
            if new is not None and new.path.parent == self.tmp_dir:
                new.close()
                new.path.unlink(missing_ok=True)
            raise
        if every:
            self._distrusted = set()
        if new is not None:
            with self._lock:
                self._opened = {**self._opened, new.name: new}
        self.refresh(full=every)
        return new

    # -- writing ---------------------------------------------------------------
    def writer(self, *, repack: bool = False) -> PackWriter:
        """A new writer; call ``commit()`` to make its objects durable and visible.

        With ``repack`` it writes objects even if a visible pack holds them (gc
        copies the live objects out of a pack before deleting it).
        """
        return PackWriter(self, skip_stored=not repack, merge=not repack)

    # -- maintenance -----------------------------------------------------------
    def stored_bytes(self) -> int:
        """Bytes the visible packs and their indexes take on disk (not the multi-pack
        indexes: derived from those, ~56 bytes an object, rewritten by merges and gc)."""
        total = 0
        for name in self.packs():
            for ext in (".pack", ".idx"):
                with contextlib.suppress(FileNotFoundError):
                    total += (self.pack_dir / f"{name}{ext}").stat().st_size
        return total

    def orphan_files(self) -> Iterator[Path]:
        """Pack files without index and leftover temporaries (only safe to delete under lock)."""
        indexed = {p.stem for p in self.pack_dir.glob("*.idx")}
        for p in self.pack_dir.iterdir():
            if p.suffix not in (".idx", ".midx") and p.stem not in indexed:
                yield p
        yield from self.tmp_dir.iterdir()
