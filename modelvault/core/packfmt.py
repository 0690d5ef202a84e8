"""Byte layouts of pack files and pack index files (docs/format.md is normative).

Pack file ``<pack>.pack``::

    0   4  magic  b"MVPK"
    4   1  format version (1)
    5   3  zero
    8   .. records, each:
           0   1  object type (ObjType)
           1   1  codec (Codec)
           2   2  zero
           4   4  raw length, u32 little-endian
           8   4  stored length, u32 little-endian
           12 32  object id
           44 ..  stored payload (stored length bytes)

Index file ``<pack>.idx``::

    0   4  magic  b"MVIX"
    4   1  format version (1)
    5   3  zero
    8   4  entry count N, u32 little-endian
    12  .. N entries sorted by id, 52 bytes each:
           0  32  object id
           32  1  object type
           33  1  codec
           34  2  zero
           36  8  payload offset in the pack, u64 little-endian
           44  4  stored length, u32
           48  4  raw length, u32
    ..  32  pack digest: BLAKE3 of the pack's file header and record headers
    ..  32  BLAKE3 of every index byte before this field

A pack's name is the hex pack digest. The record headers carry each object's
id, so the digest identifies the content without re-hashing every payload.

Multi-pack index ``multi-<hex>.midx`` (format 3; merged from the ``.idx`` files of the
packs it covers, which stay the source of truth)::

    0   4  magic  b"MVMX"
    4   1  format version (1)
    5   3  zero
    8   4  pack count P, u32 little-endian
    12  4  zero
    16  8  entry count N, u64 little-endian
    24  32*P  the covered packs' digests (raw), ascending
    ..  256*8 fan-out: u64 each; entry b = number of ids whose first byte <= b
    ..  32*N  object ids, ascending, each once
    ..  24*N  entries, in id order:
           0   4  pack number (into the pack list), u32
           4   1  object type
           5   1  codec
           6   2  zero
           8   8  payload offset in the pack, u64
           16  4  stored length, u32
           20  4  raw length, u32
    ..  32  BLAKE3 of every byte before this field; <hex> in the file name is it
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from blake3 import blake3

__all__ = [
    "FILE_HEADER",
    "FILTER_BITS",
    "FILTER_BLOCK",
    "FILTER_K",
    "HASH_LEN",
    "IDX_COUNT",
    "IDX_ENTRY",
    "IDX_MAGIC",
    "MIDX_ENTRY",
    "MIDX_FANOUT",
    "MIDX_HEADER",
    "MIDX_MAGIC",
    "MIDX_VERSION",
    "MIDX_VERSIONS",
    "PACK_MAGIC",
    "RECORD_HEADER",
    "VERSION",
    "Entry",
    "MidxLayout",
    "PackFormatError",
    "check_index",
    "decode_index",
    "encode_index",
    "filter_blocks",
    "midx_layout",
    "pack_header",
    "record_header",
]

PACK_MAGIC = b"MVPK"
IDX_MAGIC = b"MVIX"
VERSION = 1

FILE_HEADER = struct.Struct("<4sB3x")
RECORD_HEADER = struct.Struct("<BBxxII32s")
IDX_COUNT = struct.Struct("<I")
IDX_ENTRY = struct.Struct("<32sBBxxQII")
HASH_LEN = 32

MIDX_MAGIC = b"MVMX"
MIDX_VERSION = 2  # written; version 1 (no filter) is still read
MIDX_VERSIONS = (1, 2)
MIDX_HEADER = struct.Struct("<4sB3xI4xQ")  # magic, version, pack count, entry count
MIDX_FANOUT = struct.Struct("<256Q")
MIDX_ENTRY = struct.Struct("<IBBxxQII")  # pack number, type, codec, offset, stored, raw


class MidxLayout(NamedTuple):
    """Byte offsets of the parts of a multi-pack index of ``packs`` packs, ``count`` ids."""

    packs: int  # the pack list
    fanout: int
    ids: int
    entries: int
    checksum: int
    size: int  # of the whole file
    filter: int = 0  # version 2: the filter's first block
    blocks: int = 0  # version 2: its number of blocks (0: no filter, version 1)


# version 2's filter (docs/format.md section 5.1): a blocked Bloom filter over the ids,
# FILTER_BITS bits an id, in blocks of FILTER_BLOCK bytes; FILTER_K bits an id, all in
# the block its bytes 0-3 pick, at positions its bytes 8-15 give (ids are uniform)
FILTER_BITS = 10
FILTER_BLOCK = 64
FILTER_K = 7


def filter_blocks(count: int) -> int:
    """The number of filter blocks of a version-2 index of ``count`` ids (at least 1)."""
    return max(1, -(-count * FILTER_BITS // (8 * FILTER_BLOCK)))


def midx_layout(packs: int, count: int, version: int = MIDX_VERSION) -> MidxLayout:
    start = MIDX_HEADER.size
    fanout = start + HASH_LEN * packs
    ids = fanout + MIDX_FANOUT.size
    entries = ids + HASH_LEN * count
    after = entries + MIDX_ENTRY.size * count
    blocks = filter_blocks(count) if version >= 2 else 0
    checksum = after + FILTER_BLOCK * blocks
    return MidxLayout(start, fanout, ids, entries, checksum, checksum + HASH_LEN, after, blocks)


class PackFormatError(ValueError):
    """A pack or index file does not follow the layout."""


class Entry(NamedTuple):
    """Where one object lives: its pack, payload offset and lengths, type and codec.

    (A named tuple: an index of many thousand entries is decoded at every store open,
    and a tuple is made several times faster than a frozen dataclass.)"""

    pack: str
    offset: int
    stored_len: int
    raw_len: int
    kind: int
    codec: int


def pack_header() -> bytes:
    return FILE_HEADER.pack(PACK_MAGIC, VERSION)


def record_header(kind: int, codec: int, raw_len: int, stored_len: int, oid: bytes) -> bytes:
    return RECORD_HEADER.pack(kind, codec, raw_len, stored_len, oid)


def encode_index(entries: dict[bytes, Entry], pack_digest: bytes) -> bytes:
    """The index file of one pack, entries sorted by id."""
    parts = [FILE_HEADER.pack(IDX_MAGIC, VERSION), IDX_COUNT.pack(len(entries))]
    for oid in sorted(entries):
        e = entries[oid]
        parts.append(IDX_ENTRY.pack(oid, e.kind, e.codec, e.offset, e.stored_len, e.raw_len))
    parts.append(pack_digest)
    body = b"".join(parts)
    return body + blake3(body).digest()


def check_index(pack: str, data: bytes | memoryview) -> int:
    """Check an index file's magic, version, length and checksum; returns its entry count.

    Raises:
        PackFormatError: wrong magic or version, bad length, or checksum mismatch.
    """
    head = FILE_HEADER.size + IDX_COUNT.size
    if len(data) < head + 2 * HASH_LEN:
        raise PackFormatError(f"index of pack {pack} is truncated")
    magic, version = FILE_HEADER.unpack_from(data)
    if magic != IDX_MAGIC or version != VERSION:
        raise PackFormatError(f"index of pack {pack}: bad magic or version {version}")
    (count,) = IDX_COUNT.unpack_from(data, FILE_HEADER.size)
    if len(data) != head + count * IDX_ENTRY.size + 2 * HASH_LEN:
        raise PackFormatError(f"index of pack {pack} has the wrong length")
    if blake3(data[:-HASH_LEN]).digest() != data[-HASH_LEN:]:
        raise PackFormatError(f"index of pack {pack} fails its checksum")
    return int(count)


def decode_index(pack: str, data: bytes) -> tuple[dict[bytes, Entry], bytes]:
    """Parse an index file; returns ``(entries, pack digest)``.

    Raises:
        PackFormatError: wrong magic or version, bad length, or checksum mismatch.
    """
    count = check_index(pack, data)
    head = FILE_HEADER.size + IDX_COUNT.size
    entries: dict[bytes, Entry] = {}
    for oid, kind, codec, off, stored, raw in IDX_ENTRY.iter_unpack(
        data[head : head + count * IDX_ENTRY.size]
    ):
        entries[oid] = Entry(pack, off, stored, raw, kind, codec)
    return entries, data[-2 * HASH_LEN : -HASH_LEN]
