"""Keeping a store sound and small: verify (and salvage), gc, stats, per-model footprints.

Every function takes a :class:`~modelvault.repo.Repository` and works through its public
parts; ``Store`` and the CLI call them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from modelvault import _fsutil
from modelvault._parallel import ordered_map
from modelvault.aliases import AliasStore
from modelvault.core import graph
from modelvault.core.hashing import ObjType
from modelvault.core.objects import KIND_TREE
from modelvault.core.packfmt import RECORD_HEADER
from modelvault.errors import IntegrityError, ModelVaultError, NotFound
from modelvault.odb.packs import CheckBuffers, verify_payload
from modelvault.odb.reading import read_file_object, read_model, read_tree
from modelvault.refs import RefValue
from modelvault.repo.repository import Repository
from modelvault.tags import Tag

__all__ = [
    "Children",
    "Footprint",
    "Step",
    "StepCallback",
    "StoreStats",
    "VerifyReport",
    "footprints",
    "gc",
    "reachable",
    "stats",
    "verify",
]

if TYPE_CHECKING:
    from modelvault.odb.live import LiveSet

logger = logging.getLogger("modelvault.store")

# object id -> the (id, type) pairs it refers to, or None when it cannot be read
Children = dict[bytes, "list[tuple[bytes, ObjType]] | None"]


@dataclass(frozen=True)
class Step:
    """Progress of verify or gc: the phase (``"verifying"``, ``"marking"``,
    ``"repacking"``, ``"deleting"``) and objects and bytes done of the totals (0: not
    counted in this phase) — the shape of remote gc's and verify's progress."""

    phase: str
    objects: int
    bytes: int
    total_objects: int
    total_bytes: int


StepCallback = Callable[[Step], None]


@dataclass(frozen=True)
class StoreStats:
    """Sizes of a store: tags, logical bytes over all tags, bytes on disk."""

    models: int
    logical_bytes: int
    stored_bytes: int

    @property
    def dedup_ratio(self) -> float:
        """Logical over stored bytes (how many times the store saves over plain copies)."""
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else 1.0


@dataclass
class VerifyReport:
    """Result of :func:`verify`: ``ok`` is False when anything is damaged or missing."""

    ok: bool = True
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    broken_tags: list[Tag] = field(default_factory=list)
    objects_checked: int = 0
    damaged_files: dict[str, str] = field(default_factory=dict)  # store-relative path -> why
    # materialised folders (model id hex -> what differed) that were dropped: a cache,
    # written afresh on the next ``Model.path``, so they do not make ``ok`` False
    dropped_caches: dict[str, str] = field(default_factory=dict)
    # damaged packs moved to objects/quarantine/ once their sound objects were copied
    set_aside: list[str] = field(default_factory=list)
    # damaged packs whose every object was sound, written anew (say, a lost index), and
    # damaged multi-pack index files, rebuilt from the packs' own indexes
    rebuilt: list[str] = field(default_factory=list)


# -- reachability ---------------------------------------------------------------------


def _children(repo: Repository, oid: bytes, kind: ObjType) -> list[tuple[bytes, ObjType]]:
    """The ids a model, tree or file object refers to (raises if absent or unreadable)."""
    db = repo.objects
    if kind == ObjType.MODEL:
        obj = read_model(db, oid)
        kids = [(obj.tree, ObjType.TREE)]
        return kids + ([(obj.custom_objects, ObjType.FILE)] if obj.custom_objects else [])
    if kind == ObjType.TREE:
        return [
            (e.oid, ObjType.TREE if e.kind == KIND_TREE else ObjType.FILE)
            for e in read_tree(db, oid).entries
        ]
    return [(cid, ObjType.CHUNK) for cid, _ in read_file_object(db, oid).chunks]


def reachable(
    repo: Repository, model_ids: Sequence[bytes], cache: Children | None = None
) -> tuple[set[bytes], set[bytes]]:
    """``(every id the models reach, ids among them that are absent or unreadable)``.

    Chunks are not read. ``cache`` keeps the decoded children of each object (None:
    unreadable) across calls, so walking many tags that share files reads each once.
    """
    memo: Children = {} if cache is None else cache

    def children(oid: bytes, kind: ObjType) -> list[tuple[bytes, ObjType]] | None:
        if oid not in memo:
            try:
                memo[oid] = _children(repo, oid, kind)
            except (NotFound, IntegrityError, ValueError):
                memo[oid] = None
        return memo[oid]

    return graph.reachable(model_ids, children, lambda oid: repo.objects.entry(oid) is not None)


# -- stats --------------------------------------------------------------------------


def _size(repo: Repository, ref: RefValue) -> int:
    return ref.size if ref.size is not None else read_model(repo.objects, ref.model_id).size


def stats(repo: Repository, refs: Sequence[RefValue]) -> StoreStats:
    """Tags, logical bytes over ``refs``, and bytes the objects take on disk."""
    logical = sum(_size(repo, r) for r in refs)
    return StoreStats(len(refs), logical, repo.objects.stored_bytes())


class Footprint(TypedDict):
    """What one model takes: ``mv du``'s row."""

    tag: str
    name: str
    version: str
    logical_bytes: int
    stored_bytes: int
    unique_bytes: int


