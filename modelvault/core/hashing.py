"""Content ids: BLAKE3 over a one-byte object type followed by the object's raw bytes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Protocol

from blake3 import blake3

__all__ = [
    "ID_LEN",
    "ObjType",
    "matching_ids",
    "object_id",
    "object_ids",
    "parse_hex_id",
]

ID_LEN = 32


class ObjType(IntEnum):
    """The kinds of stored objects; the value is the byte that prefixes the hashed bytes."""

    CHUNK = 1  # bytes of a file, cut by content-defined chunking
    FILE = 2  # msgpack: the ordered chunk list of one file
    TREE = 3  # msgpack: a folder's entries
    MODEL = 4  # msgpack: the commit — tree, tag, info


def _blake3_id(kind: int, data: bytes | memoryview) -> bytes:
    h = blake3(bytes((kind,)))
    h.update(data)
    return h.digest()


def _id_function() -> Callable[[int, bytes | memoryview], bytes]:
    """The compiled hash (``modelvault/_cdc.c``), which hashes all of a chunk with AVX-512
    or AVX2 where the blake3 package, given the type byte first, hashes ~90% of it that
    way; the blake3 package when it was not built (the ids are the same)."""
    try:
        from modelvault._cdc import object_id as native
    except ImportError:
        return _blake3_id
    return native


_id = _id_function()


def object_id(kind: ObjType, data: bytes | memoryview) -> bytes:
    """The 32-byte id of an object of ``kind`` whose raw bytes are ``data``."""
    return _id(kind, data)


class _Ids(Protocol):
    def __call__(
        self,
        kind: int,
        data: bytes | memoryview,
        ends: Sequence[int],
        expect: bytes | None = None,
        /,
    ) -> bytes: ...


def _ids_function(native: bool = True) -> _Ids:
    """The compiled batch hash (one call, no GIL), else (or with ``native`` False) the
    ids one by one. Given ``expect`` (the ids expected, joined), either stops after the
    first id that differs."""

    def ids(
        kind: int, data: bytes | memoryview, ends: Sequence[int], expect: bytes | None = None, /
    ) -> bytes:
        view, parts = memoryview(data), []
        if expect is not None and len(expect) != ID_LEN * len(ends):
            raise ValueError(
                f"expect holds {len(expect)} bytes: {len(ends)} ends need {ID_LEN * len(ends)}"
            )
        spans = list(zip([0, *ends], ends, strict=False))  # (ends may be [])
        for i, (a, b) in enumerate(spans):  # all checked first, as the compiled one does
            if not a <= b <= len(view):
                raise ValueError(
                    f"ends[{i}] is {b}: the ends must rise and lie within the buffer's "
                    f"{len(view)} bytes"
                )
        for i, (a, b) in enumerate(spans):
            parts.append(_id(kind, view[a:b]))
            if expect is not None and parts[-1] != expect[i * ID_LEN : (i + 1) * ID_LEN]:
                break
        return b"".join(parts)

    if not native:
        return ids
    try:
        from modelvault._cdc import object_ids
    except ImportError:
        return ids
    return object_ids


_ids = _ids_function()


def object_ids(kind: ObjType, data: bytes | memoryview, ends: Sequence[int]) -> list[bytes]:
    """The ids of the consecutive objects ``data[0:ends[0]]``, ``data[ends[0]:ends[1]]``,
    ... (each of ``kind``), hashed in one call (the compiled one lets other threads run)."""
    joined = _ids(kind, data, ends)
    return [joined[i : i + ID_LEN] for i in range(0, len(joined), ID_LEN)]


def matching_ids(
    kind: ObjType, data: bytes | memoryview, ends: Sequence[int], expect: Sequence[bytes]
) -> int:
    """How many of the objects ``data[0:ends[0]]``, ``data[ends[0]:ends[1]]``, ..., from
    the first, have the ids ``expect``: hashed as :func:`object_ids` does, but none past
    the first that differs (a new version's bytes past an edit)."""
    want = b"".join(expect)
    got = _ids(kind, data, ends, want)
    n = len(got) // ID_LEN
    if n and got[-ID_LEN:] != want[(n - 1) * ID_LEN : n * ID_LEN]:
        n -= 1
    return n


def parse_hex_id(text: str) -> bytes:
    """The id a lowercase hex string names (``Model.id``, refs); ValueError on anything but 64
    hex digits."""
    raw = bytes.fromhex(text)
    if len(raw) != ID_LEN:
        raise ValueError(f"an object id has {ID_LEN * 2} hex digits, got {text!r}")
    return raw
