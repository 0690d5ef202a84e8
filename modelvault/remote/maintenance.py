"""Keeping a remote small: delete a tag or an alias, gc (verify: ``remote/verify.py``).

- :func:`delete_remote` removes refs (``refs/<name>/<version>``) or one alias
  (``aliases/<name>/<alias>``); objects stay until :func:`gc_remote`.
- :func:`gc_remote` holds the remote's exclusive lock (:mod:`modelvault.remote.locks`),
  marks from every remote ref and alias (reading model, tree and file objects with
  ranged reads of the packs), deletes packs nothing live is in, and repacks packs whose
  stored bytes are mostly dead: it downloads their live objects (verified), uploads a new
  pack and then its index, and only then deletes each old index and then its pack. At
  every instant each live object is in a visible pack, so a gc killed anywhere leaves
  every tag pullable (docs/format.md section 11.9, docs/remotes.md).
- :func:`~modelvault.remote.verify.verify_remote` (in ``verify.py``) re-reads every
  pack; it shares this module's ranged reads of remote packs and its report types.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from modelvault._parallel import ordered_map
from modelvault.aliases import SEP, parse_alias
from modelvault.core import graph
from modelvault.core.hashing import ObjType
from modelvault.core.packfmt import FILE_HEADER, IDX_ENTRY, RECORD_HEADER, Entry
from modelvault.errors import IntegrityError, InvalidTag, ModelExists, NotFound, RemoteError
from modelvault.odb.packs import verify_payload
from modelvault.odb.writer import build_pack
from modelvault.remote.locks import RemoteLock, held
from modelvault.remote.pull import SPAN_GAP, SPAN_MAX
from modelvault.remote.push import REPACK_TARGET
from modelvault.remote.repo import RemoteRepo
from modelvault.remote.session import JOBS, Session, open_session
from modelvault.repo import Repository
from modelvault.repo.layout import (
    ALIASES,
    PACK_INDEX_KEY,
    PACKS,
    alias_key,
    index_key,
    pack_key,
    ref_key,
)
from modelvault.tags import Tag

__all__ = [
    "REPACK_UNUSED",
    "RemoteAlias",
    "RemoteProgress",
    "RemoteVerifyReport",
    "delete_remote",
    "gc_remote",
    "read_aliases",
]

logger = logging.getLogger("modelvault.remote")

REPACK_UNUSED = 0.5  # a pack whose stored bytes are more than this share dead is repacked


@dataclass(frozen=True)
class RemoteProgress:
    """Progress of remote gc or verify: the phase (``"marking"``, ``"repacking"``,
    ``"deleting"``, ``"verifying"``), and objects and bytes done of the totals."""

    phase: str
    objects: int
    bytes: int
    total_objects: int
    total_bytes: int


RemoteProgressCallback = Callable[[RemoteProgress], None]


@dataclass(frozen=True)
class RemoteAlias:
    """One remote alias: ``name@alias`` -> ``name:version`` (model ``model_id``)."""

    name: str
    alias: str
    version: str
    model_id: bytes

    @property
    def tag(self) -> Tag:
        return Tag(self.name, self.version)

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}"


@dataclass
class RemoteVerifyReport:
    """Result of :func:`verify_remote` (the shape of ``store.verify()``'s report):
    ``ok`` is False when any object, pack, index, ref or alias is damaged or missing.

    ``damaged_files`` maps remote keys to what is wrong; ``broken_aliases`` maps
    ``"name@alias"`` to why it cannot be pulled (unreadable, or its version is missing
    or broken).
    """

    url: str
    ok: bool = True
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    broken_tags: list[Tag] = field(default_factory=list)
    broken_aliases: dict[str, str] = field(default_factory=dict)
    objects_checked: int = 0
    bytes_checked: int = 0
    damaged_files: dict[str, str] = field(default_factory=dict)


# -- aliases ----------------------------------------------------------------------------


def read_aliases(
    repo: RemoteRepo, name: str | None = None, damaged: dict[str, str] | None = None
) -> list[RemoteAlias]:
    """Every alias on the remote (of ``name``): ``aliases/<name>/<alias>`` holding
    ``{"version": ..., "model": "<hex id>"}``.

    Raises:
        IntegrityError: an alias document is unreadable (unless ``damaged`` collects
            ``"name@alias"`` -> why).
    """
    out = []
    for key in repo.t.list(f"{ALIASES}/{name}" if name else ALIASES):
        parts = key.split("/")
        if len(parts) != 3 or parts[2].startswith("."):
            continue
        shown = f"{parts[1]}@{parts[2]}"
        try:
            data = repo.t.get(key)
        except NotFound:  # removed since the listing
            continue
        try:
            doc = json.loads(data)
            version = str(doc["version"])
            model = bytes.fromhex(doc["model"])
            if len(model) != 32:
                raise ValueError("the model id is not 32 bytes")
            Tag(parts[1], version)
            Tag(parts[1], parts[2])
        except (ValueError, KeyError, TypeError, InvalidTag) as exc:
            why = f"{repo.url}/{key} is unreadable ({exc})"
            if damaged is None:
                raise IntegrityError(why) from None
            damaged[shown] = why
            continue
        out.append(RemoteAlias(parts[1], parts[2], version, model))
    return out


# -- delete -----------------------------------------------------------------------------


def delete_remote(
    repo: Repository,
    tag: str | Tag,
    url: str,
    options: Mapping[str, Any] | None = None,
    *,
    spec: str | None = None,
) -> list[str]:
    """Remove ``tag`` from the remote: ``name:version``, ``name:latest`` (the newest),
    ``name`` (every version), or ``name@alias`` (that alias, not its version). Returns
    what was removed. The tag leaves listings at once; its objects stay until
    :func:`gc_remote`.

    Raises:
        NotFound: the remote holds no such tag or alias.
        ModelExists: an alias points at a version to remove (nothing is removed).
        InvalidTag: ``tag`` is not a tag.
        RemoteError: the remote failed.
    """
    named = parse_alias(tag)  # name@alias (folded to lowercase); bad input: InvalidTag,
    t = Tag.coerce(tag) if named is None else None  # before any request
    text = SEP.join(named) if named is not None else str(tag)
    s = open_session(repo, url, options, spec, JOBS)
    if not s.repo.check_format(create=False):
        raise s.not_there(f"{text} is not on", " (no modelvault remote there)")
    if named is not None:
        key = alias_key(*named)
        if not s.repo.t.exists(key):
            raise s.not_there(f"no alias {text} is on")
        s.repo.t.delete(key)
        return [text]
    assert t is not None
    # the name's exclusive lock: no alias of it moves between the check below and the
    # deletes (a move holds the name's shared lock from its own check of the version's
    # ref to its write), and remote gc is not running (docs/remotes.md)
    with held(s.repo.t, exclusive=True, operation=f"delete {text}", name=t.name) as lock:
        targets = _delete_targets(s, t)
        versions = {str(x.version) for x in targets}
        bad: dict[str, str] = {}
        aliases = read_aliases(s.repo, t.name, bad)
        if bad:
            raise IntegrityError(
                f"cannot delete {text}: {next(iter(bad.values()))}, so whether it points at "
                f"{text} is unknown; fix or remove that alias first"
            )
        held_by = [a for a in aliases if a.version in versions]
        if held_by:
            a = held_by[0]
            where = shlex.quote(s.spec)
            raise ModelExists(
                f"{a} points at {a.tag} on {s.repo.url}: nothing deleted; remove that remote "
                f"alias first (`mv delete {a} --remote {where}`) or move it (`mv alias set "
                f"{a} {a.name}:VERSION` then `mv push {a} {where}`)"
            )
        lock.check()
        for target in targets:
            s.repo.t.delete(ref_key(target))
            s.repo.forget_ref(target)
    return [str(x) for x in targets]


def _delete_targets(s: Session, t: Tag) -> list[Tag]:
    """The versions ``delete_remote(t)`` removes (refs read from the remote itself).

    Raises:
        NotFound: none.
    """
    damaged: list[Tag] = []
    if t.is_latest:  # name (every version) or name:latest (the newest by its ref)
        refs = s.repo.refs(t.name, damaged, fresh=True)
        targets = [r.tag for r in refs] + (damaged if t.version is None else [])
        if t.version is not None:
            targets = targets[:1]
        if not targets:
            raise s.not_there(f"no model named {t.name!r} is on")
        return targets
    try:
        found = s.repo.read_ref(t) is not None
    except IntegrityError:  # a damaged ref: removing it is its repair
        found = True
    if not found:
        raise s.not_there(f"model {t} is not on")
    return [t]


# -- reading objects from remote packs --------------------------------------------------


@dataclass
class _Span:
    pack: str
    start: int
    end: int
    items: list[tuple[bytes, Entry]]


def _spans(items: list[tuple[bytes, Entry]], gap: int = SPAN_GAP) -> list[_Span]:
    """Neighbouring objects of one pack merged into reads of at most SPAN_MAX bytes
    (each read starts at the first object's record header)."""
    items = sorted(items, key=lambda it: (it[1].pack, it[1].offset))
    spans: list[_Span] = []
    for oid, e in items:
        start = e.offset - RECORD_HEADER.size
        end = e.offset + e.stored_len
        last = spans[-1] if spans else None
        if (
            last is not None
            and last.pack == e.pack
            and start - last.end <= gap
            and end - last.start <= SPAN_MAX
        ):
            last.end = max(last.end, end)
            last.items.append((oid, e))
        else:
            spans.append(_Span(e.pack, start, end, [(oid, e)]))
    return spans


def _payload(span: _Span, data: bytes, e: Entry) -> memoryview:
    view = memoryview(data)
    return view[e.offset - span.start : e.offset - span.start + e.stored_len]


def _fetch(s: Session, items: list[tuple[bytes, Entry]]) -> Iterator[tuple[_Span, bytes | None]]:
    """Each span of ``items`` with its bytes (None: the pack is gone), ``jobs`` at once."""

    def read(span: _Span) -> bytes | None:
        try:
            key = pack_key(span.pack)
            (data,) = s.repo.t.get_ranges(key, [(span.start, span.end - span.start)])
        except NotFound:
            return None
        return data

    spans = _spans(items)
    with ThreadPoolExecutor(s.jobs, thread_name_prefix="modelvault-rmaint") as pool:
        yield from ordered_map(pool, read, spans, s.jobs + 2)


def _children_of(kind: ObjType, raw: bytes) -> list[tuple[bytes, ObjType]] | None:
    try:
        info = graph.decode_info(kind, raw)
    except ValueError:
        return None
    return [(oid, k) for k, oid, _ in info[2]]


def _mark(
    repo: Repository,
    s: Session,
    where: Mapping[bytes, Entry],
    roots: list[bytes],
    progress: RemoteProgressCallback | None,
) -> tuple[set[bytes], dict[bytes, list[tuple[bytes, ObjType]] | None]]:
    """Every id the model ids ``roots`` reach and the children of each metadata object
    (None: missing or damaged), reading a level at a time: from the local store when it
    holds the object intact, else from the remote (one ranged read per neighbourhood)."""
    memo: dict[bytes, list[tuple[bytes, ObjType]] | None] = {}
    level = [(oid, ObjType.MODEL) for oid in dict.fromkeys(roots)]
    seen: set[bytes] = set()
    done = 0
    while level:
        fresh = [(o, k) for o, k in level if o not in seen]
        seen.update(o for o, _ in fresh)
        meta = [(o, k) for o, k in fresh if k != ObjType.CHUNK]
        remote: list[tuple[bytes, Entry]] = []
        kinds = dict(meta)
        for oid, kind in meta:
            if repo.objects.has(oid):
                try:
                    memo[oid] = _children_of(kind, repo.objects.read(oid, kind))
                    if memo[oid] is not None:
                        continue
                except (NotFound, IntegrityError):
                    pass
            e = where.get(oid)
            if e is None:
                memo[oid] = None
            else:
                remote.append((oid, e))
        for span, data in _fetch(s, remote):
            for oid, e in span.items:
                kids = None
                if data is not None:
                    try:
                        raw = verify_payload(oid, e, _payload(span, data, e), kinds[oid])
                        kids = _children_of(kinds[oid], bytes(raw))
                    except IntegrityError:
                        kids = None
                memo[oid] = kids
        done += len(fresh)
        if progress is not None:
            progress(RemoteProgress("marking", done, 0, 0, 0))
        level = [kid for o, _ in meta for kid in (memo.get(o) or [])]
    return seen, memo


# -- gc ---------------------------------------------------------------------------------


def _pack_size(entries: Mapping[bytes, Entry]) -> int:
    return max((e.offset + e.stored_len for e in entries.values()), default=FILE_HEADER.size)


def _index_size(entries: Mapping[bytes, Entry]) -> int:
    return FILE_HEADER.size + 4 + IDX_ENTRY.size * len(entries) + 64


def gc_remote(
    repo: Repository,
    url: str,
    options: Mapping[str, Any] | None = None,
    *,
    spec: str | None = None,
    progress: RemoteProgressCallback | None = None,
    jobs: int = JOBS,
    repack_unused: float = REPACK_UNUSED,
) -> int:
    """Free what no remote tag or alias reaches; returns the bytes freed (all given
    back by the time it returns). See module docs and docs/remotes.md.

    Raises:
        IntegrityError: a ref or alias is unreadable, or a tag reaches a missing or
            damaged object (nothing is freed).
        RemoteError: the remote is locked by a push (or another gc) that stayed, its
            lock was lost, or the remote failed.
    """
    s = open_session(repo, url, options, spec, jobs)
    if not s.repo.check_format(create=False):
        return 0
    s.repo.check_format(create=True)  # format 3 first: older clients now refuse it
    with held(s.repo.t, exclusive=True, operation="gc") as lock:
        return _gc(repo, s, lock, progress, repack_unused)


def _gc(
    repo: Repository,
    s: Session,
    lock: RemoteLock,
    progress: RemoteProgressCallback | None,
    repack_unused: float,
) -> int:
    r = s.repo
    # No alias moves and no version is deleted while gc holds its lock (a move holds its
    # name's shared lock, a delete the name's exclusive one), so these roots stay exact.
    # Aliases are read first all the same, and their model ids kept as roots even when
    # their version's ref is gone (a remote damaged by hand, or by a modelvault whose
    # delete took no lock): an alias never loses its objects to gc.
    aliases = read_aliases(r)
    damaged: list[Tag] = []
    refs = r.refs(None, damaged, fresh=True)
    if damaged:
        raise IntegrityError(
            f"remote gc stopped, nothing freed: the refs of {', '.join(map(str, damaged[:5]))} "
            f"on {r.url} are damaged; delete them (`mv delete TAG --remote ...`) or restore them"
        )
    packs, damaged_idx = r.pack_indexes()
    where: dict[bytes, Entry] = {}
    for name in sorted(packs):
        for oid, e in packs[name].items():
            where.setdefault(oid, e)
    roots = [x.model_id for x in refs] + [a.model_id for a in aliases]
    _, memo = _mark(repo, s, where, roots, progress)
    live, missing = graph.reachable(roots, lambda o, k: memo.get(o), lambda o: o in where)
    if missing:

        def broken(model_id: bytes) -> bool:
            kids = lambda o, k: memo.get(o)  # noqa: E731
            return bool(graph.reachable([model_id], kids, where.__contains__)[1])

        names = [str(x.tag) for x in refs if broken(x.model_id)]
        names += [str(a) for a in aliases if broken(a.model_id)]
        hint = f"; {len(damaged_idx)} damaged index(es) may list them" if damaged_idx else ""
        raise IntegrityError(
            f"remote gc stopped, nothing freed: {', '.join(names[:5])} on {r.url} reach "
            f"{len(missing)} missing or damaged objects{hint}; run `mv verify --remote ...`"
        )
    owner = _owners(packs, live)
    dead: list[str] = []
    repack: list[str] = []
    for name, entries in sorted(packs.items()):
        used = [e for oid, e in entries.items() if owner.get(oid) == name]
        if not used:
            dead.append(name)
            continue
        size = _pack_size(entries)
        used_bytes = FILE_HEADER.size + sum(RECORD_HEADER.size + e.stored_len for e in used)
        if (size - used_bytes) > repack_unused * size:
            repack.append(name)
    orphans = _orphans(r, set(packs) | set(damaged_idx))
    freed = sum(_pack_size(packs[n]) + _index_size(packs[n]) for n in dead + repack)
    written, made = _repack(s, lock, packs, repack, owner, progress)
    freed -= written
    lock.check(on_remote=True)
    # a pack just written may bear the name of an orphan (the same repack, killed
    # before its index) or, in theory, of a pack to drop: those stay
    gone = [n for n in dead + repack if n not in made]
    orphans = [n for n in orphans if n not in made]
    total = len(gone) + len(orphans)

    def drop(name: str) -> None:
        lock.check()
        r.t.delete(index_key(name))  # invisible first, then gone
        r.forget_index(name)
        r.t.delete(pack_key(name))

    def drop_orphan(name: str) -> None:
        lock.check()
        r.t.delete(pack_key(name))

    with ThreadPoolExecutor(s.jobs, thread_name_prefix="modelvault-rgc") as pool:
        done = 0
        for _ in pool.map(drop, gone):
            done += 1
            if progress is not None:
                progress(RemoteProgress("deleting", done, 0, total, 0))
        for _ in pool.map(drop_orphan, orphans):
            done += 1
            if progress is not None:
                progress(RemoteProgress("deleting", done, 0, total, 0))
    lock.check()
    try:  # one catalogue of what is left (11.11): a shortcut, the space is freed already
        r.update_catalogue((set(packs) - set(gone)) | made, rewrite=True)
    except RemoteError as exc:
        logger.warning(f"{r.url}: the catalogue was not rewritten ({exc})")
    return freed


def _owners(packs: Mapping[str, Mapping[bytes, Entry]], live: set[bytes]) -> dict[bytes, str]:
    """For each live object, the one pack whose copy is kept: among the packs holding
    it, the one with the most live bytes (ties: the smaller name), so copies pushed twice
    by concurrent pushes end up in one pack."""
    weight = {
        name: sum(e.stored_len for oid, e in entries.items() if oid in live)
        for name, entries in packs.items()
    }
    owner: dict[bytes, str] = {}
    for name in sorted(packs, key=lambda n: (-weight[n], n)):
        for oid in packs[name]:
            if oid in live:
                owner.setdefault(oid, name)
    return owner


def _orphans(r: RemoteRepo, indexed: set[str]) -> list[str]:
    """Packs without index (an interrupted push or gc): never visible, so garbage."""
    out = []
    for key in r.t.list(PACKS):
        if key.endswith(".pack") and PACK_INDEX_KEY.fullmatch(key[: -len(".pack")] + ".idx"):
            name = key[len(PACKS) + 1 : -len(".pack")]
            if name not in indexed:
                out.append(name)
    return out


def _repack(
    s: Session,
    lock: RemoteLock,
    packs: Mapping[str, Mapping[bytes, Entry]],
    names: list[str],
    owner: Mapping[bytes, str],
    progress: RemoteProgressCallback | None,
) -> tuple[int, set[str]]:
    """Copy the kept objects of ``names`` into new packs (each verified; pack, then
    index); returns the bytes the new packs and indexes take, and their names."""
    items = [(oid, e) for n in names for oid, e in packs[n].items() if owner.get(oid) == n]
    total_bytes = sum(e.stored_len for _, e in items)
    written = done_objects = done_bytes = 0
    batch: list[tuple[int, bytes, int, int, bytes]] = []
    batch_bytes = 0
    made: set[str] = set()

    def flush() -> int:
        nonlocal batch, batch_bytes
        if not batch:
            return 0
        lock.check()
        data, pack = build_pack(batch)
        idx = pack.index()
        s.repo.t.put(pack_key(pack.name), data)
        s.repo.t.put(index_key(pack.name), idx)
        s.repo.remember_index(pack.name, idx)
        made.add(pack.name)
        batch, batch_bytes = [], 0
        return len(data) + len(idx)

    for span, data in _fetch(s, items):
        if data is None:
            raise IntegrityError(
                f"remote gc stopped: pack {span.pack} left {s.repo.url} while it was being "
                "repacked (is another gc running without a lock?); nothing it held was lost"
            )
        for oid, e in span.items:
            payload = bytes(_payload(span, data, e))
            try:
                verify_payload(oid, e, payload, None)  # never copy damage forward
            except IntegrityError as exc:
                raise IntegrityError(
                    f"remote gc stopped: {s.repo.url}, pack {span.pack}: {exc}; run "
                    "`mv verify --remote ...` (nothing was lost)"
                ) from None
            batch.append((e.kind, oid, e.codec, e.raw_len, payload))
            batch_bytes += len(payload)
            done_objects += 1
            done_bytes += len(payload)
            if batch_bytes >= REPACK_TARGET:
                written += flush()
        if progress is not None:
            progress(RemoteProgress("repacking", done_objects, done_bytes, len(items), total_bytes))
    written += flush()
    return written, made