def footprints(repo: Repository, refs: Sequence[RefValue]) -> list[Footprint]:
    """Per model: logical bytes, stored bytes of what it reaches, and of what only it
    reaches (what deleting it alone and running gc would free)."""
    cache: Children = {}
    reach = {r.tag: reachable(repo, [r.model_id], cache)[0] for r in refs}
    holders = Counter(oid for ids in reach.values() for oid in ids)
    sizes: dict[bytes, int] = {}
    for oid in holders:
        entry = repo.objects.entry(oid)
        sizes[oid] = entry.stored_len if entry is not None else 0
    return [
        {
            "tag": str(r.tag),
            "name": r.tag.name,
            "version": str(r.tag.version),
            "logical_bytes": _size(repo, r),
            "stored_bytes": sum(sizes[o] for o in reach[r.tag]),
            "unique_bytes": sum(sizes[o] for o in reach[r.tag] if holders[o] == 1),
        }
        for r in refs
    ]


# -- verify -------------------------------------------------------------------------


def verify(
    repo: Repository,
    config_damage: Callable[[], str | None] | None = None,
    progress: StepCallback | None = None,
) -> VerifyReport:
    """Re-hash every stored object; report damaged ids and the tags they break.

    Checks under the gc lock held shared, so a gc elsewhere cannot delete packs being
    checked. Then, if packs are damaged, takes it exclusively to copy their sound
    objects into a new pack and set the damaged ones aside (``objects/quarantine/``,
    freed by gc): what was corrupt is then missing, and pulling or importing a
    healthy copy of the broken tags restores it (docs/architecture.md, Repair).
    config.json is reported when it is damaged (:meth:`Config.damage`), else what
    ``config_damage`` says is wrong with its remotes (checked above).
    ``progress`` hears of each pack checked (bytes of the pack files).
    """
    with repo.gc_lock(shared=True):
        bad_indexes = repo.objects.check_multi_indexes()  # out of force before the walk
        report, damaged = _verify(repo, progress)
        for name, damage in bad_indexes.items():
            report.damaged_files[f"objects/packs/{name}"] = damage
            report.ok = False
        why = repo.config.damage()
        if why is None and config_damage is not None:
            why = config_damage()
        if why:
            report.damaged_files["config.json"] = why
            report.ok = False
    if damaged or bad_indexes:
        with repo.gc_lock(shared=False):
            if damaged:
                report.set_aside = _set_aside(repo, damaged)
            repo.objects.rebuild_index()  # from the packs' own indexes
        report.rebuilt = sorted((damaged - set(report.set_aside)) | set(bad_indexes))
    return report


