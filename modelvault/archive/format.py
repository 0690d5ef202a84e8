"""The ``.bentomodel`` byte layout (docs/format.md section 10): pure, no I/O.

Byte layout, format version 3 (integers little-endian); version 2 is the same layout
with a 32-byte BLAKE3 checksum, version 1 as version 2 without codec 2, and both are
still read::

    header
      0   8  magic b"MVAR\\r\\n\\x1a\\n"
      8   2  format version, u16 (3; readers take 1, 2 and 3)
      10  2  flags, u16 (0; readers refuse any other value)
      12  4  manifest length M, u32 (at most MAX_MANIFEST)
      16  M  manifest, msgpack: {"tags": [{"tag": "name:version", "model": <32-byte id>}],
                                 "base": None | {"tag": "name:version", "model": <32-byte id>}}
    records, from offset 16 + M: one per object, ids unique, in any order
      0   1  object type (ObjType), 1..4
      1   1  codec (Codec): 0 raw, 1 zstd, 2 byte planes (from version 2)
      2   2  zero
      4   4  raw length, u32
      8   4  stored length, u32
      12 32  object id
      44 ..  stored payload (stored length bytes)
    end of records: one record header of 44 zero bytes
    index, at offset I
      0   4  magic b"MVAI"
      4   4  entry count N, u32
      8  ..  N entries sorted by id, 52 bytes each (the pack index entry layout):
             id (32), type (1), codec (1), zero (2), payload offset u64, stored u32, raw u32
    footer, the last 32 bytes (48 in versions 1 and 2)
      0   8  index offset I, u64
      8   4  entry count N, u32
      12  4  magic b"MVAE"
      16 16  XXH3-128 of every byte of the file before this field, canonical (big-endian)
             form (versions 1 and 2: 32 bytes, BLAKE3)

Every object is checked against its BLAKE3 id, so the checksum only has to catch damage
to the framing (header, manifest, record headers, index): a fast non-cryptographic hash
does, at a fifth of BLAKE3's cost.

Records use the pack record layout (``modelvault.core.packfmt``). Every check here raises
:class:`~modelvault.errors.ArchiveError` naming what is wrong.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn, Protocol

import msgpack
import xxhash
from blake3 import blake3

from modelvault.core.chunking import MAX_SIZE as MAX_CHUNK
from modelvault.core.codec import Codec, planes_bound, zstd_bound
from modelvault.core.hashing import ID_LEN, ObjType
from modelvault.core.packfmt import IDX_ENTRY, RECORD_HEADER, record_header
from modelvault.errors import ArchiveError, InvalidTag, UnsupportedFormat
from modelvault.tags import Tag

__all__ = [
    "CODECS",
    "END_RECORD",
    "FOOTER",
    "FOOTER_MAGIC",
    "HEADER",
    "INDEX_HEAD",
    "INDEX_MAGIC",
    "MAGIC",
    "MAX_MANIFEST",
    "MAX_METADATA",
    "MAX_RAW",
    "READABLE",
    "SUFFIX",
    "VERSION",
    "Checksum",
    "Manifest",
    "RecordHead",
    "checksum",
    "footer",
    "header",
    "index_entry",
    "need",
    "parse_header",
    "parse_record_head",
    "stored_bound",
]

MAGIC = b"MVAR\r\n\x1a\n"
VERSION = 3
READABLE = (1, 2, 3)  # archive format versions import_model reads
SUFFIX = ".bentomodel"
HEADER = struct.Struct("<8sHHI")
INDEX_HEAD = struct.Struct("<4sI")
INDEX_MAGIC = b"MVAI"
FOOTER = struct.Struct("<QI4s")  # followed by the checksum
FOOTER_MAGIC = b"MVAE"
END_RECORD = bytes(RECORD_HEADER.size)

MAX_MANIFEST = 1 << 20
MAX_METADATA = 64 << 20  # raw bytes of one file, tree or model object (~100 GB in one file)
MAX_RAW = {ObjType.CHUNK: MAX_CHUNK, ObjType.FILE: MAX_METADATA}
MAX_RAW |= {ObjType.TREE: MAX_METADATA, ObjType.MODEL: MAX_METADATA}
_KINDS = {int(t): t for t in ObjType}
# the codecs records of each format version may use
CODECS = {1: frozenset({Codec.RAW, Codec.ZSTD}), 2: frozenset(Codec), 3: frozenset(Codec)}


class ArchiveFormatError(UnsupportedFormat, ArchiveError):
    """An archive of a format version this modelvault does not read (a newer one wrote
    it): the one error for a newer format, and an ArchiveError like every unreadable
    archive."""

    def __init__(self, version: int) -> None:
        readable = ", ".join(map(str, READABLE[:-1])) + f" and {READABLE[-1]}"
        ArchiveError.__init__(
            self,
            f"archive format version {version} is unknown (this reads {readable}): a newer "
            "modelvault wrote it; upgrade modelvault (pip install -U modelvault)",
        )
        self.found = version


class Checksum(Protocol):
    """The running trailer checksum (blake3 and xxhash objects have this shape)."""

    @property
    def digest_size(self) -> int: ...

    def update(self, data: bytes | memoryview, /) -> object: ...
    def digest(self) -> bytes: ...


_CHECKSUMS: dict[int, Callable[[], Checksum]] = {1: blake3, 2: blake3, 3: xxhash.xxh3_128}


def checksum(version: int) -> Checksum:
    """A new hash of the trailer checksum of archive format ``version`` (its
    ``digest_size`` is the checksum's length: 32 bytes, then 16 from version 3)."""
    return _CHECKSUMS[version]()


def stored_bound(how: int, raw_len: int) -> int:
    """The most stored bytes a valid payload of codec ``how`` has for ``raw_len`` raw."""
    if how == Codec.RAW:
        return raw_len
    if how == Codec.ZSTD:
        return zstd_bound(raw_len)
    return planes_bound(raw_len)


def need(cond: bool, what: str) -> None:
    """Raise ArchiveError(``what``) unless ``cond``."""
    if not cond:
        raise ArchiveError(what)


# --- manifest ---------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """What an archive carries: the tag and model id, and for a thin one its base."""

    tag: Tag
    model_id: bytes
    base: tuple[Tag, bytes] | None = None

    def encode(self) -> bytes:
        def ref(tag: Tag, oid: bytes) -> dict[str, Any]:
            return {"tag": str(tag), "model": oid}

        base = ref(*self.base) if self.base else None
        doc = {"tags": [ref(self.tag, self.model_id)], "base": base}
        return msgpack.packb(doc, use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """Parse and check a manifest; raises ArchiveError naming what is wrong."""
        try:
            doc = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types
            raise ArchiveError(f"archive manifest is not valid msgpack: {exc}") from exc
        need(isinstance(doc, dict) and set(doc) == {"tags", "base"}, "bad archive manifest")
        tags = doc["tags"]
        need(isinstance(tags, list) and len(tags) == 1, "archive must carry exactly one tag")
        tag, oid = _ref(tags[0])
        manifest = cls(tag, oid, None if doc["base"] is None else _ref(doc["base"]))
        need(manifest.encode() == data, "archive manifest is not in canonical form")
        return manifest


def _ref(doc: Any) -> tuple[Tag, bytes]:
    need(isinstance(doc, dict) and set(doc) == {"tag", "model"}, "bad tag in archive manifest")
    oid = doc["model"]
    need(isinstance(oid, bytes) and len(oid) == ID_LEN, "bad model id in archive manifest")
    try:
        tag = Tag.from_str(doc["tag"]) if isinstance(doc["tag"], str) else None
    except InvalidTag as exc:
        raise ArchiveError(f"bad tag in archive manifest: {exc}") from exc
    need(tag is not None and not tag.is_latest, f"archive tag {doc['tag']!r} has no version")
    assert tag is not None
    return tag, oid


# --- header, records, index, footer -------------------------------------------------


def header(manifest: bytes) -> bytes:
    """The header of a version-``VERSION`` archive carrying the encoded ``manifest``."""
    return HEADER.pack(MAGIC, VERSION, 0, len(manifest))


def parse_header(head: bytes | memoryview) -> tuple[int, int]:
    """``(format version, manifest length)`` of a header, checked."""
    magic, version, flags, length = HEADER.unpack(head)
    need(magic == MAGIC, "not a .bentomodel archive (wrong magic)")
    if version > max(READABLE):
        raise ArchiveFormatError(version)
    readable = ", ".join(map(str, READABLE[:-1])) + f" and {READABLE[-1]}"
    need(
        version in READABLE, f"archive format version {version} is unknown (this reads {readable})"
    )
    need(flags == 0, f"archive has unknown flags {flags:#x}")
    need(length <= MAX_MANIFEST, f"archive manifest declares {length} bytes (> {MAX_MANIFEST})")
    return version, length


class RecordHead(NamedTuple):
    """A checked record header (``kind`` None: the end-of-records marker)."""

    kind: ObjType | None
    codec: int
    raw_len: int
    stored_len: int
    oid: bytes


def parse_record_head(head: bytes, start: int, version: int) -> RecordHead:
    """The record header ``head`` at offset ``start``, every bound checked before its
    payload is read."""
    kind, how, raw_len, stored_len, oid = RECORD_HEADER.unpack(head)
    if kind == 0:
        need(head == END_RECORD, f"malformed end-of-records marker at offset {start}")
        return RecordHead(None, 0, 0, 0, oid)
    t = _KINDS.get(kind)
    if (
        t is None
        or how not in CODECS[version]
        or head[2:4] != b"\0\0"
        or raw_len > MAX_RAW[t]
        or stored_len > stored_bound(how, raw_len)
    ):
        _refuse_record(start, head, version)
    return RecordHead(t, how, raw_len, stored_len, oid)


def _refuse_record(start: int, head: bytes, version: int) -> NoReturn:
    """Raise the ArchiveError naming what is wrong with the record header ``head``."""
    kind, how, raw_len, stored_len, oid = RECORD_HEADER.unpack(head)
    where = f"object {oid.hex()} at offset {start}"
    need(head == record_header(kind, how, raw_len, stored_len, oid), f"{where}: bad padding")
    need(kind in ObjType._value2member_map_, f"{where} has unknown type {kind}")
    need(how in Codec._value2member_map_, f"{where} has unknown codec {how}")
    need(
        how in CODECS[version],
        f"{where} uses codec {how} ({Codec(how).name.lower()}), "
        f"which archive format version {version} does not have",
    )
    limit = MAX_RAW[ObjType(kind)]
    need(raw_len <= limit, f"{where} declares {raw_len} raw bytes (more than {limit})")
    raise ArchiveError(f"{where} declares {stored_len} stored bytes for {raw_len} raw")


def index_entry(oid: bytes, kind: int, how: int, offset: int, stored: int, raw: int) -> bytes:
    """The index entry of a record whose payload starts at ``offset``."""
    return IDX_ENTRY.pack(oid, kind, how, offset, stored, raw)


def footer(index_at: int, count: int) -> bytes:
    """The footer's fixed part (the checksum follows it)."""
    return FOOTER.pack(index_at, count, FOOTER_MAGIC)
