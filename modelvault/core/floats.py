"""The float codec (codec 3, docs/format.md section 2): elements of 2 or 4 bytes rotated
and cut into planes, the exponent plane (and any mantissa plane that pays) zstd'd.

:func:`float_plan` decides from a sample whether it pays, :func:`encode_float` writes a
payload and :func:`_decode_float` reads one. Whether the store writes it at all is
``codec.FLOAT_WRITE``; :mod:`modelvault.core.codec` dispatches here and re-exports these
names. ``_fc`` is the compiled ``_floatcodec`` (None in a build without a C compiler:
no float-codec writes, numpy reads; tests set ``floats._fc`` to None for that).
"""

from __future__ import annotations

import struct

from modelvault.core._zstd import _lane_compressor, read_planes, zstd_bound
from modelvault.errors import IntegrityError

try:
    from modelvault import _floatcodec as _fc
except ImportError:  # built without a C compiler: no float-codec writes, numpy reads
    _fc = None  # type: ignore[assignment]

FLOAT_HEAD = struct.Struct("<BBBB")  # width, skip, plane mask, rotation; ``width`` u32 lengths
FLOAT_WIDTHS = (2, 4)  # bf16 / fp16, fp32
FLOAT_MIN = 4096  # smaller chunks are not worth the planes
FLOAT_TRY = 0.92  # try the float codec when the sample's estimate is below this share
FLOAT_KEEP = 0.97  # keep the float payload only below this share of raw
FLOAT_MARGIN = 0.05  # ... and the estimate must beat coding plain bytes by this share
PLANE_TRY_BITS = 7.99  # a mantissa plane is tried with zstd when its sample is below this


# safetensors dtype -> (width, rotation) of its float planes; other dtypes: no planes
FLOAT_DTYPES = {"F32": (4, 3), "BF16": (2, 3), "F16": (2, 1)}
_WIDTH4_PENALTY = 0.005  # share of raw: width 4 must beat 2 by this (2-byte floats tie)
_ROT3_SLACK = 0.1  # bits an element: rotation 3 is taken unless this much worse than 1


def float_plan(
    data: bytes | memoryview, dtype: str | None = None
) -> tuple[int, int, int, int] | None:
    """``(width, skip, rotation, tries)`` if float planes look worth it for ``data``.

    ``dtype`` is what the caller knows (a safetensors dtype name: ``F32``, ``BF16`` and
    ``F16`` fix the width and rotation, any other name means no planes; None: unknown).
    Order-0 entropies of the planes on an 8 KiB sample (``_floatcodec.probe``, ~15-30
    us) estimate each width (2 or 4, each at the skip, the bytes before the first whole
    element, whose exponent plane is smallest) and rotation (1 or 3): the exponent plane
    entropy-coded, each other plane too if its sample is below :data:`PLANE_TRY_BITS`,
    else raw. The smallest wins, with rotation 3 favoured by ``_ROT3_SLACK`` bits an
    element (Huffman codes its planes better than the entropy says) and width 4 taken
    only if ``_WIDTH4_PENALTY`` smaller (2-byte floats estimate the same either way);
    its estimate must then beat entropy-coding
    the plain bytes by :data:`FLOAT_MARGIN` and be below :data:`FLOAT_TRY`. ``tries``
    has bit i set for each plane worth compressing (bit 0, the exponent plane, always).
    Integers, fp8, quantized blocks and random bytes come out None: their "exponent"
    byte is as noisy as the rest.
    """
    size = len(data)
    if _fc is None or size < FLOAT_MIN:
        return None
    fixed = None
    if dtype is not None:
        fixed = FLOAT_DTYPES.get(dtype)
        if fixed is None:
            return None
    byte_bits, candidates = _fc.probe(data, fixed[0] if fixed else 0)
    best: tuple[float, float, int, int, int, int] | None = None  # rank, est, w, skip, rot, tries
    for w, skip, bits1, bits3 in candidates:
        rots = [fixed[1]] if fixed else [1, 3]
        for rot in rots:
            bits = bits3 if rot == 3 else bits1
            tries = 1
            for k in range(1, w):
                if bits[k] < PLANE_TRY_BITS:
                    tries |= 1 << k
            est = sum(b if tries >> k & 1 else 8.0 for k, b in enumerate(bits)) / (8 * w)
            rank = est - (_ROT3_SLACK if rot == 3 else 0.0) / (8 * w)
            rank += _WIDTH4_PENALTY if w == 4 else 0.0
            if best is None or rank < best[0]:
                best = (rank, est, w, skip, rot, tries)
    if best is None:
        return None
    _, est, w, skip, rot, tries = best
    if est >= FLOAT_TRY or est >= byte_bits / 8 - FLOAT_MARGIN:
        return None
    return w, skip, rot, tries