def _lost_in_quarantine(repo: Repository) -> set[bytes]:
    """Damaged objects of the packs set aside that no healthy copy has replaced yet:
    still reported as corrupt, until a pull or an import repairs their tags."""
    quarantine = repo.layout.quarantine
    if not quarantine.is_dir():
        return set()
    lost = set()
    for name in {p.stem for p in quarantine.iterdir() if p.suffix == ".pack"}:
        for oid, _, _, sound in repo.objects.records(name, quarantine):
            if not sound and not repo.objects.has(oid):
                lost.add(oid)
    return lost


def _set_aside(repo: Repository, packs: set[str]) -> list[str]:
    """Copy the sound objects of damaged packs into a new pack, then move those packs
    that are still damaged into ``objects/quarantine/``; returns their names."""
    db = repo.objects
    db.refresh(full=True)
    packs &= set(db.packs()) | set(db.damaged_indexes())
    with db.writer(repack=True) as writer:
        for pack in sorted(packs):
            for kind, oid, how, raw_len, payload in db.salvage(pack):
                writer.add_prepared(kind, oid, how, raw_len, payload)
    db.refresh(full=True)
    aside = []
    for pack in sorted(packs):
        # a pack whose every object was sound comes out of the salvage with its own
        # name (names cover headers), so the copy replaced it: then it is sound again
        sound = (
            pack not in db.damaged_indexes()
            and db.check_pack_file(pack) is None
            and not db.verify_pack(pack)
        )
        if not sound:
            db.set_aside(pack, repo.layout.quarantine)
            aside.append(pack)
    db.refresh(full=True)
    return aside


def _verify(
    repo: Repository, progress: StepCallback | None = None
) -> tuple[VerifyReport, set[str]]:
    """The report, and the packs to set aside (damaged payloads, headers or index)."""
    db = repo.objects
    db.refresh(full=True)
    report = VerifyReport()
    corrupt: set[bytes] = set()
    damaged: set[str] = set()
    packs = db.packs()
    sizes = {pack: _pack_size(db.pack_dir / f"{pack}.pack") for pack in packs}
    total, done = sum(sizes.values()), 0

    buffers = CheckBuffers()  # a verifying thread's (check_payloads)

    def check(pack: str) -> tuple[list[bytes], str | None]:
        return db.verify_pack(pack, buffers.buffer), db.check_pack_file(pack)

    if progress is not None and packs:
        progress(Step("verifying", 0, 0, len(packs), total))
    # two packs at a time: decoding and hashing run without the GIL (check_payloads)
    with ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="modelvault-verify") as pool:
        for i, (pack, (bad_ids, why)) in enumerate(ordered_map(pool, check, packs, 4)):
            done += sizes[pack]
            if progress is not None and i + 1 < len(packs):
                progress(Step("verifying", i + 1, done, len(packs), total))
            corrupt.update(bad_ids)
            if why:
                report.damaged_files[f"objects/packs/{pack}.pack"] = why
            if bad_ids or why:
                damaged.add(pack)
    for pack, why in db.damaged_indexes().items():
        report.damaged_files[f"objects/packs/{pack}.idx"] = why
        damaged.add(pack)
    if progress is not None:
        progress(Step("verifying", len(packs), done, len(packs), total))
    corrupt |= _lost_in_quarantine(repo)
    report.objects_checked = db.count()
    damaged_refs: list[Tag] = []
    refs = repo.refs.all(damaged=damaged_refs)
    for tag in damaged_refs:
        report.broken_tags.append(tag)
        report.damaged_files[f"refs/{tag.name}/{tag.version}"] = "unreadable ref"
    cache: Children = {}
    for ref in refs:
        reach, missing = reachable(repo, [ref.model_id], cache)
        bad = (reach & corrupt) | missing
        if bad:
            report.broken_tags.append(ref.tag)
            report.missing.extend(m.hex() for m in missing - corrupt)
    _verify_caches(repo, refs, report)
    report.corrupt = sorted(c.hex() for c in corrupt)
    report.missing = sorted(set(report.missing))
    report.ok = not (report.corrupt or report.broken_tags or report.damaged_files)
    return report, damaged


