"""Reading the metadata objects (model, tree, file) of a pack database, decoded."""

from __future__ import annotations

from modelvault.core.hashing import ObjType
from modelvault.core.objects import KIND_TREE, FileObject, ModelObject, TreeObject
from modelvault.errors import IntegrityError, NotFound
from modelvault.odb.packs import PackDB

__all__ = ["lookup", "read_file_object", "read_model", "read_tree"]


def read_model(db: PackDB, oid: bytes) -> ModelObject:
    """Load and decode a model object (raises IntegrityError if missing or malformed)."""
    try:
        return ModelObject.decode(db.read(oid, ObjType.MODEL))
    except ValueError as exc:
        raise IntegrityError(f"model object {oid.hex()} is malformed: {exc}") from exc


def read_tree(db: PackDB, oid: bytes) -> TreeObject:
    """Load and decode a tree object (raises IntegrityError if missing or malformed)."""
    try:
        return TreeObject.decode(db.read(oid, ObjType.TREE))
    except ValueError as exc:
        raise IntegrityError(f"tree {oid.hex()} is malformed: {exc}") from exc


def read_file_object(db: PackDB, oid: bytes) -> FileObject:
    """Load and decode a file object (raises IntegrityError if missing or malformed)."""
    try:
        return FileObject.decode(db.read(oid, ObjType.FILE))
    except ValueError as exc:
        raise IntegrityError(f"file object {oid.hex()} is malformed: {exc}") from exc


def lookup(db: PackDB, tree_id: bytes, relpath: str) -> tuple[str, bytes]:
    """Find ``relpath`` (``/``-separated) in a tree; returns (kind, id).

    Raises:
        NotFound: no such entry.
    """
    parts = [p for p in relpath.replace("\\", "/").split("/") if p not in ("", ".")]
    kind, oid = KIND_TREE, tree_id
    for i, part in enumerate(parts):
        if kind != KIND_TREE:
            raise NotFound(f"{'/'.join(parts[:i])} is a file, not a folder")
        entry = next((e for e in read_tree(db, oid).entries if e.name == part), None)
        if entry is None:
            raise NotFound(f"no file {relpath!r} in the model")
        kind, oid = entry.kind, entry.oid
    return kind, oid
