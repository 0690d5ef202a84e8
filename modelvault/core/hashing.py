"""Content ids: BLAKE3 over a one-byte object type followed by the object's raw bytes."""

from __future__ import annotations

from enum import IntEnum

from blake3 import blake3

ID_LEN = 32


class ObjType(IntEnum):
    """The kinds of stored objects; the value is the byte that prefixes the hashed bytes."""

    CHUNK = 1  # bytes of a file, cut by content-defined chunking
    FILE = 2  # msgpack: the ordered chunk list of one file
    TREE = 3  # msgpack: a folder's entries
    MODEL = 4  # msgpack: the commit — tree, tag, info


def object_id(kind: ObjType, data: bytes | memoryview) -> bytes:
    """The 32-byte id of an object of ``kind`` whose raw bytes are ``data``."""
    h = blake3(bytes((kind,)))
    h.update(data)
    return h.digest()


def hex_id(oid: bytes) -> str:
    """The lowercase hex form users see (``Model.id``, verify reports)."""
    return oid.hex()


def parse_hex_id(text: str) -> bytes:
    """Inverse of :func:`hex_id`; raises ValueError on anything but 64 hex digits."""
    raw = bytes.fromhex(text)
    if len(raw) != ID_LEN:
        raise ValueError(f"an object id has {ID_LEN * 2} hex digits, got {text!r}")
    return raw
