"""Push and pull: move only the objects the other side lacks, then publish the tag.

Push: list the remote's packs and read the indexes not cached yet (never one request per
object), send the missing objects as packs (a local pack whose objects are all missing is
sent as it is; the rest are packed anew), several at a time, each pack before its index,
and create the tag last, create-only. Pull: resolve the tag on the remote, walk
model -> trees -> files, fetch what the local store lacks with ranged reads of packs
(neighbouring objects merged into one read), verify every object against its id, write
them into a local pack, and publish the tag only after the pack is durable.

``progress`` (both directions) is called from the calling thread with a
:class:`TransferProgress` after each pack sent or each read received.

Every function here works on a :class:`~modelvault.repo.Repository` and a remote given as
``(url, storage options)``; turning a remote's name into those (configured remotes,
``$MODELVAULT_REMOTE``, ``origin``) is the façade's job (``modelvault.remotes.resolve``).
``spec`` is the remote as the user named it (a name or a URL), used in advice only.

The code is in :mod:`~modelvault.remote.push`, :mod:`~modelvault.remote.pull` and
:mod:`~modelvault.remote.session` (what both share); this module re-exports it and lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelvault.refs import warn_damaged
from modelvault.remote.pull import SPAN_GAP, SPAN_MAX, pull
from modelvault.remote.push import REPACK_TARGET, push
from modelvault.remote.session import (
    JOBS,
    ProgressCallback,
    TransferProgress,
    TransferResult,
    open_session,
)
from modelvault.repo import Repository
from modelvault.tags import Tag

__all__ = [
    "JOBS",
    "REPACK_TARGET",
    "SPAN_GAP",
    "SPAN_MAX",
    "ProgressCallback",
    "TransferProgress",
    "TransferResult",
    "list_remote",
    "pull",
    "push",
]


def list_remote(
    repo: Repository,
    url: str,
    options: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    spec: str | None = None,
) -> list[Tag]:
    """The tags the remote at ``url`` holds (of ``name``), newest first; ``[]`` for an
    empty remote. (``repo`` keeps the local copies of the remote's refs.)

    Raises:
        RemoteError: the remote failed (after retries).
    """
    s = open_session(repo, url, options, spec, JOBS)
    if not s.repo.check_format(create=False):
        return []
    only = Tag.coerce(name).name if name else None
    damaged: list[Tag] = []
    refs = [s.repo.checked_ref(r) or r for r in s.repo.refs(only, damaged)]
    warn_damaged(damaged, s.repo.url)
    return [r.tag for r in sorted(refs, key=lambda r: (r.created, r.tag.version), reverse=True)]