def encode_float(
    data: bytes | memoryview, width: int, skip: int = 0, rot: int = 1, tries: int = 1
) -> bytes:
    """The codec-3 payload of ``data``: ``skip`` leading bytes, then elements of
    ``width`` bytes rotated left by ``rot`` bits and cut into planes (plane i zstd'd if
    bit i of ``tries`` is set and that pays, else raw), then the tail (docs/format.md,
    section 2)."""
    if _fc is None:
        raise RuntimeError("the float codec needs modelvault._floatcodec, which is not built")
    if width not in FLOAT_WIDTHS or not 0 <= skip < width or not 1 <= rot < 8 * width:
        raise ValueError(f"float planes of width {width}, skip {skip}, rotation {rot}")
    view = memoryview(data)
    skip = min(skip, len(view))
    n = (len(view) - skip) // width
    planes = memoryview(_fc.split(view[skip : skip + n * width], width, rot))
    parts: list[bytes | memoryview] = []
    mask = 0
    cctx = _lane_compressor()
    for i in range(width):
        plane = planes[i * n : (i + 1) * n]
        if tries >> i & 1 and n:
            packed = cctx.compress(plane)
            if len(packed) < n:
                mask |= 1 << i
                parts.append(packed)
                continue
        parts.append(plane)
    head = FLOAT_HEAD.pack(width, skip, mask, rot) + struct.pack(f"<{width}I", *map(len, parts))
    return b"".join([head, view[:skip], *parts, view[skip + n * width :]])


def _decode_float(payload: bytes | memoryview, raw_len: int) -> bytes:
    """Undo :func:`encode_float`, checking every length against the header first."""
    view = memoryview(payload)
    if len(view) < FLOAT_HEAD.size:
        raise IntegrityError(f"float payload of {len(view)} bytes has no header")
    width, skip, mask, rot = FLOAT_HEAD.unpack_from(view)
    if width not in FLOAT_WIDTHS:
        raise IntegrityError(f"float planes width {width} is not 2 or 4")
    if skip >= width or mask >> width or not 1 <= rot < 8 * width:
        raise IntegrityError(
            f"float planes header is invalid (width {width}, skip {skip}, "
            f"plane mask {mask:#04x}, rotation {rot})"
        )
    head = FLOAT_HEAD.size + 4 * width
    if len(view) < head:
        raise IntegrityError(f"float planes header is truncated ({len(view)} of {head} bytes)")
    if raw_len < skip:
        raise IntegrityError(f"float planes skip {skip} bytes of a {raw_len}-byte object")
    lengths = struct.unpack_from(f"<{width}I", view, FLOAT_HEAD.size)
    n, tail = divmod(raw_len - skip, width)
    expected = head + skip + sum(lengths) + tail
    if len(view) != expected:
        raise IntegrityError(
            f"float payload is {len(view)} bytes, its header and raw length {raw_len} "
            f"give {expected}"
        )
    planes, at = read_planes(view, head + skip, lengths, mask, n, "plane")
    if _fc is None:
        return _join_float_numpy(width, rot, view[head : head + skip], planes, view[at:])
    return _fc.join(width, rot, view[head : head + skip], planes, view[at:])


def _join_float_numpy(
    width: int, rot: int, head: memoryview, planes: list[bytes | memoryview], tail: memoryview
) -> bytes:
    """``_floatcodec.join`` in numpy, for a build without the compiled module."""
    import numpy as np

    bits = 8 * width
    v = np.left_shift(np.frombuffer(planes[0], np.uint8).astype(np.uint64), bits - 8)
    for k in range(1, width):
        v |= np.left_shift(np.frombuffer(planes[k], np.uint8).astype(np.uint64), 8 * (k - 1))
    v = (np.right_shift(v, rot) | np.left_shift(v, bits - rot)) & ((1 << bits) - 1)
    return b"".join([head, v.astype(f"<u{width}").tobytes(), tail])


def float_bound(raw_len: int) -> int:
    """The largest valid float payload for ``raw_len`` raw bytes (any width, any skip):
    at most :func:`planes_bound`, so archives' limits hold for it too."""
    best = 0
    for w in FLOAT_WIDTHS:
        for skip in range(min(w, raw_len + 1)):
            n, tail = divmod(raw_len - skip, w)
            best = max(best, FLOAT_HEAD.size + 4 * w + skip + w * zstd_bound(n) + tail)
    return best
