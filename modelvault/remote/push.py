"""Push: list the remote's packs and read the indexes not cached yet (never one request
per object), send the missing objects as packs (a local pack whose objects are all missing
is sent as it is; the rest are packed anew), several at a time, each pack before its
index, and create the tag last, create-only. See :mod:`modelvault.remote.sync`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from modelvault.aliases import AliasValue
from modelvault.core.packfmt import Entry
from modelvault.errors import IntegrityError, ModelExists, RemoteError
from modelvault.odb.packs import CHECK_GROUP, CHECK_RUN, Record, build_pack, verify_all
from modelvault.refs import RefValue
from modelvault.remote.aliases import move_remote_alias
from modelvault.remote.base import Bytes
from modelvault.remote.locks import held
from modelvault.remote.repo import RemoteRepo
from modelvault.remote.session import (
    JOBS,
    ProgressCallback,
    Session,
    Tally,
    TransferResult,
    open_session,
)
from modelvault.repo import Repository, maintenance
from modelvault.repo.layout import index_key, pack_key
from modelvault.tags import Tag

if TYPE_CHECKING:
    from modelvault.odb import PackDB

__all__ = ["REPACK_TARGET", "push"]

logger = logging.getLogger("modelvault.remote")

REPACK_TARGET = 32 * 1024 * 1024  # size of packs built for a push


@dataclass
class _Upload:
    """One pack to send: a local pack as it is, or objects to pack anew."""

    local: str | None
    ids: list[bytes] = field(default_factory=list)
    objects: int = 0
    nbytes: int = 0


def push(
    repo: Repository,
    tag: str | Tag,
    url: str,
    options: Mapping[str, Any] | None = None,
    *,
    spec: str | None = None,
    progress: ProgressCallback | None = None,
    jobs: int = JOBS,
    alias: str | None = None,
) -> TransferResult:
    """Send ``tag`` (``name`` = its newest local version) to the remote at ``url``; see
    module docs.

    Sends only objects the remote lacks, then creates the tag there (create-only).
    Pushing a tag the remote holds with the same model moves no object. With ``alias``,
    the remote's ``name@alias`` is then moved to that version (one conditional write).

    Raises:
        NotFound: no such local model.
        ModelExists: the remote holds another model under that ``name:version``.
        IntegrityError: a local object the tag reaches is missing or damaged.
        RemoteError: the remote failed (after retries), with its URL and the cause.
    """
    ref = repo.refs.resolve(Tag.coerce(tag))
    s = open_session(repo, url, options, spec, jobs)
    s.repo.check_format(create=True)
    if _remote_has(s.repo, ref):
        if alias is not None:  # the name's shared lock: no delete_remote of the version
            # between the check that its ref is there and the move (docs/remotes.md)
            move = f"move {ref.tag.name}@{alias}"
            with held(s.repo.t, exclusive=False, operation=move, name=ref.tag.name) as lock:
                if not _remote_has(s.repo, ref):  # read again: deleted, or another model
                    raise s.not_there(f"{ref.tag} is no longer on", "; push it as a new version")
                lock.check()
                move_remote_alias(s.repo.t, AliasValue.of(alias, ref))
        return s.result(0, ref.tag)
    # a shared remote lock from before deciding what the remote has until the tag is
    # published (and its alias moved): remote gc (exclusive) never deletes what this
    # push counts on, nor delete_remote the version an alias is moving to (locks.py)
    with held(s.repo.t, exclusive=False, operation=f"push {ref.tag}", name=ref.tag.name) as lock:
        with repo.gc_lock(shared=True):
            reach, missing = maintenance.reachable(repo, [ref.model_id])
            if missing:
                raise IntegrityError(
                    f"cannot push {ref.tag}: {len(missing)} of its objects are missing or "
                    "damaged in the local store (run `mv verify`)"
                )
            index = s.repo.index()
            needed = reach - index.entries.keys()
            uploads = _plan(repo.objects, needed)
            sent = _send_all(repo.objects, s, uploads, progress)
        lock.check(on_remote=True)
        if not s.repo.create_ref(ref):
            _remote_has(s.repo, ref)  # the same model raced in (fine), or ModelExists
        if alias is not None:  # the version is there: now the alias may name it
            move_remote_alias(s.repo.t, AliasValue.of(alias, ref))
        if uploads:  # new packs: keep the remote's catalogue short (a shortcut only)
            try:
                s.repo.update_catalogue()
            except RemoteError as exc:
                logger.warning(f"{s.repo.url}: the catalogue was not updated ({exc})")
    return s.result(sent, ref.tag)


def _remote_has(repo: RemoteRepo, ref: RefValue) -> bool:
    """True if the remote holds this exact ref; ModelExists if it holds another model."""
    there = repo.read_ref(ref.tag)
    if there is None:
        return False
    if there.model_id != ref.model_id:
        raise ModelExists(
            f"{repo.url} holds another model under {ref.tag} "
            f"({there.model_id.hex()[:12]}, here {ref.model_id.hex()[:12]}): versions are immutable"
        )
    return True


def _plan(db: PackDB, needed: set[bytes]) -> list[_Upload]:
    """Group the needed objects into packs to send, largest local packs first."""
    by_pack: dict[str, list[tuple[bytes, Entry]]] = {}
    for oid in needed:
        e = db.entry(oid)
        if e is None:
            raise IntegrityError(f"object {oid.hex()} vanished from the local store")
        by_pack.setdefault(e.pack, []).append((oid, e))
    whole: list[_Upload] = []
    loose: list[tuple[bytes, Entry]] = []
    for pack, items in by_pack.items():
        if len(items) == len(db.entries_of(pack)):
            size = (db.pack_dir / f"{pack}.pack").stat().st_size
            whole.append(_Upload(pack, objects=len(items), nbytes=size))
        else:
            loose += items
    loose.sort(key=lambda item: (item[1].pack, item[1].offset))
    rebuilt: list[_Upload] = []
    for oid, e in loose:
        if not rebuilt or rebuilt[-1].nbytes >= REPACK_TARGET:
            rebuilt.append(_Upload(None))
        up = rebuilt[-1]
        up.ids.append(oid)
        up.objects += 1
        up.nbytes += e.stored_len
    return sorted(whole, key=lambda u: -u.nbytes) + rebuilt


def _send_all(
    db: PackDB, s: Session, uploads: list[_Upload], progress: ProgressCallback | None
) -> int:
    """Send every upload, ``s.jobs`` at a time. ``progress`` hears of the totals before
    the first byte goes, then of the bytes as the transport reports them (a part, a
    piece: docs/remotes.md, "Progress") and of the objects as each pack lands."""
    total_objects = sum(u.objects for u in uploads)
    total_bytes = sum(u.nbytes for u in uploads)  # rebuilt packs: estimated until built
    tally = Tally(progress, total_objects, total_bytes)
    tally.report()
    relay = tally.relay()
    with ThreadPoolExecutor(s.jobs, thread_name_prefix="modelvault-push") as pool:
        pending = {relay.watch(pool.submit(_send, db, s.repo, up, relay.add)) for up in uploads}
        try:
            while pending:
                relay.until(lambda: any(f.done() for f in pending))
                for fut in [f for f in pending if f.done()]:
                    pending.discard(fut)
                    planned, sent = fut.result()
                    tally.objects += planned.objects
                    tally.total_bytes += sent.nbytes - planned.nbytes  # the built pack's size
                    tally.report()
        finally:
            for fut in pending:
                fut.cancel()
    return tally.objects


def _send(db: PackDB, repo: RemoteRepo, up: _Upload, told: Bytes) -> tuple[_Upload, _Upload]:
    """Upload one pack (``told`` hears of its bytes as they go), then its index (the
    index makes the pack visible). Returns the upload as planned and as sent."""
    if up.local is not None:
        path = db.pack_dir / f"{up.local}.pack"
        wrong = db.check_pack_file(up.local)
        if wrong is None and db.verify_pack(up.local):
            wrong = "objects do not match their ids"
        if wrong is not None:  # never spread damage to the remote
            raise IntegrityError(f"local pack {up.local} is damaged ({wrong}): run `mv verify`")
        idx = (db.pack_dir / f"{up.local}.idx").read_bytes()
        repo.t.upload(pack_key(up.local), path, told)
        repo.t.put(index_key(up.local), idx)
        repo.remember_index(up.local, idx)
        return up, up
    data, pack = build_pack(_verified(db, up.ids))  # the local packs' layout, one builder
    idx = pack.index()
    repo.t.upload(pack_key(pack.name), data, told)
    repo.t.put(index_key(pack.name), idx)
    repo.remember_index(pack.name, idx)
    return up, replace(up, local=None, nbytes=len(data))


def _verified(db: PackDB, ids: list[bytes]) -> Iterator[Record]:
    """The stored records of ``ids``, each checked against its id (never copy damage
    forward), a group at a time (:func:`verify_all`)."""
    scratch = bytearray(CHECK_RUN)
    for k in range(0, len(ids), CHECK_GROUP):
        group = [(oid, *db.read_stored(oid)) for oid in ids[k : k + CHECK_GROUP]]
        verify_all(group, None, scratch)
        for oid, e, payload in group:
            yield e.kind, oid, e.codec, e.raw_len, payload
