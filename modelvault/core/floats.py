"""The float codec (codec 3, docs/format.md section 2): elements of 2 or 4 bytes rotated
and cut into planes, the exponent plane (and any mantissa plane that pays) entropy-coded:
Huffman-coded in C (the Huffman-planes sub-format 2, what the store writes: the exponent
coded with up to 2 mantissa bits; sub-format 1, still read) or zstd'd (the first form,
still read).

:func:`float_plan` decides from a sample whether it pays, :func:`encode_float_huffman`
(and :func:`encode_float_hinted`, for a chunk whose dtype is known) writes a payload,
:func:`encode_float` writes the zstd form, and :func:`_decode_float` reads both. Whether
the store writes it at all is ``codec.FLOAT_WRITE``; :mod:`modelvault.core.codec`
dispatches here and re-exports these names. ``_fc`` is the compiled ``_floatcodec``
(None in a build without a C compiler: no float-codec writes, numpy and pure-Python
reads; tests set ``floats._fc`` to None for that).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

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


# safetensors dtype -> (width, rotation) of its float planes; other dtypes: no planes.
# Rotation 1 puts the sign at bit 0 and the exponent (fp16: and 3 mantissa bits) in
# plane 0, which the Huffman planes code near its entropy.
FLOAT_DTYPES = {"F32": (4, 1), "BF16": (2, 1), "F16": (2, 1)}
HUF_FLAG = 0x80  # plane mask bit 7: the marked planes are Huffman-coded (not zstd)
HUF_V2 = 0x40  # plane mask bit 6 (with 7): sub-format 2, plane 0 with K mantissa bits
HUF_KMAX = 2  # sub-format 2: at most this many mantissa bits coded with the exponent
HUF_MAX = 12  # longest Huffman code, bits
HUF_STREAMS = 8  # a Huffman plane's symbols in this many bit streams
HUF_SMALL_M = 43690  # streams of at most this many codes have u16 lengths (12 bits each)
# a plane is kept Huffman-coded only below this share of its n bytes (in 1024ths): a
# mantissa plane that saves under ~2% is not worth its decoding time
HUF_KEEP = 1000
_WIDTH4_PENALTY = 0.005  # share of raw: width 4 must beat 2 by this (2-byte floats tie)


def float_plan(
    data: bytes | memoryview, dtype: str | None = None
) -> tuple[int, int, int, int] | None:
    """``(width, skip, rotation, tries)`` if float planes look worth it for ``data``.

    ``dtype`` is what the caller knows (a safetensors dtype name: ``F32``, ``BF16`` and
    ``F16`` fix the width and rotation, any other name means no planes; None: unknown).
    Order-0 entropies of the planes on an 8 KiB sample (``_floatcodec.probe``, ~15-30
    us) estimate each width (2 or 4, each at the skip, the bytes before the first whole
    element, whose exponent plane is smallest) at rotation 1 (the sign to bit 0, the
    exponent in plane 0, what the Huffman planes code best): the exponent plane
    entropy-coded, each other plane too if its sample is below :data:`PLANE_TRY_BITS`,
    else raw. The smaller wins, width 4 taken only if ``_WIDTH4_PENALTY`` smaller
    (2-byte floats estimate the same either way); its estimate must then beat
    entropy-coding the plain bytes by :data:`FLOAT_MARGIN` and be below
    :data:`FLOAT_TRY`. ``tries`` has bit i set for each plane worth compressing (bit 0,
    the exponent plane, always); with a float ``dtype``, every plane.
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
    for w, skip, bits1, _bits3 in candidates:  # (the probe also estimates rotation 3)
        rot = fixed[1] if fixed else 1
        bits = bits1
        tries = 1
        for k in range(1, w):
            if bits[k] < PLANE_TRY_BITS:
                tries |= 1 << k
        est = sum(b if tries >> k & 1 else 8.0 for k, b in enumerate(bits)) / (8 * w)
        rank = est + (_WIDTH4_PENALTY if w == 4 else 0.0)
        if best is None or rank < best[0]:
            best = (rank, est, w, skip, rot, tries)
    if best is None:
        return None
    _, est, w, skip, rot, tries = best
    if est >= FLOAT_TRY or est >= byte_bits / 8 - FLOAT_MARGIN:
        return None
    if fixed:  # a known float dtype: every plane is tried (the encoder samples each)
        tries = (1 << w) - 1
    return w, skip, rot, tries


