"""The metadata objects (file, tree, model) and their msgpack encodings.

Decoding validates shape and names, since objects may come from untrusted
archives or remotes: a tree entry name is one path component, never ``..``,
never containing ``/`` or NUL.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from modelvault.core.hashing import ID_LEN

__all__ = [
    "KINDS",
    "KIND_EXEC",
    "KIND_FILE",
    "KIND_TREE",
    "MODEL_FIELDS",
    "FileObject",
    "ModelObject",
    "ObjectFormatError",
    "TreeEntry",
    "TreeObject",
    "check_entry_name",
    "encode_value",
]

KIND_FILE = "file"
KIND_EXEC = "exec"
KIND_TREE = "tree"
KINDS = (KIND_FILE, KIND_EXEC, KIND_TREE)


class ObjectFormatError(ValueError):
    """An encoded object does not have the shape its type requires."""


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes, lists: bool = True) -> Any:
    """``data`` decoded; msgpack arrays as lists, or as tuples (``lists=False``)."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=lists)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ObjectFormatError(f"not valid msgpack: {exc}") from exc


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise ObjectFormatError(what)


def _is_id(value: Any) -> bool:
    return isinstance(value, bytes) and len(value) == ID_LEN


def check_entry_name(name: Any) -> str:
    """Return ``name`` if it is a safe single path component, else raise ObjectFormatError."""
    _need(isinstance(name, str), f"entry name is not a string: {name!r}")
    ok = name not in ("", ".", "..") and "/" not in name and "\0" not in name
    _need(ok and "\\" not in name and len(name.encode()) <= 255, f"unsafe entry name {name!r}")
    return str(name)


@dataclass(frozen=True)
class FileObject:
    """One file: its size and the ``(chunk id, length)`` list that rebuilds it."""

    size: int
    chunks: list[tuple[bytes, int]]

    def encode(self) -> bytes:
        return _pack({"size": self.size, "chunks": [[cid, n] for cid, n in self.chunks]})

    @classmethod
    def decode(cls, data: bytes) -> FileObject:
        d = _unpack(data, lists=False)  # (a file has thousands of chunks: tuples as read)
        _need(isinstance(d, dict) and set(d) == {"size", "chunks"}, "bad file object")
        chunks = d["chunks"]
        _need(isinstance(chunks, tuple), "bad chunk list")
        out: list[tuple[bytes, int]] = list(chunks)
        ok = all(  # one pass in a generator
            type(c) is tuple
            and len(c) == 2
            and type(c[0]) is bytes
            and len(c[0]) == ID_LEN
            and type(c[1]) is int
            and c[1] > 0
            for c in out
        )
        _need(ok, "bad chunk entry")
        size = d["size"]
        _need(
            isinstance(size, int) and size == sum(map(operator.itemgetter(1), out)),
            "file size mismatch",
        )
        return cls(size, out)


@dataclass(frozen=True)
class TreeEntry:
    """One entry of a folder: ``kind`` is file, exec (executable file) or tree."""

    name: str
    kind: str
    oid: bytes
    size: int


@dataclass(frozen=True)
class TreeObject:
    """A folder: entries sorted by name, names unique."""

    entries: list[TreeEntry]

    def encode(self) -> bytes:
        rows = [[e.name, e.kind, e.oid, e.size] for e in sorted(self.entries, key=lambda e: e.name)]
        return _pack({"entries": rows})

    @classmethod
    def decode(cls, data: bytes) -> TreeObject:
        d = _unpack(data)
        _need(isinstance(d, dict) and set(d) == {"entries"}, "bad tree object")
        _need(isinstance(d["entries"], list), "bad tree entries")
        entries: list[TreeEntry] = []
        for row in d["entries"]:
            _need(isinstance(row, list) and len(row) == 4, "bad tree entry")
            name, kind, oid, size = row
            check_entry_name(name)
            _need(kind in KINDS and _is_id(oid), f"bad tree entry {name!r}")
            _need(isinstance(size, int) and size >= 0, f"bad size for {name!r}")
            entries.append(TreeEntry(name, kind, oid, size))
        names = [e.name for e in entries]
        _need(len(set(names)) == len(names), "duplicate entry names in a tree")
        _need(names == sorted(names), "tree entries out of order")
        return cls(entries)


MODEL_FIELDS = (
    "name",
    "version",
    "module",
    "labels",
    "metadata",
    "options",
    "signatures",
    "context",
    "api_version",
    "creation_time",
    "tree",
    "size",
    "custom_objects",
)


@dataclass(frozen=True)
class ModelObject:
    """The commit: the tree of the model's files, its tag and its info.

    ``creation_time`` is microseconds since the Unix epoch (UTC).
    ``custom_objects`` is the id of a file object holding their cloudpickle, or None.
    """

    name: str
    version: str
    module: str
    tree: bytes
    size: int
    creation_time: int
    labels: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    signatures: dict[str, dict[str, Any]] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    api_version: str = "v1"
    custom_objects: bytes | None = None

    def encode(self) -> bytes:
        return _pack({k: getattr(self, k) for k in MODEL_FIELDS})

    @classmethod
    def decode(cls, data: bytes) -> ModelObject:
        d = _unpack(data)
        _need(isinstance(d, dict) and set(d) == set(MODEL_FIELDS), "bad model object")
        _need(_is_id(d["tree"]), "bad tree id in model object")
        co = d["custom_objects"]
        _need(co is None or _is_id(co), "bad custom objects id")
        for key in ("name", "version", "module", "api_version"):
            _need(isinstance(d[key], str), f"bad {key} in model object")
        for key in ("labels", "metadata", "options", "signatures", "context"):
            _need(isinstance(d[key], dict), f"bad {key} in model object")
        for key in ("size", "creation_time"):
            _need(isinstance(d[key], int) and d[key] >= 0, f"bad {key} in model object")
        sigs = {k: _decode_signature(v) for k, v in d["signatures"].items()}
        return cls(**{**d, "signatures": sigs})

    def children(self) -> list[bytes]:
        """Ids this model object refers to directly."""
        return [self.tree] + ([self.custom_objects] if self.custom_objects else [])


def _decode_signature(value: Any) -> dict[str, Any]:
    _need(isinstance(value, dict), "bad signature")
    out = dict(value)
    if isinstance(out.get("batch_dim"), list):  # msgpack turns tuples into lists
        out["batch_dim"] = tuple(out["batch_dim"])
    return out


def encode_value(value: Any) -> bytes:
    """Encode user metadata the way model objects do (raises TypeError if impossible)."""
    return _pack(value)
