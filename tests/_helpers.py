"""Small helpers the test modules share (``tests/`` is on ``sys.path`` through its conftest)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import modelvault
    from modelvault.odb.packs import Record


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (relative path -> bytes, folders made as needed) under ``root``."""
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def save_one_file(
    store: modelvault.Store, tmp_path: Path, tag: str, body: bytes
) -> modelvault.Model:
    """Save a model of one file ``w.bin`` holding ``body`` under ``tag``."""
    src = write_files(tmp_path / ("src-" + tag.replace(":", "-")), {"w.bin": body})
    return store.save(src, tag)


def chunk_records(n: int, seed: int) -> list[Record]:
    """``n`` pack records of random chunks of 1-299 bytes (seeded), encoded as a store's."""
    from modelvault.core import codec
    from modelvault.core.hashing import ObjType, object_id

    rng = random.Random(seed)
    out: list[Record] = []
    for _ in range(n):
        data = rng.randbytes(rng.randrange(1, 300))
        how, payload = codec.encode(data)
        out.append(
            (int(ObjType.CHUNK), object_id(ObjType.CHUNK, data), int(how), len(data), payload)
        )
    return out


# --- archives, as docs/format.md section 10 lays them out ------------------------------


def archive_version(data: bytes) -> int:
    """The format version in an archive's header."""
    return int.from_bytes(data[8:10], "little")


def archive_checksum(version: int, body: bytes) -> bytes:
    """The trailer checksum of archive format ``version`` over ``body``: XXH3-128 in its
    canonical (big-endian) form from version 3, BLAKE3 before."""
    import xxhash
    from blake3 import blake3

    return xxhash.xxh3_128(body).digest() if version >= 3 else blake3(body).digest()


def archive_footer_at(data: bytes) -> int:
    """Offset of an archive's footer: its 16 fixed bytes, then the checksum (16 bytes from
    version 3, 32 before)."""
    return len(data) - 16 - (16 if archive_version(data) >= 3 else 32)


def archive_body(data: bytes) -> bytes:
    """Every byte of an archive the checksum covers."""
    return data[: archive_footer_at(data) + 16]


def resigned(body: bytes) -> bytes:
    """``body`` (an archive without its checksum) followed by the checksum of its version."""
    return body + archive_checksum(archive_version(body), body)


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    """XOR one byte of a (maybe read-only) file, keeping its mode."""
    mode = path.stat().st_mode
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))
    path.chmod(mode)


def bf16_weights(n: int, seed: int = 7) -> bytes:
    """``n`` bf16 values like a layer's weights (normal, sd 0.02), rounded to nearest even
    from fp32."""
    import numpy as np

    fp32 = np.random.default_rng(seed).normal(0, 0.02, n).astype("<f4").view("<u4")
    return bytes((((fp32 + 0x7FFF + ((fp32 >> 16) & 1)) >> 16).astype("<u2")).tobytes())


def safetensors(dtype: str, data: bytes) -> bytes:
    """A safetensors file of one tensor ``w`` of ``dtype`` holding ``data``."""
    import json
    import struct

    head = json.dumps({"w": {"dtype": dtype, "shape": [len(data)], "data_offsets": [0, len(data)]}})
    raw = head.encode() + b" " * (-len(head) % 8)
    return struct.pack("<Q", len(raw)) + raw + data
