"""The one walker of model -> tree -> file -> chunk, over any source of objects.

A source is a function ``info(oid) -> Info | None`` giving an object's kind, size and
children (None when the source lacks it): the local pack database, an archive being
read, a remote. Each child carries the size its parent says it has, so a walker can
check sizes against the objects themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from modelvault.core.hashing import ObjType
from modelvault.core.objects import KIND_TREE, FileObject, ModelObject, TreeObject

__all__ = ["Child", "Info", "decode_info", "model_info", "reachable", "walk"]

Child = tuple[ObjType, bytes, "int | None"]  # kind, id, and the size the parent says it has
Info = tuple[ObjType, int, list[Child]]  # an object's kind, size and children


def decode_info(kind: ObjType, raw: bytes) -> Info:
    """Kind, size and children of a metadata object; ValueError if it is malformed."""
    if kind == ObjType.MODEL:
        return model_info(ModelObject.decode(raw))
    if kind == ObjType.TREE:
        entries = TreeObject.decode(raw).entries
        kids: list[Child] = [
            (ObjType.TREE if e.kind == KIND_TREE else ObjType.FILE, e.oid, e.size) for e in entries
        ]
        return kind, sum(e.size for e in entries), kids
    f = FileObject.decode(raw)
    return kind, f.size, [(ObjType.CHUNK, cid, n) for cid, n in f.chunks]


def model_info(m: ModelObject) -> Info:
    """Kind, size and children of a decoded model object."""
    co: list[Child] = [(ObjType.FILE, m.custom_objects, None)] if m.custom_objects else []
    return ObjType.MODEL, m.size, [(ObjType.TREE, m.tree, m.size), *co]


def walk(
    root: bytes, skip: set[bytes], info: Callable[[bytes], Info | None]
) -> Iterator[tuple[bytes, Info | None]]:
    """Every object ``root`` reaches, once each, depth first, with its info (None: absent).

    ``skip`` cuts branches: neither those ids nor what only they reach are visited.
    """
    stack = [root]
    seen: set[bytes] = set()
    while stack:
        oid = stack.pop()
        if oid in seen or oid in skip:
            continue
        seen.add(oid)
        found = info(oid)
        yield oid, found
        if found is not None:
            stack.extend(c for _, c, _ in reversed(found[2]))


def reachable(
    roots: Iterable[bytes],
    children: Callable[[bytes, ObjType], list[tuple[bytes, ObjType]] | None],
    present: Callable[[bytes], bool],
) -> tuple[set[bytes], set[bytes]]:
    """``(every id the model ids ``roots`` reach, ids among them absent or unreadable)``.

    ``children(oid, kind)`` lists what a model, tree or file object refers to, or None
    when it cannot be read; chunks are never read, only checked with ``present``.
    """
    seen: set[bytes] = set()
    missing: set[bytes] = set()
    todo = [(oid, ObjType.MODEL) for oid in roots]
    while todo:
        oid, kind = todo.pop()
        if oid in seen:
            continue
        seen.add(oid)
        if kind == ObjType.CHUNK:
            continue
        kids = children(oid, kind)
        if kids is None:
            missing.add(oid)
        else:
            todo.extend(kids)
    missing |= {c for c in seen if not present(c)}
    return seen, missing
