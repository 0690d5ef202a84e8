"""Remote aliases: ``aliases/<name>/<alias>`` on a remote, the same JSON document as a
local alias (``{"version": ..., "model": ...}``, docs/format.md section 11).

A move is one conditional write (:meth:`Transport.put_if_match`): on S3 a PutObject with
``If-Match`` on the ETag just read (``If-None-Match: *`` when the alias is new), on
``file://`` a check and a rename under a lock, on ``memory://`` under a process lock.
When another machine moved the alias in between, the write is refused and the move
starts again from what is there now, so two machines moving one alias at once leave it
on one of their two versions. An alias is moved only once its version's ref is on the
remote (push sends the version first). Remote gc (:mod:`modelvault.remote.maintenance`)
reads these keys as roots.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from modelvault.aliases import SEP, AliasValue, check_alias
from modelvault.errors import IntegrityError, InvalidTag, NotFound, RemoteError
from modelvault.refs import RefValue
from modelvault.remote.base import Transport
from modelvault.remote.repo import decode_ref
from modelvault.remote.session import JOBS, Session, open_session
from modelvault.repo import Repository
from modelvault.repo.layout import ALIASES, alias_key, ref_key
from modelvault.tags import Tag

__all__ = [
    "MOVE_ATTEMPTS",
    "aliases_remote",
    "list_remote_aliases",
    "move_remote_alias",
    "read_remote_alias",
    "remote_alias_ref",
]

MOVE_ATTEMPTS = 10  # a move refused this often in a row: the alias is being fought over
MOVE_BACKOFF = 0.005  # seconds: a refused move waits up to this, doubled each time, jittered
_JITTER = random.SystemRandom()  # not the global generator, which scripts seed alike
_sleep = time.sleep  # (tests record the waits here)


def _decode(url: str, name: str, alias: str, data: bytes) -> AliasValue:
    try:
        return AliasValue.decode(name, alias, data)
    except ValueError as exc:
        raise IntegrityError(
            f"the alias {name}{SEP}{alias} on {url} ({alias_key(name, alias)}) is damaged "
            f"({exc}): point it at a version again (`mv alias set {name}{SEP}{alias} "
            f"{name}:VERSION` then `mv push {name}{SEP}{alias} REMOTE`: a push replaces it)"
        ) from exc


def read_remote_alias(t: Transport, name: str, alias: str) -> tuple[AliasValue, str] | None:
    """The remote alias and its version token, or None if absent.

    Raises:
        IntegrityError: the alias document is damaged.
    """
    try:
        data, token = t.get_versioned(alias_key(name, alias))
    except NotFound:
        return None
    return _decode(t.url, name, alias, data), token


def move_remote_alias(t: Transport, value: AliasValue) -> bool:
    """Point the remote alias at ``value`` (its version must be on the remote): one read
    and one conditional write, again from the fresh state while another writer wins in
    between. Returns False when the alias already said so (nothing written). A refused
    move waits a random time, up to :data:`MOVE_BACKOFF` doubled per refusal (at most
    ~2.6 s in all), so writers fighting over one alias stop colliding in lockstep.

    Raises:
        RemoteError: refused :data:`MOVE_ATTEMPTS` times in a row.
    """
    key = alias_key(value.name, value.alias)
    for attempt in range(MOVE_ATTEMPTS):
        if attempt:
            _sleep(_JITTER.uniform(0, MOVE_BACKOFF * 2 ** (attempt - 1)))
        try:
            data, token = t.get_versioned(key)
        except NotFound:
            token = None
        else:
            with contextlib.suppress(ValueError):  # a damaged alias is simply replaced
                now = AliasValue.decode(value.name, value.alias, data)
                if (now.version, now.model_id) == (value.version, value.model_id):
                    return False
        if t.put_if_match(key, value.encode(), token):
            return True
    raise RemoteError(
        f"could not move the alias {value.key} on {t.url}: other writers moved it "
        f"{MOVE_ATTEMPTS} times meanwhile; try again"
    )


def remote_alias_ref(s: Session, name: str, alias: str) -> RefValue:
    """The remote ref of the version ``name@alias`` names on the remote.

    Raises:
        NotFound: no such alias there, or its version is missing there (a damaged remote).
        IntegrityError: the alias is damaged, or names another model than the version.
    """
    found = read_remote_alias(s.repo.t, name, alias)
    if found is None:
        raise s.not_there(f"the alias {name}{SEP}{alias} is not on")
    value, _ = found
    try:
        data = s.repo.t.get(ref_key(value.tag))  # fresh: the local copy may outlive it
    except NotFound:
        raise NotFound(
            f"the alias {value.key} on {s.repo.url} names {value.tag}, which that remote "
            f"lacks (a damaged remote): push {value.tag} there again, or move the alias"
        ) from None
    ref = decode_ref(value.tag, data, f"{s.repo.url}/{ref_key(value.tag)}")
    if ref.model_id != value.model_id:
        raise IntegrityError(
            f"the alias {value.key} on {s.repo.url} names {value.tag} as model "
            f"{value.model_id.hex()[:12]}, but the remote's {value.tag} is "
            f"{ref.model_id.hex()[:12]}: move the alias there again"
        )
    return ref


def list_remote_aliases(
    t: Transport, name: str | None = None, damaged: list[str] | None = None, jobs: int = JOBS
) -> list[AliasValue]:
    """Every alias on the remote (of ``name``), sorted by ``name@alias``; keys that are
    not aliases are ignored, damaged documents collected in ``damaged`` (else raised).

    Raises:
        IntegrityError: an alias is damaged (unless ``damaged`` collects it).
    """
    prefix = f"{ALIASES}/{name}" if name else ALIASES
    pairs = []
    for key in t.list(prefix):
        parts = key.split("/")
        if len(parts) != 3:
            continue
        with contextlib.suppress(InvalidTag):
            if Tag(parts[1]).name == parts[1] and check_alias(parts[2]) == parts[2]:
                pairs.append((parts[1], parts[2]))

    def read(pair: tuple[str, str]) -> AliasValue | str | None:
        try:
            found = read_remote_alias(t, *pair)
        except IntegrityError:
            if damaged is None:
                raise
            return f"{pair[0]}{SEP}{pair[1]}"
        return None if found is None else found[0]

    with ThreadPoolExecutor(jobs, thread_name_prefix="modelvault-aliases") as pool:
        got = list(pool.map(read, pairs))
    if damaged is not None:
        damaged.extend(v for v in got if isinstance(v, str))
    return sorted((v for v in got if isinstance(v, AliasValue)), key=lambda v: v.key)


def aliases_remote(
    repo: Repository,
    url: str,
    options: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    spec: str | None = None,
) -> dict[str, Tag]:
    """``{"name@alias": Tag}`` of the remote at ``url`` (of ``name``); ``{}`` for an empty
    remote. Damaged aliases are skipped with a warning.

    Raises:
        RemoteError: the remote failed (after retries).
    """
    from modelvault.aliases import logger

    s = open_session(repo, url, options, spec, JOBS)
    if not s.repo.check_format(create=False):
        return {}
    only = Tag.coerce(name).name if name else None
    damaged: list[str] = []
    values = list_remote_aliases(s.repo.t, only, damaged)
    if damaged:
        logger.warning(
            f"skipped {len(damaged)} damaged alias(es) on {s.repo.url}: "
            f"{', '.join(sorted(damaged)[:5])}; `mv push NAME@ALIAS` replaces each"
        )
    return {v.key: v.tag for v in values}