def encode_float_huffman(
    data: bytes | memoryview, width: int, skip: int = 0, rot: int = 1, tries: int = 1
) -> bytes:
    """The codec-3 payload of ``data`` in the Huffman sub-format 2 (docs/format.md,
    section 2): as :func:`encode_float`, but plane 0 holds the exponent byte and the K
    (0..2, the encoder's choice) mantissa bits below it as one symbol, plane w - 1 the
    rest of that byte, and plane i, if bit i of ``tries`` is set, is coded with a
    canonical Huffman code of its own when that is below :data:`HUF_KEEP` of the plane
    (a mantissa plane is first judged on a 4 KiB sample), a constant plane in 3 bytes.
    ``skip`` -1 lets the encoder pick it.
    One call into ``_floatcodec``, without the GIL: one pass over the elements splits
    and counts them, then the planes are coded."""
    if _fc is None:
        raise RuntimeError("the float codec needs modelvault._floatcodec, which is not built")
    if width not in FLOAT_WIDTHS or not -1 <= skip < width or not 1 <= rot < 8 * width:
        raise ValueError(f"float planes of width {width}, skip {skip}, rotation {rot}")
    return _fc.hencode(data, width, skip, rot, tries, HUF_KEEP)


def encode_float_hinted(data: bytes | memoryview, dtype: str) -> bytes | None:
    """The Huffman-planes payload of a chunk of a file whose dtype is known to be a float
    of :data:`FLOAT_DTYPES`, or None if it is another dtype or too small. No probe: the
    encoder picks the skip on two 1 KiB slices and judges every plane by its real size
    (a mantissa plane on a sample first); the caller keeps the payload if it is small
    enough."""
    fixed = FLOAT_DTYPES.get(dtype)
    if fixed is None or _fc is None or len(data) < FLOAT_MIN:
        return None
    width, rot = fixed
    return encode_float_huffman(data, width, -1, rot, (1 << width) - 1)


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


def _decode_float(
    payload: bytes | memoryview, raw_len: int, into: memoryview | None = None
) -> bytes | memoryview:
    """Undo :func:`encode_float`, checking every length against the header first; Huffman
    planes are decoded into ``into`` where it is given and the C is built
    (``into[:raw_len]`` is returned)."""
    view = memoryview(payload)
    if len(view) < FLOAT_HEAD.size:
        raise IntegrityError(f"float payload of {len(view)} bytes has no header")
    width, skip, mask, rot = FLOAT_HEAD.unpack_from(view)
    if mask & HUF_FLAG:
        if _fc is None:
            return _decode_huffman_py(view, raw_len)
        if into is not None and len(into) < raw_len:  # the caller's mistake, not damage
            raise ValueError(f"into holds {len(into)} bytes, fewer than raw_len {raw_len}")
        try:
            if into is None:
                return _fc.hdecode(view, raw_len)
            _fc.hdecode(view, raw_len, into)
            return into[:raw_len]
        except ValueError as exc:
            raise IntegrityError(f"invalid float payload (Huffman planes): {exc}") from exc
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


def decodes_in_batch(payload: bytes | memoryview) -> bool:
    """Whether :func:`decode_float_batch` takes this float payload: Huffman planes, with
    the C built (the zstd form and the pure-Python decoder go one at a time)."""
    return _fc is not None and len(payload) >= FLOAT_HEAD.size and payload[2] & HUF_FLAG != 0


def decode_float_batch(
    payloads: Sequence[bytes | memoryview], raw_lens: Sequence[int], into: memoryview
) -> tuple[int, str] | None:
    """Decode Huffman-planes payloads (each :func:`decodes_in_batch`) into ``into`` end
    to end, in one compiled call that drops the GIL once, not once a payload (``Model.path``
    decodes on two threads beside a writer: taking the GIL back after every chunk made
    ~4,300 of its context switches a GiB, now ~1,100). None, or ``(i, what is wrong)``
    for the first payload that is not valid (the message :func:`_decode_float` gives)."""
    assert _fc is not None
    return _fc.hdecode_many(payloads, raw_lens, into)


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


