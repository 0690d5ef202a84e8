"""zstd primitives shared by the codecs: per-thread compressors, the lane parameters,
bounded decoding of one frame, and the compress bound. Re-exported by
:mod:`modelvault.core.codec`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import zstandard

from modelvault.errors import IntegrityError

LEVEL = 3

# Lanes of exponents are nearly all literals: zstd's fast strategy with long minimum
# matches and a tiny hash table entropy-codes them ~3x faster than level 1, and smaller
# (level 1 spends bits on short matches that do not pay). Window 2**17 covers the
# largest lane (a 512 KiB chunk / 4), so blocks are full size.
_LANE_PARAMS = zstandard.ZstdCompressionParameters(
    window_log=17,
    hash_log=6,
    chain_log=6,
    search_log=1,
    min_match=7,
    strategy=zstandard.STRATEGY_FAST,
    write_content_size=1,
)

_local = threading.local()


def _compressor(level: int = LEVEL) -> zstandard.ZstdCompressor:
    """This thread's compressor for ``level`` (compressors are not thread-safe)."""
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "cctx", None)
    if cache is None:
        cache = _local.cctx = {}
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(level=level)
    return c


def _lane_compressor() -> zstandard.ZstdCompressor:
    c: zstandard.ZstdCompressor | None = getattr(_local, "lane_cctx", None)
    if c is None:
        c = _local.lane_cctx = zstandard.ZstdCompressor(compression_params=_LANE_PARAMS)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if d is None:
        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def zstd_bound(raw_len: int) -> int:
    """The largest zstd frame a ``raw_len``-byte input compresses to (ZSTD_COMPRESSBOUND)."""
    small = (128 << 10) - raw_len >> 11 if raw_len < 128 << 10 else 0
    return raw_len + (raw_len >> 8) + small + 64  # + 64: room for frame header options


def _decode_zstd(frame: bytes | memoryview, size: int, what: str) -> bytes:
    """Decompress one zstd frame that must hold exactly ``size`` bytes.

    The frame's declared content size is checked before anything is allocated, and a
    frame that does not declare it is decoded into at most ``size`` bytes.
    """
    try:
        declared = zstandard.get_frame_parameters(frame).content_size
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"undecodable {what}: {exc}") from exc
    if declared not in (size, zstandard.CONTENTSIZE_UNKNOWN):
        raise IntegrityError(f"{what} declares {declared} bytes, expected {size}")
    try:
        out = _decompressor().decompress(frame, max_output_size=size, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"undecodable {what}: {exc}") from exc
    if len(out) != size:
        raise IntegrityError(f"{what} decodes to {len(out)} bytes, expected {size}")
    return out


def read_planes(
    view: memoryview, at: int, lengths: Sequence[int], mask: int, n: int, what: str
) -> tuple[list[bytes | memoryview], int]:
    """The planes laid out from ``at``: plane i is a zstd frame of ``n`` bytes when bit i
    of ``mask`` is set, else ``n`` raw bytes (checked); returns them and where they end.
    (The layout shared by byte-planes lanes and float planes; ``what`` names them.)"""
    planes: list[bytes | memoryview] = []
    for i, length in enumerate(lengths):
        plane = view[at : at + length]
        at += length
        if mask >> i & 1:
            planes.append(_decode_zstd(plane, n, f"zstd {what} {i}"))
        elif length != n:
            raise IntegrityError(f"raw {what} {i} is {length} bytes, expected {n}")
        else:
            planes.append(plane)
    return planes, at
