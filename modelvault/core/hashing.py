"""Content ids: BLAKE3 over a one-byte object type followed by the object's raw bytes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import IntEnum

from blake3 import blake3

__all__ = [
    "ID_LEN",
    "ObjType",
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


def _ids_function(native: bool = True) -> Callable[[int, bytes | memoryview, Sequence[int]], bytes]:
    """The compiled batch hash (one call, no GIL), else (or with ``native`` False) the
    ids one by one."""

    def ids(kind: int, data: bytes | memoryview, ends: Sequence[int]) -> bytes:
        view, parts = memoryview(data), []
        for i, (a, b) in enumerate(zip([0, *ends[:-1]], ends, strict=True)):
            if not a <= b <= len(view):
                raise ValueError(
                    f"ends[{i}] is {b}: the ends must rise and lie within the buffer's "
                    f"{len(view)} bytes"
                )
            parts.append(_id(kind, view[a:b]))
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


def parse_hex_id(text: str) -> bytes:
    """The id a lowercase hex string names (``Model.id``, refs); ValueError on anything but 64
    hex digits."""
    raw = bytes.fromhex(text)
    if len(raw) != ID_LEN:
        raise ValueError(f"an object id has {ID_LEN * 2} hex digits, got {text!r}")
    return raw