def huf_lenfield(n: int) -> int:
    """Bytes of each stream-length field of a Huffman plane of ``n`` symbols: 2 while a
    stream of ceil(n / 8) codes of at most 12 bits surely fits in 65535 bytes, else 4."""
    return 2 if -(-n // HUF_STREAMS) <= HUF_SMALL_M else 4


def _huffman_codes(lens: list[int]) -> list[int]:
    """Canonical codes (docs/format.md, section 2) of the code lengths ``lens``."""
    num = [0] * (HUF_MAX + 2)
    for n in lens:
        num[n] += 1
    num[0] = 0
    nxt = [0] * (HUF_MAX + 2)
    code = 0
    for n in range(1, HUF_MAX + 1):
        code = (code + num[n - 1]) << 1
        nxt[n] = code
    codes = [0] * len(lens)
    for s, n in enumerate(lens):
        if n:
            codes[s] = nxt[n]
            nxt[n] += 1
    return codes


def _table_v2(src: memoryview, first: int, last: int, t: int) -> tuple[list[int], int]:
    """The code lengths of symbols ``first..last`` of a sub-format 2 plane (its bit
    string from ``src[5]`` on) and the byte offset after them."""
    bad = IntegrityError
    lens: list[int] = [0] * (last + 1)
    limit = 8 * (len(src) - 5)
    pos = 0

    def bits(count: int) -> int:
        nonlocal pos
        if pos + count > limit:
            raise bad("invalid float payload (Huffman planes): a plane header is truncated")
        x = 0
        for i in range(count):
            x |= (src[5 + (pos >> 3)] >> (pos & 7) & 1) << i
            pos += 1
        return x

    prev, s = t, first
    while s <= last:
        if not bits(1):
            lens[s] = prev
            s += 1
        elif not bits(1):
            prev += 1 if bits(1) else -1
            if not 1 <= prev <= HUF_MAX:
                raise bad("invalid float payload (Huffman planes): a code length is out of range")
            lens[s] = prev
            s += 1
        elif not bits(1):
            s += 1
        else:
            v = bits(4)
            if v == 0:
                z = bits(4)
                if s + z + 2 > last + 1:
                    raise bad(
                        "invalid float payload (Huffman planes): a run passes the last symbol"
                    )
                s += z + 2
            elif v > HUF_MAX:
                raise bad("invalid float payload (Huffman planes): a code length is out of range")
            else:
                lens[s] = prev = v
                s += 1
    if pos & 7 and src[5 + (pos >> 3)] >> (pos & 7):
        raise bad("invalid float payload (Huffman planes): a padding bit is not zero")
    return lens, 5 + (pos + 7) // 8


def _huffman_plane_py(src: memoryview, n: int, v: int = 1, symbits: int = 8) -> list[int]:
    """One Huffman plane of ``n`` symbols of sub-format ``v`` (each below 2 ** symbits),
    decoded in Python (a build without the C)."""
    bad = IntegrityError
    nsyms = 1 << symbits
    if len(src) < 1:
        raise bad("invalid float payload (Huffman planes): a Huffman plane is empty")
    t = src[0]
    if t == 0:
        if len(src) != (2 if v == 1 else 3):
            raise bad("invalid float payload (Huffman planes): a constant plane's length")
        sym = src[1] if v == 1 else src[1] | src[2] << 8
        if sym >= nsyms:
            raise bad("invalid float payload (Huffman planes): a constant symbol is out of range")
        return [sym] * n
    head = 3 if v == 1 else 5
    if t > HUF_MAX or len(src) < head:
        raise bad("invalid float payload (Huffman planes): a plane header is invalid")
    if v == 1:
        first, last = src[1], src[2]
    else:
        first, last = src[1] | src[2] << 8, src[3] | src[4] << 8
    if first > last or last >= nsyms:
        raise bad("invalid float payload (Huffman planes): a plane header is invalid")
    if v == 1:
        at = 3 + (last - first + 2) // 2
        if len(src) < at:
            raise bad("invalid float payload (Huffman planes): a plane header is truncated")
        lens = [0] * 256
        for s in range(first, last + 1):
            lens[s] = src[3 + (s - first) // 2] >> 4 * ((s - first) & 1) & 15
        if (last - first) % 2 == 0 and src[at - 1] >> 4:
            raise bad("invalid float payload (Huffman planes): a padding nibble is not zero")
    else:
        lens, at = _table_v2(src, first, last, t)
    lf = huf_lenfield(n)
    if len(src) < at + lf * (HUF_STREAMS - 1):
        raise bad("invalid float payload (Huffman planes): a plane header is truncated")
    if max(lens) != t or sum(1 << (t - n) for n in lens if n) != 1 << t:
        raise bad("invalid float payload (Huffman planes): the code is not complete")
    # a t-bit lookup: the code at the bottom of any t bits (LSB-first) -> symbol, length
    lookup = [(0, 0)] * (1 << t)
    for s, c in enumerate(_huffman_codes(lens)):
        n_bits = lens[s]
        if n_bits:
            r = int(format(c, f"0{n_bits}b")[::-1], 2)
            lookup[r :: 1 << n_bits] = [(s, n_bits)] * (1 << (t - n_bits))
    sizes = list(struct.unpack_from(f"<{HUF_STREAMS - 1}{'H' if lf == 2 else 'I'}", src, at))
    at += lf * (HUF_STREAMS - 1)
    if sum(sizes) > len(src) - at:
        raise bad("invalid float payload (Huffman planes): stream lengths exceed the plane")
    sizes.append(len(src) - at - sum(sizes))
    m = -(-n // HUF_STREAMS)
    mask = (1 << t) - 1
    out: list[int] = []
    for k, size in enumerate(sizes):
        count = min(max(n - k * m, 0), m)
        data = bytes(src[at : at + size]) + bytes(8)  # zeros past the end: checked below
        at += size
        buf = nb = i = 0
        for _ in range(count):
            if nb < t:
                buf |= int.from_bytes(data[i : i + 6], "little") << nb
                i += 6
                nb += 48
            sym, length = lookup[buf & mask]
            out.append(sym)
            buf >>= length
            nb -= length
        used = 8 * i - nb  # bits of codes read
        if used > 8 * size:
            raise bad("invalid float payload (Huffman planes): a code runs past its stream")
        if -(-used // 8) != size or (size and data[size - 1] >> (used - 8 * (size - 1))):
            raise bad("invalid float payload (Huffman planes): a stream has bits over")
    return out


def _decode_huffman_py(view: memoryview, raw_len: int) -> bytes:
    """:func:`_decode_float` of a Huffman-planes payload without ``_floatcodec``."""
    import numpy as np

    bad = IntegrityError
    if len(view) < FLOAT_HEAD.size:
        raise bad(f"float payload of {len(view)} bytes has no header")
    width, skip, mask, rot = FLOAT_HEAD.unpack_from(view)
    v = 2 if mask & HUF_V2 else 1
    mask &= ~(HUF_FLAG | HUF_V2)
    if width not in FLOAT_WIDTHS or skip >= width or mask >> width or not 1 <= rot < 8 * width:
        raise bad("invalid float payload (Huffman planes): header is invalid")
    hl = FLOAT_HEAD.size + (v == 2)
    head = hl + 4 * width
    if len(view) < head or raw_len < skip:
        raise bad("invalid float payload (Huffman planes): header is truncated")
    k = view[4] if v == 2 else 0
    if k > HUF_KMAX or (k and not mask & 1):
        raise bad("invalid float payload (Huffman planes): header is invalid")
    lengths = struct.unpack_from(f"<{width}I", view, hl)
    n, tail = divmod(raw_len - skip, width)
    narrow = -(-n * (8 - k) // 8)
    if len(view) != head + skip + sum(lengths) + tail:
        raise bad("invalid float payload (Huffman planes): length does not match")
    planes: list[np.ndarray] = []
    at = head + skip
    for i, length in enumerate(lengths):
        plane = view[at : at + length]
        at += length
        bits = 8 + k if i == 0 else 8 - k if i == width - 1 else 8
        if mask >> i & 1:
            planes.append(np.array(_huffman_plane_py(plane, n, v, bits), np.uint64))
        elif i == width - 1 and k:
            if length != narrow:
                raise bad("invalid float payload (Huffman planes): a raw plane's length")
            flat = np.unpackbits(np.frombuffer(plane, np.uint8), bitorder="little")
            if flat[n * (8 - k) :].any():
                raise bad("invalid float payload (Huffman planes): a padding bit is not zero")
            weights = np.left_shift(np.uint64(1), np.arange(8 - k, dtype=np.uint64))
            cells = flat[: n * (8 - k)].reshape(n, 8 - k).astype(np.uint64)
            planes.append(cells @ weights if n else np.zeros(0, np.uint64))
        elif length != n:
            raise bad("invalid float payload (Huffman planes): a raw plane's length")
        else:
            planes.append(np.frombuffer(plane, np.uint8).astype(np.uint64))
    total = 8 * width
    y = np.left_shift(planes[0], np.uint64(total - 8 - k))
    for j in range(1, width):
        y |= np.left_shift(planes[j], np.uint64(8 * (j - 1)))
    y = (np.right_shift(y, np.uint64(rot)) | np.left_shift(y, np.uint64(total - rot))) & np.uint64(
        (1 << total) - 1
    )
    body = y.astype(f"<u{width}").tobytes()
    return b"".join([view[head : head + skip], body, view[at:]])