def _verify_caches(repo: Repository, refs: Sequence[RefValue], report: VerifyReport) -> None:
    """Re-hash the materialised folders; drop those whose bytes or files changed."""
    for ref in refs:
        if not repo.cache.folder(ref.model_id).is_dir():
            continue
        try:
            tree = read_model(repo.objects, ref.model_id).tree
        except ModelVaultError:
            continue  # reported as a broken tag
        why = repo.cache.check_content(ref.model_id, tree)
        if why:
            repo.cache.drop(ref.model_id)
            report.dropped_caches[ref.model_id.hex()] = why


# -- gc -----------------------------------------------------------------------------


def _pack_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def gc(repo: Repository, progress: StepCallback | None = None) -> int:
    """Free what no tag reaches; returns the bytes freed (packs and caches).

    Holds the gc lock exclusively: saves, imports and pulls in flight finish first.
    ``progress`` hears of the marking (objects walked), the repacking (bytes of the
    packs rewritten) and the deleting (packs).

    Raises:
        IntegrityError: a tag reaches a missing or damaged object, a ref is damaged, or
            config.json is (nothing is freed).
    """
    repo.config.check()  # a store of unknown format may have roots this gc does not know
    with repo.gc_lock(shared=False):
        repo.objects.refresh(full=True)
        refs = repo.refs.all()
        cache: Children = {}
        aliased = AliasStore(repo.layout.aliases, repo.layout.alias_lock, repo.refs).model_ids()
        live, missing = _mark(repo, [r.model_id for r in refs] + sorted(aliased), progress)
        if missing:  # what lies below an unreadable object is unknown: free nothing
            broken = [str(r.tag) for r in refs if reachable(repo, [r.model_id], cache)[1]]
            raise IntegrityError(
                f"gc stopped, nothing freed: {', '.join(broken)} reach {len(missing)} "
                "missing or damaged objects; run verify, then delete or restore those tags"
            )
        freed = _gc_packs(repo, live, progress)
        freed += _gc_leftovers(repo, {r.model_id.hex() for r in refs})
    return freed


VERIFY_THREADS = 2  # packs verified at once
MAX_UNUSED = 0.05  # gc repacks partly dead packs until dead bytes are at most this of live


def _mark(
    repo: Repository, roots: Sequence[bytes], progress: StepCallback | None = None
) -> tuple[LiveSet, set[bytes]]:
    """Every object the ``roots`` reach, marked over the index (bounded memory: a byte
    per indexed object, plus the ids of the metadata objects walked), and the ids among
    them that are absent or unreadable. Chunks are not read."""
    from modelvault.odb.live import LiveSet

    live = LiveSet(repo.objects)
    seen: set[bytes] = set()  # models, trees and files walked (chunks are only marked)
    missing: set[bytes] = set()
    found: list[bytes] = []
    stack = [(oid, ObjType.MODEL) for oid in roots]
    while stack:
        oid, kind = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        try:
            kids = _children(repo, oid, kind)
        except (NotFound, IntegrityError, ValueError):
            missing.add(oid)
            continue
        found.append(oid)
        for cid, ckind in kids:
            if ckind == ObjType.CHUNK:
                found.append(cid)
            elif cid not in seen:
                stack.append((cid, ckind))
        if len(found) >= 1 << 16:
            missing.update(live.add(found))
            found = []
        if progress is not None and len(seen) % 1024 == 0:
            progress(Step("marking", len(seen), 0, 0, 0))
    missing.update(live.add(found))
    return live, missing


