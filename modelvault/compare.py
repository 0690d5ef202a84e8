"""What two models differ in, and what a remote lacks: ``mv diff`` and ``mv status``.

Both read only metadata (model, tree and file objects) and indexes, never a chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from modelvault.core.objects import KIND_TREE, FileObject
from modelvault.odb.reading import read_file_object, read_model, read_tree
from modelvault.refs import RefValue
from modelvault.repo import Repository, maintenance

__all__ = ["Diff", "TagStatus", "diff", "files_of", "status"]


@dataclass(frozen=True)
class _File:
    oid: bytes
    size: int


class Diff(TypedDict):
    """``mv diff A B -o json``: paths relative to the model folder, sizes in bytes."""

    a: str
    b: str
    added: list[str]
    removed: list[str]
    changed: list[str]
    sizes: dict[str, int]  # each path above -> its size in B (removed: in A)
    shared_bytes: int  # bytes of B's files held by chunks A has too (what dedup saved)
    new_bytes: int  # bytes of B's files in chunks A lacks


class TagStatus(TypedDict):
    """``mv status [REMOTE] -o json``: one local tag against a remote."""

    tag: str
    on_remote: bool
    bytes_to_push: int  # stored bytes of the objects it reaches that the remote lacks


def files_of(repo: Repository, tree_id: bytes, prefix: str = "") -> Iterator[tuple[str, _File]]:
    """``(relative path, file)`` of every file under a tree, depth first, sorted by name."""
    for e in read_tree(repo.objects, tree_id).entries:
        path = f"{prefix}{e.name}"
        if e.kind == KIND_TREE:
            yield from files_of(repo, e.oid, f"{path}/")
        else:
            yield path, _File(e.oid, e.size)


def _chunks(repo: Repository, files: Mapping[str, _File]) -> dict[bytes, int]:
    """Distinct chunks of the files, with their lengths (each file object read once)."""
    out: dict[bytes, int] = {}
    seen: set[bytes] = set()
    for f in files.values():
        if f.oid in seen:
            continue
        seen.add(f.oid)
        fo: FileObject = read_file_object(repo.objects, f.oid)
        out.update(fo.chunks)
    return out


def diff(repo: Repository, a: RefValue, b: RefValue) -> Diff:
    """Files added in ``b``, removed from ``a``, changed between them, and the bytes of
    ``b`` that ``a``'s chunks already hold.

    Raises:
        IntegrityError: a metadata object of either model is missing or damaged.
    """
    fa = dict(files_of(repo, read_model(repo.objects, a.model_id).tree))
    fb = dict(files_of(repo, read_model(repo.objects, b.model_id).tree))
    added = sorted(p for p in fb if p not in fa)
    removed = sorted(p for p in fa if p not in fb)
    changed = sorted(p for p in fb if p in fa and fa[p].oid != fb[p].oid)
    sizes = {p: fb[p].size for p in added + changed} | {p: fa[p].size for p in removed}
    have = _chunks(repo, fa)
    mine = _chunks(repo, fb)
    shared = sum(n for cid, n in mine.items() if cid in have)
    return {
        "a": str(a.tag),
        "b": str(b.tag),
        "added": added,
        "removed": removed,
        "changed": changed,
        "sizes": sizes,
        "shared_bytes": shared,
        "new_bytes": sum(mine.values()) - shared,
    }


def status(
    repo: Repository,
    url: str,
    options: Mapping[str, Any] | None,
    refs: list[RefValue],
) -> list[TagStatus]:
    """For each of ``refs``: whether the remote at ``url`` holds it (the same model), and
    how many stored bytes a push of it would send now (0 when it is there).

    Reads the remote's refs listing and its pack indexes (cached locally), nothing more.

    Raises:
        RemoteError: the remote failed.
    """
    from modelvault.remote.session import open_session

    s = open_session(repo, url, options, None, 4)
    s.repo.check_format(create=False)  # a newer remote format: UnsupportedFormat
    there = {r.tag: r.model_id for r in s.repo.refs(damaged=[])}
    index = None
    out: list[TagStatus] = []
    for ref in refs:
        if there.get(ref.tag) == ref.model_id:
            out.append({"tag": str(ref.tag), "on_remote": True, "bytes_to_push": 0})
            continue
        if index is None:
            index = s.repo.index().entries
        reach, _ = maintenance.reachable(repo, [ref.model_id])
        lacking = [oid for oid in reach if oid not in index]
        entries = repo.objects.entries(lacking)
        nbytes = sum(e.stored_len for e in entries if e is not None)
        out.append({"tag": str(ref.tag), "on_remote": False, "bytes_to_push": nbytes})
    return out
