"""The remote catalogue: the indexes of many packs in one file, so a machine that has
never seen a remote reads a handful of files instead of one index per pack
(docs/format.md section 11.11 is normative).

``index/<C>.cat``, ``<C>`` = BLAKE3 (hex) of the whole file::

    0   4  magic b"MVCT"
    4   1  format version (1)
    5   3  zero
    8   4  pack count N, u32 little-endian
    12  .. N entries sorted by pack digest, 36 bytes each:
           0  32  pack digest (the pack's name)
           32  4  length of its index file, u32 little-endian
    ..  .. the N index files (section 5), in that order, byte for byte
    ..  32  BLAKE3 of every byte before this field

A catalogue is only a shortcut: a pack is visible when its own ``packs/<P>.idx`` is
listed, and a catalogue's copy of an index serves only such a pack.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from blake3 import blake3

from modelvault.core.packfmt import HASH_LEN, PackFormatError, decode_index

__all__ = ["CatalogueError", "decode_catalogue", "encode_catalogue"]

MAGIC = b"MVCT"
VERSION = 1
_HEAD = struct.Struct("<4sB3xI")
_ENTRY = struct.Struct("<32sI")


class CatalogueError(ValueError):
    """A catalogue file does not follow the layout (or one of its indexes is damaged)."""


def encode_catalogue(indexes: Mapping[str, bytes]) -> tuple[str, bytes]:
    """``(name, bytes)`` of the catalogue of ``indexes`` (pack name -> its index file)."""
    names = sorted(indexes)
    parts = [_HEAD.pack(MAGIC, VERSION, len(names))]
    parts += [_ENTRY.pack(bytes.fromhex(n), len(indexes[n])) for n in names]
    parts += [indexes[n] for n in names]
    body = b"".join(parts)
    data = body + blake3(body).digest()
    return blake3(data).hexdigest(), data


def decode_catalogue(name: str, data: bytes) -> dict[str, bytes]:
    """Pack name -> index file, every one checked (section 5 and its pack digest).

    Raises:
        CatalogueError: wrong name, magic, version, length or checksum, or a damaged index.
    """
    if blake3(data).hexdigest() != name:
        raise CatalogueError(f"catalogue {name} does not match its name")
    if len(data) < _HEAD.size + HASH_LEN:
        raise CatalogueError(f"catalogue {name} is truncated")
    magic, version, count = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise CatalogueError(f"catalogue {name}: bad magic or version {version}")
    pos = _HEAD.size + count * _ENTRY.size
    if len(data) < pos + HASH_LEN:
        raise CatalogueError(f"catalogue {name} is truncated")
    if blake3(data[:-HASH_LEN]).digest() != data[-HASH_LEN:]:
        raise CatalogueError(f"catalogue {name} fails its checksum")
    out: dict[str, bytes] = {}
    for digest, length in _ENTRY.iter_unpack(data[_HEAD.size : _HEAD.size + count * _ENTRY.size]):
        blob = data[pos : pos + length]
        pos += length
        pack = digest.hex()
        try:
            _, named = decode_index(pack, blob)
        except PackFormatError as exc:
            raise CatalogueError(f"catalogue {name}: {exc}") from None
        if named != digest:
            raise CatalogueError(f"catalogue {name}: the index of {pack} names another pack")
        out[pack] = blob
    if pos != len(data) - HASH_LEN:
        raise CatalogueError(f"catalogue {name} has the wrong length")
    return out