def _gc_packs(repo: Repository, live: LiveSet, progress: StepCallback | None = None) -> int:
    """Sweep and repack, then rebuild the index once.

    A pack none of whose objects lives is deleted. Packs partly dead are repacked,
    most dead first, until the dead bytes left in packs are at most :data:`MAX_UNUSED`
    of the live bytes (restic's ``prune --max-unused``): their live objects are copied
    into new packs by one writer (full-sized packs, durable before anything goes).
    Then those packs are deleted and one multi-pack index is written over what is left.
    """
    import numpy as np

    db = repo.objects
    dead: list[str] = []
    kept: list[str] = []
    partial: list[tuple[float, str, int]] = []  # (dead fraction, pack, dead bytes)
    live_bytes = 0
    for pack in db.packs():
        arr = db.index_array(pack)
        if arr is None:  # a damaged index: nothing is known, nothing is freed (verify)
            continue
        alive = live.contains(arr["id"])
        size = arr["stored"].astype(np.int64) + RECORD_HEADER.size
        here, gone = int(size[alive].sum()), int(size[~alive].sum())
        live_bytes += here
        if not alive.any():
            dead.append(pack)
        elif alive.all():
            kept.append(pack)
        else:
            partial.append((gone / (here + gone), pack, gone))
    partial.sort(reverse=True)
    unused = sum(gone for _, _, gone in partial)
    repack: list[str] = []
    for _, pack, gone in partial:
        if unused <= MAX_UNUSED * live_bytes:
            kept.append(pack)
        else:
            repack.append(pack)
            unused -= gone
    if repack:
        for pack in kept:  # what the kept packs hold is not copied
            arr = db.index_array(pack)
            if arr is not None:
                live.claim(arr["id"])
    _repack(repo, live, repack, progress)  # (a phase even when empty: crash tests stop here)
    doomed = dead + repack
    freed = 0
    for i, pack in enumerate(doomed):
        if progress is not None:
            progress(Step("deleting", i, 0, len(doomed), 0))
        freed += db.delete_pack(pack)
    if dead or repack or not db.index_is_whole():
        db.rebuild_index()
    return freed


def _repack(
    repo: Repository, live: LiveSet, packs: list[str], progress: StepCallback | None = None
) -> None:
    """Copy the live objects of ``packs`` that no kept pack holds into new packs, each
    checked on the way."""
    if not packs:
        return
    db = repo.objects
    sizes = [_pack_size(db.pack_dir / f"{pack}.pack") for pack in packs]
    done = 0
    with db.writer(repack=True) as writer:
        for i, pack in enumerate(packs):
            if progress is not None:
                progress(Step("repacking", i, done, len(packs), sum(sizes)))
            done += sizes[i]
            arr = db.index_array(pack)
            assert arr is not None  # read a moment ago, under the lock
            with open(db.pack_dir / f"{pack}.pack", "rb") as f:
                for row in arr[live.claim(arr["id"])]:
                    oid = row["id"].tobytes().ljust(32, b"\0")
                    e = db.entry_in(pack, row)
                    payload = os.pread(f.fileno(), e.stored_len, e.offset)
                    verify_payload(oid, e, payload, None)  # never copy damage forward
                    writer.add_prepared(e.kind, oid, e.codec, e.raw_len, payload)


def _gc_leftovers(repo: Repository, live_models: set[str]) -> int:
    """Remove what no tag and no in-flight work needs: packs without index and
    temporaries under ``objects/`` (no writer runs while gc holds its lock), packs set
    aside by verify, the cache folders of models no tag reaches, and dead temporaries
    elsewhere (those whose in-flight lock nobody holds: see ``_fsutil.in_flight``)."""
    freed = 0
    quarantine = repo.layout.quarantine
    orphans = [*repo.objects.orphan_files(), *(quarantine.iterdir() if quarantine.is_dir() else [])]
    for path in orphans:
        with contextlib.suppress(FileNotFoundError):
            freed += path.stat().st_size
            path.unlink()
    freed += repo.cache.sweep(live_models)

    def remove(path: Path) -> None:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    layout = repo.layout
    _fsutil.sweep_temps(layout.tmp, remove)
    _fsutil.sweep_temps(layout.root, remove)  # config writes
    for folder in layout.refs.iterdir():  # ref writes
        _fsutil.sweep_temps(folder, remove)
    if layout.aliases.is_dir():
        for folder in layout.aliases.iterdir():  # alias moves
            if folder.is_dir():
                _fsutil.sweep_temps(folder, remove)
    for sub, _, _ in os.walk(layout.remotes):  # local copies of remote indexes
        _fsutil.sweep_temps(Path(sub), remove)
    return freed
