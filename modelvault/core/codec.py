"""Per-object compression: zstd where it pays, raw where it does not."""

from __future__ import annotations

import threading
from enum import IntEnum

import zstandard

from modelvault.errors import IntegrityError


class Codec(IntEnum):
    """How an object's payload is stored; the value is stored on disk."""

    RAW = 0
    ZSTD = 1


LEVEL = 3
SAMPLE = 8 * 1024  # bytes compressed to decide whether the whole chunk is worth trying
SAMPLE_RATIO = 0.85  # try the whole chunk only when the sample shrinks below this
KEEP_RATIO = 0.90  # keep the compressed form only when it is below this share of raw

_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    c: zstandard.ZstdCompressor | None = getattr(_local, "cctx", None)
    if c is None:
        c = _local.cctx = zstandard.ZstdCompressor(level=LEVEL)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if d is None:
        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def encode(data: bytes | memoryview, *, probe: bool = True) -> tuple[Codec, bytes | memoryview]:
    """Return ``(codec, payload)`` for ``data``.

    With ``probe`` (used for chunks of model weights) a small sample is compressed
    first and the whole is tried only if the sample shrank: float weights barely
    compress and trying costs time. Without it (metadata objects) zstd is always tried.
    """
    size = len(data)
    if size == 0:
        return Codec.RAW, data
    cctx = _compressor()
    if probe and size > 2 * SAMPLE:
        sample = cctx.compress(data[:SAMPLE])
        if len(sample) > SAMPLE * SAMPLE_RATIO:
            return Codec.RAW, data
    packed = cctx.compress(data)
    if len(packed) < size * KEEP_RATIO:
        return Codec.ZSTD, packed
    return Codec.RAW, data


def decode(codec: int, payload: bytes, raw_len: int) -> bytes:
    """Undo :func:`encode`; never produces more than ``raw_len`` bytes.

    Raises:
        IntegrityError: the payload is not valid for its codec or has the wrong size.
    """
    if codec == Codec.RAW:
        out = payload
    elif codec == Codec.ZSTD:
        try:
            out = _decompressor().decompress(payload, max_output_size=raw_len)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"undecodable zstd payload: {exc}") from exc
    else:
        raise IntegrityError(f"unknown codec {codec}")
    if len(out) != raw_len:
        raise IntegrityError(f"payload decodes to {len(out)} bytes, expected {raw_len}")
    return out
