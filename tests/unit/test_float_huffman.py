"""Huffman planes, the codec-3 sub-format (docs/format.md, section 2): the compiled coder
(``_floatcodec.hencode`` / ``hdecode``) against payloads built here by hand from the
written layout, bit-exact round trips of random and adversarial planes, and hostile
payloads, which must raise IntegrityError, never crash or read past the payload.
"""

from __future__ import annotations

import heapq
import math
import struct
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from modelvault.core import codec, floats
from modelvault.core.codec import Codec, decode
from modelvault.errors import IntegrityError

pytestmark = pytest.mark.usefixtures("float_codec")  # its writing is off by default

STREAMS = 8


# --- the layout, written here from docs/format.md ----------------------------------


def huffman_lengths(counts: dict[int, int], limit: int = 12) -> dict[int, int]:
    """Some valid (complete, at most ``limit`` bits) code lengths for ``counts``: a plain
    Huffman tree; the format does not fix which lengths a writer picks."""
    heap = [(c, s, [s]) for s, c in counts.items()]
    heapq.heapify(heap)
    depth = dict.fromkeys(counts, 0)
    tie = 256
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        for s in a[2] + b[2]:
            depth[s] += 1
        tie += 1
        heapq.heappush(heap, (a[0] + b[0], tie, a[2] + b[2]))
    assert max(depth.values()) <= limit  # the tests below keep alphabets small enough
    return depth


def canonical(lens: dict[int, int]) -> dict[int, tuple[int, int]]:
    """symbol -> (code, length), canonical as in RFC 1951 3.2.2."""
    out: dict[int, tuple[int, int]] = {}
    code = 0
    for length in range(1, max(lens.values()) + 1):
        for s in sorted(s for s, n in lens.items() if n == length):
            out[s] = (code, length)
            code += 1
        code <<= 1
    return out


def huffman_plane(plane: bytes, lens: dict[int, int] | None = None) -> bytes:
    """A Huffman plane of ``plane`` built from the documented layout."""
    if len(set(plane)) == 1:
        return bytes([0, plane[0]])
    if lens is None:
        lens = huffman_lengths({s: plane.count(s) for s in set(plane)})
    codes = canonical(lens)
    first, last = min(lens), max(lens)
    nibbles = [lens.get(s, 0) for s in range(first, last + 1)]
    nibbles += [0] * (len(nibbles) % 2)
    head = bytes([max(lens.values()), first, last])
    head += bytes(nibbles[i] | nibbles[i + 1] << 4 for i in range(0, len(nibbles), 2))
    m = -(-len(plane) // STREAMS)
    streams = []
    for k in range(STREAMS):
        bits = []
        for s in plane[k * m : (k + 1) * m]:
            code, length = codes[s]
            bits += [(code >> (length - 1 - i)) & 1 for i in range(length)]  # MSB first
        bits += [0] * (-len(bits) % 8)
        streams.append(
            bytes(sum(bits[i + j] << j for j in range(8)) for i in range(0, len(bits), 8))
        )
    fmt = "<7H" if m <= 43690 else "<7I"  # u16 lengths while a stream surely fits them
    return head + struct.pack(fmt, *map(len, streams[:7])) + b"".join(streams)


def huffman_payload(
    raw: bytes, width: int, skip: int, rot: int, coded: int, lens: dict[int, int] | None = None
) -> bytes:
    """A codec-3 payload with Huffman planes (mask bit 7), plane i coded if bit i of
    ``coded`` is set, else raw."""
    n = (len(raw) - skip) // width
    bits = 8 * width
    v = np.frombuffer(raw[skip : skip + n * width], f"<u{width}").astype(np.uint64)
    v = ((v << np.uint64(rot)) | (v >> np.uint64(bits - rot))) & np.uint64((1 << bits) - 1)
    planes = [((v >> np.uint64(bits - 8)) & np.uint64(255)).astype(np.uint8).tobytes()]
    planes += [
        ((v >> np.uint64(8 * k)) & np.uint64(255)).astype(np.uint8).tobytes()
        for k in range(width - 1)
    ]
    stored = [
        huffman_plane(p, lens if i == 0 else None) if coded >> i & 1 else p
        for i, p in enumerate(planes)
    ]
    head = struct.pack("<BBBB", width, skip, coded | 0x80, rot)
    head += struct.pack(f"<{width}I", *map(len, stored))
    return head + raw[:skip] + b"".join(stored) + raw[skip + n * width :]


def table_v2(lens: dict[int, int], first: int, last: int, t: int) -> bytes:
    """Sub-format 2 code lengths of symbols first..last: the documented bit string."""
    bits: list[int] = []

    def put(value: int, count: int) -> None:
        bits.extend(value >> i & 1 for i in range(count))

    prev, s = t, first
    while s <= last:
        n = lens.get(s, 0)
        if n == 0:
            run = 0
            while s + run <= last and not lens.get(s + run) and run < 17:
                run += 1
            if run >= 2:
                put(0b111, 3)
                put(0, 4)
                put(run - 2, 4)
                s += run
            else:
                put(0b011, 3)  # bits 1, 1, 0: absent
                s += 1
            continue
        if n == prev:
            put(0, 1)
        elif n == prev - 1:
            put(0b001, 3)  # 1, 0, then 0: one less
        elif n == prev + 1:
            put(0b101, 3)  # 1, 0, then 1: one more
        else:
            put(0b111, 3)
            put(n, 4)
        prev = n
        s += 1
    bits += [0] * (-len(bits) % 8)
    return bytes(sum(bits[i + j] << j for j in range(8)) for i in range(0, len(bits), 8))


def huffman_plane_v2(symbols: list[int], lens: dict[int, int] | None = None) -> bytes:
    """A sub-format 2 Huffman plane of ``symbols`` built from the documented layout."""
    if len(set(symbols)) == 1:
        return bytes([0]) + struct.pack("<H", symbols[0])
    if lens is None:  # counts floored at 1/1024 of the total: no code over 12 bits
        counts = np.bincount(symbols)
        floor = max(1, len(symbols) >> 10)
        lens = huffman_lengths({s: max(int(c), floor) for s, c in enumerate(counts) if c})
    codes = canonical(lens)
    first, last, t = min(lens), max(lens), max(lens.values())
    head = bytes([t]) + struct.pack("<HH", first, last) + table_v2(lens, first, last, t)
    m = -(-len(symbols) // STREAMS)
    streams = []
    for k in range(STREAMS):
        bits = []
        for s in symbols[k * m : (k + 1) * m]:
            code, length = codes[s]
            bits += [(code >> (length - 1 - i)) & 1 for i in range(length)]  # MSB first
        bits += [0] * (-len(bits) % 8)
        streams.append(
            bytes(sum(bits[i + j] << j for j in range(8)) for i in range(0, len(bits), 8))
        )
    fmt = "<7H" if m <= 43690 else "<7I"
    return head + struct.pack(fmt, *map(len, streams[:7])) + b"".join(streams)


def huffman_payload_v2(
    raw: bytes,
    width: int,
    skip: int,
    rot: int,
    k: int,
    coded: int,
    lens: dict[int, dict[int, int]] | None = None,
) -> bytes:
    """A codec-3 payload of Huffman planes, sub-format 2 (mask bits 7 and 6, fifth header
    byte K): plane 0 the top 8 + K bits of each rotated element, plane w - 1 its low 8 - K
    bits (packed when raw), plane i coded if bit i of ``coded`` is set (``lens[i]``: the
    code lengths to use)."""
    n = (len(raw) - skip) // width
    bits = 8 * width
    v = np.frombuffer(raw[skip : skip + n * width], f"<u{width}").astype(np.uint64)
    v = ((v << np.uint64(rot)) | (v >> np.uint64(bits - rot))) & np.uint64((1 << bits) - 1)
    planes = [[int(x) for x in v >> np.uint64(bits - 8 - k)]]
    planes += [[int(x) for x in (v >> np.uint64(8 * j)) & np.uint64(255)] for j in range(width - 1)]
    planes[-1] = [x & ((1 << (8 - k)) - 1) for x in planes[-1]]
    stored = []
    for i, plane in enumerate(planes):
        if coded >> i & 1:
            stored.append(huffman_plane_v2(plane, (lens or {}).get(i)))
        elif i == width - 1 and k:
            flat = [x >> b & 1 for x in plane for b in range(8 - k)]
            flat += [0] * (-len(flat) % 8)
            stored.append(
                bytes(sum(flat[i + j] << j for j in range(8)) for i in range(0, len(flat), 8))
            )
        else:
            stored.append(bytes(plane))
    head = struct.pack("<BBBBB", width, skip, coded | 0xC0, rot, k)
    head += struct.pack(f"<{width}I", *map(len, stored))
    return head + raw[:skip] + b"".join(stored) + raw[skip + n * width :]


def lengths_v2(plane: bytes) -> dict[int, int]:
    """The code lengths a sub-format 2 Huffman plane declares, read as documented."""
    t, first, last = plane[0], *struct.unpack_from("<HH", plane, 1)
    pos = 0

    def get(count: int) -> int:
        nonlocal pos
        x = sum((plane[5 + (pos + i) // 8] >> ((pos + i) % 8) & 1) << i for i in range(count))
        pos += count
        return x

    lens: dict[int, int] = {}
    prev, s = t, first
    while s <= last:
        if not get(1):
            lens[s] = prev
        elif not get(1):
            prev += 1 if get(1) else -1
            lens[s] = prev
        elif not get(1):
            pass
        else:
            value = get(4)
            if value == 0:
                s += get(4) + 2
                continue
            lens[s] = prev = value
        s += 1
    return lens


def planes_of(payload: bytes) -> list[bytes]:
    """The stored planes of a sub-format 2 payload."""
    width, skip = payload[0], payload[1]
    lengths = struct.unpack_from(f"<{width}I", payload, 5)
    at = 5 + 4 * width + skip
    out = []
    for length in lengths:
        out.append(payload[at : at + length])
        at += length
    return out


def weights(count: int, seed: int = 0, scale: float = 0.02) -> bytes:
    return np.random.default_rng(seed).normal(0, scale, count).astype("<f4").tobytes()


def both_decoders(payload: bytes, raw_len: int) -> bytes:
    """Decode with the compiled reader and the pure-Python one; they must agree, in the
    bytes or in refusing."""
    try:
        c_out: bytes | None = decode(Codec.FLOAT, payload, raw_len)
    except IntegrityError:
        c_out = None
    try:
        py_out: bytes | None = floats._decode_huffman_py(memoryview(payload), raw_len)
    except IntegrityError:
        py_out = None
    assert c_out == py_out
    if c_out is None:
        raise IntegrityError("refused by both")
    return c_out


# --- the reader follows the layout --------------------------------------------------


@pytest.mark.parametrize(
    ("width", "skip", "coded"), [(4, 0, 1), (4, 3, 0b1011), (2, 1, 3), (2, 0, 2)]
)
def test_hand_built_huffman_payload_decodes(width: int, skip: int, coded: int) -> None:
    raw = b"\x07" * skip + weights(1500, seed=width + skip)[: 5999 - skip] + b"\x01"
    payload = huffman_payload(raw, width, skip, 1, coded)
    assert both_decoders(payload, len(raw)) == raw


def test_any_complete_code_decodes_not_only_the_writers() -> None:
    """Lengths a writer would not choose (the rarest symbol on the shortest code) are as
    valid: the reader follows the lengths it is given. (Width 2, rotation 8: plane 0 is
    the even bytes.)"""
    even = bytes([1] * 900 + [2] * 90 + [3] * 9 + [4]) * 3
    raw = bytes(b for e in even for b in (e, 0))
    for lens in ({1: 1, 2: 2, 3: 3, 4: 3}, {1: 3, 2: 3, 3: 2, 4: 1}):
        payload = huffman_payload(raw, 2, 0, 8, 1, lens)
        assert both_decoders(payload, len(raw)) == raw


@pytest.mark.parametrize("kind", ["weights", "bf16", "fp16", "geometric", "same-exponent"])
@pytest.mark.parametrize("width", [2, 4])
@pytest.mark.parametrize("count", [6_000, 37, 333])
def test_encoder_output_follows_the_layout(kind: str, width: int, count: int) -> None:
    """What hencode writes (sub-format 2) is byte for byte the documented layout, built
    here from the raw bytes given the writer's choices (K, which planes are coded, the
    code lengths), and decodes with the pure-Python reader too. (The encoder codes two
    streams at once: the counts give streams of unequal length.)"""
    raw = b"\x05" + adversarial(kind, count, 4) + b"\x06\x07"
    payload = codec.encode_float_huffman(raw, width, 1, 1, (1 << width) - 1)
    w, skip, mask, rot, k = struct.unpack_from("<BBBBB", payload)
    assert (w, skip, rot) == (width, 1, 1) and mask & 0xC0 == 0xC0 and k <= 2
    lengths = struct.unpack_from(f"<{width}I", payload, 5)
    n = (len(raw) - 1) // width
    assert len(payload) == 5 + 4 * width + 1 + sum(lengths) + (len(raw) - 1) % width
    planes = planes_of(payload)
    lens = {i: lengths_v2(p) for i, p in enumerate(planes) if mask >> i & 1 and p[0]}
    assert huffman_payload_v2(raw, width, 1, 1, k, mask & 0x3F, lens) == payload
    for i, length in enumerate(lengths):
        raw_length = -(-n * (8 - k) // 8) if i == width - 1 and k else n
        if count >= 6_000:  # (a few dozen symbols may not pay for a code's header)
            assert (length < raw_length) if mask >> i & 1 else (length == raw_length)
    assert both_decoders(payload, len(raw)) == raw


@pytest.mark.parametrize(("size", "seed"), [(68, 2), (70, 2), (82, 0), (84, 0), (98, 0)])
def test_coded_planes_with_an_empty_stream_follow_the_layout(size: int, seed: int) -> None:
    """A coded plane of n symbols whose eighth stream is empty (n = 34 to 49: m =
    ceil(n / 8) symbols a stream fill seven) is written as the layout says: hencode
    codes the streams two at a time, and the last pair holds one empty stream. (Seeds
    whose plane 0 pays for a code at this size.)"""
    from modelvault import _floatcodec

    raw = adversarial("geometric", size, seed)[:size]
    payload = _floatcodec.hencode(raw, 2, 0, 1, 3, 1024)  # keep 1024: code what shrinks
    w, skip, mask, rot, k = struct.unpack_from("<BBBBB", payload)
    n = size // 2
    m = -(-n // 8)
    assert (w, skip, rot) == (2, 0, 1) and mask & 1 and 7 * m >= n  # coded; stream 7 empty
    planes = planes_of(payload)
    assert planes[0][0]  # Huffman-coded, not a constant plane
    lens = {i: lengths_v2(p) for i, p in enumerate(planes) if mask >> i & 1 and p[0]}
    assert huffman_payload_v2(raw, 2, 0, 1, k, mask & 0x3F, lens) == payload
    assert both_decoders(payload, len(raw)) == raw


def test_writer_codes_mantissa_bits_with_the_exponent_of_weights() -> None:
    """On weights drawn like trained ones the writer takes K > 0 (the top mantissa bits
    are skewed within each exponent), and the payload is smaller than with K = 0."""
    raw = adversarial("bf16", 40_000, 6)
    payload = codec.encode_float_huffman(raw, 2, 0, 1, 3)
    assert payload[4] > 0
    without = huffman_payload_v2(raw, 2, 0, 1, 0, 1)
    assert len(payload) < len(without)
    assert both_decoders(without, len(raw)) == raw


@pytest.mark.parametrize("k", [0, 1, 2])
@pytest.mark.parametrize(("width", "coded"), [(2, 1), (2, 3), (4, 1), (4, 0b1001), (4, 0b1111)])
def test_hand_built_sub_format_2_decodes(k: int, width: int, coded: int) -> None:
    raw = b"\x09" + adversarial("bf16" if width == 2 else "weights", 1500, k)[:5999] + b"\x01"
    payload = huffman_payload_v2(raw, width, 1, 1, k, coded)
    assert both_decoders(payload, len(raw)) == raw


@pytest.mark.slow
def test_a_plane_of_more_than_8_x_43690_symbols_has_u32_stream_lengths() -> None:
    """Past 349,520 symbols (larger than any chunk) a stream may exceed 65535 bytes, so
    its length is a u32; both forms follow the layout."""
    rng = np.random.default_rng(8)
    even = np.minimum(rng.geometric(0.3, 350_000), 40).astype(np.uint8)
    raw = np.stack([even, np.zeros_like(even)], 1).tobytes()  # width 2, rotation 8
    payload = codec.encode_float_huffman(raw, 2, 0, 8, 1)
    k, mask = payload[4], payload[2] & 0x3F
    lens = {i: lengths_v2(p) for i, p in enumerate(planes_of(payload)) if mask >> i & 1 and p[0]}
    assert payload == huffman_payload_v2(raw, 2, 0, 8, k, mask, lens)
    assert both_decoders(payload, len(raw)) == raw


@pytest.mark.parametrize(
    "args", [(3, 0, 1, 1, 1000), (2, 2, 1, 1, 1000), (2, 0, 16, 1, 1000), (4, -2, 1, 1, 1000),
             (2, 0, 1, 1, 1025), (2, 0, 1, 1, -1)]
)  # fmt: skip
def test_encoder_refuses_parameters_out_of_range(args: tuple[int, int, int, int, int]) -> None:
    """keep above 1024 would let a coded plane outgrow the payload's buffer."""
    with pytest.raises(ValueError, match="supported"):
        floats._fc.hencode(weights(3000), *args)


def test_constant_plane_is_three_bytes() -> None:
    raw = np.full(10_000, 0.5, "<f4").tobytes()  # one exponent, mantissa all zero
    payload = codec.encode_float_huffman(raw, 4, 0, 1, 0b1111)
    assert struct.unpack_from("<4I", payload, 5) == (3, 3, 3, 3)
    assert len(payload) == 5 + 16 + 12
    assert both_decoders(payload, len(raw)) == raw


# --- round trips, random and adversarial --------------------------------------------


SPECIAL_F32 = np.array(
    [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1e-40, 3.4e38, -3.4e38],
    "<f4",
)


def adversarial(kind: str, count: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    if kind == "same-exponent":
        return (rng.random(count, dtype=np.float32) + np.float32(1)).astype("<f4").tobytes()
    if kind == "specials":
        return rng.choice(SPECIAL_F32, count).astype("<f4").tobytes()
    if kind == "nan-payloads":
        bits = rng.integers(0, 1 << 22, count, dtype=np.uint32) | np.uint32(0x7FC00000)
        return bits.astype("<u4").tobytes()
    if kind == "denormals":
        return rng.integers(0, 1 << 23, count, dtype=np.uint32).astype("<u4").tobytes()
    if kind == "single-byte":
        return bytes([rng.integers(0, 256)]) * (4 * count)
    if kind == "all-256":
        return rng.permutation(np.tile(np.arange(256, dtype=np.uint8), count // 64 + 1)).tobytes()
    if kind == "two-symbols":
        return rng.choice(np.array([0, 255], np.uint8), 4 * count).tobytes()
    if kind == "skewed":  # one symbol nearly always: the longest codes, 12 bits
        out = np.zeros(4 * count, np.uint8)
        if count:
            out[rng.integers(0, 4 * count, 40)] = rng.integers(1, 256, 40)
        return out.tobytes()
    if kind == "geometric":  # counts halving: a tree deeper than 12, limited
        out = np.minimum(rng.geometric(0.5, 4 * count), 255).astype(np.uint8)
        return out.tobytes()
    if kind == "bf16":
        bits = np.frombuffer(weights(count, seed), "<u4")
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()
    if kind == "fp16":
        return np.frombuffer(weights(count, seed), "<f4").astype("<f2").tobytes()
    return weights(count, seed)


KINDS = [
    "weights", "same-exponent", "specials", "nan-payloads", "denormals", "single-byte",
    "all-256", "two-symbols", "skewed", "geometric", "bf16", "fp16",
]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    count=st.integers(0, 6000),
    cut=st.integers(0, 3),
    seed=st.integers(0, 2**16),
    width=st.sampled_from([2, 4]),
    skip=st.integers(0, 3),
    rot=st.integers(1, 31),
    tries=st.integers(0, 15),
)
def test_round_trip_is_bit_exact(
    kind: str, count: int, cut: int, seed: int, width: int, skip: int, rot: int, tries: int
) -> None:
    raw = adversarial(kind, count, seed)
    raw = raw[: max(0, len(raw) - cut)]  # sizes not a multiple of the dtype
    skip %= width
    rot = rot % (8 * width - 1) + 1
    assume(skip <= len(raw))
    payload = codec.encode_float_huffman(raw, width, skip, rot, tries & ((1 << width) - 1))
    assert both_decoders(payload, len(raw)) == raw


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("width", [2, 4])
def test_adversarial_planes_at_chunk_size(kind: str, width: int) -> None:
    raw = adversarial(kind, 40_000, 11)[:150_001]
    payload = codec.encode_float_huffman(raw, width, -1, 1, (1 << width) - 1)
    assert decode(Codec.FLOAT, payload, len(raw)) == raw
    assert floats._decode_huffman_py(memoryview(payload), len(raw)) == raw


@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16"])
def test_store_encode_takes_huffman_planes_for_hinted_floats(dtype: str) -> None:
    f32 = np.frombuffer(weights(60_000, seed=3), "<f4")
    raw = {"F32": f32.tobytes(), "BF16": adversarial("bf16", 60_000, 3)}.get(
        dtype, f32.astype("<f2").tobytes()
    )
    how, payload = codec.encode(raw[1:], dtype=dtype)  # cut at an odd offset
    width = 4 if dtype == "F32" else 2
    assert how == Codec.FLOAT and payload[2] & 0x80 and payload[1] == width - 1
    entropy_share = {"F32": 0.86, "BF16": 0.70, "F16": 0.90}[dtype]
    assert len(payload) < entropy_share * len(raw)
    assert decode(how, bytes(payload), len(raw) - 1) == raw[1:]


def test_hinted_floats_that_do_not_shrink_are_not_float_planes() -> None:
    raw = np.random.default_rng(1).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    assert codec.encode(raw, dtype="F32")[0] == Codec.RAW


# --- hostile payloads ---------------------------------------------------------------


def _good() -> tuple[bytes, bytes]:
    raw = b"\x01" + weights(3000, seed=9) + b"\x02\x03"
    return raw, huffman_payload(raw, 4, 1, 1, 0b0001)


def _plane0_at() -> int:
    return 4 + 16 + 1


def _set(p: bytes, at: int, value: bytes) -> bytes:
    return p[:at] + value + p[at + len(value) :]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p[:3], "no header"),
        (lambda p: _set(p, 0, b"\x03"), "header is invalid"),
        (lambda p: _set(p, 1, b"\x04"), "header is invalid"),
        (lambda p: _set(p, 2, b"\x91"), "header is invalid"),  # a plane beyond width 4
        (lambda p: _set(p, 3, b"\x00"), "header is invalid"),
        (lambda p: p[:10], "truncated"),
        (lambda p: p[:-1], "length does not match"),
        (lambda p: p + b"\x00", "length does not match"),
        (lambda p: _set(p, 2, b"\x80"), "raw float plane"),  # plane 0 claims to be raw
        (lambda p: _set(p, _plane0_at(), b"\x0d"), "header is invalid"),  # T = 13
        (lambda p: _set(p, _plane0_at(), b"\x01"), "longer than"),  # T below a length
        (lambda p: _set(p, _plane0_at() + 1, b"\xff"), "symbol range"),  # f > l
        (lambda p: _set(p, _plane0_at() + 3, b"\x00"), "complete code"),  # a length dropped
    ],
)
def test_damaged_huffman_payloads_are_refused(
    damage: Callable[[bytes], bytes], message: str
) -> None:
    raw, payload = _good()
    assert decode(Codec.FLOAT, payload, len(raw)) == raw
    with pytest.raises(IntegrityError, match=message):
        decode(Codec.FLOAT, damage(payload), len(raw))
    with pytest.raises(IntegrityError):
        floats._decode_huffman_py(memoryview(damage(payload)), len(raw))


def _plane_payload(plane: bytes, n: int) -> tuple[bytes, int]:
    """A width-2 payload whose plane 0 is ``plane`` (as given) and plane 1 raw zeros."""
    head = struct.pack("<BBBB", 2, 0, 0x81, 1) + struct.pack("<2I", len(plane), n)
    return head + plane + bytes(n), 2 * n


def _codes_head(lens: dict[int, int]) -> bytes:
    first, last = min(lens), max(lens)
    nib = [lens.get(s, 0) for s in range(first, last + 1)]
    nib += [0] * (len(nib) % 2)
    return bytes([max(lens.values()), first, last]) + bytes(
        nib[i] | nib[i + 1] << 4 for i in range(0, len(nib), 2)
    )


@pytest.mark.parametrize(
    ("plane", "n", "message"),
    [
        (b"", 4, "empty"),
        (b"\x00\x05\x00", 4, "constant plane"),
        (b"\x00", 4, "constant plane"),
        (_codes_head({3: 1, 4: 2}) + bytes(14), 1, "complete code"),  # Kraft 3/4
        (_codes_head({3: 1, 4: 1, 5: 1}) + bytes(14), 1, "complete code"),  # Kraft 3/2
        (_codes_head({3: 1, 5: 1})[:-1] + b"\x11" + bytes(14), 1, "padding nibble"),
        (_codes_head({3: 1, 4: 1}) + bytes(13), 1, "truncated"),
        (
            _codes_head({3: 1, 4: 1}) + struct.pack("<7H", 1 << 15, 1 << 15, 0, 0, 0, 0, 0),
            1,
            "stream lengths",
        ),
        # 9 symbols of 1 bit each into 8 streams: stream 0 holds two; one byte is enough,
        # but give it none
        (_codes_head({3: 1, 4: 1}) + bytes(14) + bytes(7), 9, "does not hold"),
        # a stream with a nonzero padding bit
        (
            _codes_head({3: 1, 4: 1}) + struct.pack("<7H", *[1] * 7) + b"\x02" + bytes(7),
            8,
            "does not hold",
        ),
        # a stream with a whole byte too many
        (
            _codes_head({3: 1, 4: 1}) + struct.pack("<7H", 2, 1, 1, 1, 1, 1, 1) + bytes(9),
            8,
            "does not hold",
        ),
    ],
)
def test_malformed_huffman_planes_are_refused(plane: bytes, n: int, message: str) -> None:
    payload, raw_len = _plane_payload(plane, n)
    with pytest.raises(IntegrityError, match=message):
        decode(Codec.FLOAT, payload, raw_len)
    with pytest.raises(IntegrityError):
        floats._decode_huffman_py(memoryview(payload), raw_len)


def test_a_well_formed_tiny_plane_decodes() -> None:
    """The counterpart of the refusals above: 8 one-bit symbols, one a stream (symbol 3
    has code 0, symbol 4 code 1); plane 1 is zeros, so each element is symbol << 7."""
    plane = _codes_head({3: 1, 4: 1}) + struct.pack("<7H", *[1] * 7) + b"\x00\x01" * 4
    payload, raw_len = _plane_payload(plane, 8)
    out = both_decoders(payload, raw_len)
    assert [int.from_bytes(out[2 * i : 2 * i + 2], "little") >> 7 for i in range(8)] == [
        3, 4, 3, 4, 3, 4, 3, 4
    ]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 3),
    width=st.sampled_from([2, 4]),
)
def test_mutated_payloads_raise_or_decode_to_the_raw_length(
    seed: int, edits: list[tuple[int, int]], cut: int, width: int
) -> None:
    """Any damage: the compiled and Python readers agree, refusing with IntegrityError
    or giving exactly raw-length bytes (a mutation can make another valid payload; the
    caller's id check catches that)."""
    raw = adversarial(["weights", "bf16", "geometric"][seed % 3], 700, seed)
    payload = bytearray(codec.encode_float_huffman(raw, width, -1, 1, (1 << width) - 1))
    for at, value in edits:
        payload[4 + at % (len(payload) - 4)] = value  # keep the header's flag mostly
    payload = payload[: len(payload) - cut]
    try:
        out = both_decoders(bytes(payload), len(raw))
    except IntegrityError:
        return
    assert len(out) == len(raw)


def test_a_huge_raw_length_with_a_tiny_payload_is_refused_not_allocated() -> None:
    _, payload = _good()
    with pytest.raises(IntegrityError):
        decode(Codec.FLOAT, payload, 1 << 40)


def test_float_bound_covers_huffman_payloads() -> None:
    for kind in KINDS:
        raw = adversarial(kind, 5000, 2)
        for width in (2, 4):
            payload = codec.encode_float_huffman(raw, width, -1, 1, (1 << width) - 1)
            assert len(payload) <= codec.float_bound(len(raw))
    assert math.isfinite(codec.float_bound(0))


def test_threads_encode_and_decode_at_once() -> None:
    """hencode / hdecode release the GIL and keep no shared state: many threads at once
    give every chunk's own payload and bytes back."""
    from concurrent.futures import ThreadPoolExecutor

    chunks = [adversarial(KINDS[i % len(KINDS)], 20_000, i)[i % 5 :] for i in range(24)]
    alone = [codec.encode_float_huffman(c, 2 + 2 * (i % 2), -1, 1, 3) for i, c in enumerate(chunks)]

    def both(i: int) -> tuple[bytes, bytes]:
        p = codec.encode_float_huffman(chunks[i], 2 + 2 * (i % 2), -1, 1, 3)
        return p, decode(Codec.FLOAT, alone[i], len(chunks[i]))

    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            for i, (payload, raw) in enumerate(pool.map(both, range(len(chunks)))):
                assert payload == alone[i] and raw == chunks[i]


def test_python_reader_without_the_compiled_module(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = b"\x01" + adversarial("bf16", 30_000, 5) + b"\x02"
    how, payload = codec.encode(raw, dtype="BF16")
    assert how == Codec.FLOAT and payload[2] & 0x80
    monkeypatch.setattr(floats, "_fc", None)
    assert decode(how, bytes(payload), len(raw)) == raw
    assert codec.encode(raw, dtype="BF16")[0] != Codec.FLOAT  # and it writes none


# --- sub-format 2: hostile payloads -------------------------------------------------


def _good_v2() -> tuple[bytes, bytes]:
    """A width-2 payload with K = 2, plane 0 coded, the narrow plane raw: 2999 elements
    of 6 bits leave 6 padding bits in its last byte."""
    raw = b"\x01" + adversarial("bf16", 3000, 9)[:5998] + b"\x02"
    return raw, huffman_payload_v2(raw, 2, 1, 1, 2, 1)


def _bits(*fields: tuple[int, int]) -> bytes:
    """(value, width) fields as an LSB-first bit string, padded with zeros."""
    flat = [v >> i & 1 for v, w in fields for i in range(w)]
    flat += [0] * (-len(flat) % 8)
    return bytes(sum(flat[i + j] << j for j in range(8)) for i in range(0, len(flat), 8))


def _plane_payload_v2(plane: bytes, n: int) -> tuple[bytes, int]:
    """A width-2 sub-format 2 payload (K = 0) whose plane 0 is ``plane``, plane 1 raw."""
    head = struct.pack("<BBBBB", 2, 0, 0xC1, 1, 0) + struct.pack("<2I", len(plane), n)
    return head + plane + bytes(n), 2 * n


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: _set(p, 4, b"\x03"), "header is invalid"),  # K = 3
        (lambda p: _set(p, 2, b"\xc0"), "header is invalid"),  # K = 2 with plane 0 raw
        (lambda p: _set(p, len(p) - 2, bytes([p[-2] | 0x80])), "padding bits"),
        (lambda p: p[:-2] + p[-1:], "length does not match"),
    ],
)
def test_damaged_sub_format_2_payloads_are_refused(
    damage: Callable[[bytes], bytes], message: str
) -> None:
    raw, payload = _good_v2()
    assert both_decoders(payload, len(raw)) == raw
    with pytest.raises(IntegrityError, match=message):
        decode(Codec.FLOAT, damage(payload), len(raw))
    with pytest.raises(IntegrityError):
        floats._decode_huffman_py(memoryview(damage(payload)), len(raw))


_LENS_3_4 = _bits((0b111, 3), (1, 4), (0, 1))  # symbol 3: length 1; symbol 4: the same


@pytest.mark.parametrize(
    ("plane", "n", "message"),
    [
        (b"\x00\x05", 4, "constant plane"),  # sub-format 2: 3 bytes
        (b"\x00\x00\x01", 4, "out of range"),  # symbol 256 in a plane of bytes
        (b"\x01" + struct.pack("<HH", 3, 300), 1, "out of range"),  # last above 255
        (b"\x01" + struct.pack("<HH", 4, 3), 1, "range"),  # first above last
        (b"\x01" + struct.pack("<HH", 3, 4) + _bits((0b111, 3), (13, 4)), 1, "out of range"),
        (b"\x01" + struct.pack("<HH", 3, 4) + _bits((0b111, 3), (0, 4), (1, 4)), 1, "passes"),
        (b"\x01" + struct.pack("<HH", 3, 4) + _bits((0b001, 3)), 1, "out of range"),  # 1 -> 0
        (b"\x01" + struct.pack("<HH", 3, 4), 1, "truncated"),  # no table
        (b"\x01" + struct.pack("<HH", 3, 4) + _bits((0, 2), (1, 1)) + bytes(14), 1, "padding"),
        (b"\x01" + struct.pack("<HH", 3, 5) + _LENS_3_4 + bytes(14), 1, "truncated"),
        (b"\x01" + struct.pack("<HH", 3, 4) + _bits((0, 1), (0b011, 3)) + bytes(14), 1, "complete"),
    ],
)
def test_malformed_sub_format_2_planes_are_refused(plane: bytes, n: int, message: str) -> None:
    payload, raw_len = _plane_payload_v2(plane, n)
    with pytest.raises(IntegrityError, match=message):
        decode(Codec.FLOAT, payload, raw_len)
    with pytest.raises(IntegrityError):
        floats._decode_huffman_py(memoryview(payload), raw_len)


def test_a_well_formed_tiny_sub_format_2_plane_decodes() -> None:
    """Symbols 3 and 4 of one bit each (T = 1: the first length coded as 'the same as
    T', the second too), 8 symbols one a stream."""
    plane = b"\x01" + struct.pack("<HH", 3, 4) + _bits((0, 1), (0, 1))
    plane += struct.pack("<7H", *[1] * 7) + b"\x00\x01" * 4
    payload, raw_len = _plane_payload_v2(plane, 8)
    out = both_decoders(payload, raw_len)
    assert [int.from_bytes(out[2 * i : 2 * i + 2], "little") >> 7 for i in range(8)] == [
        3, 4, 3, 4, 3, 4, 3, 4
    ]  # fmt: skip


def test_inputs_past_the_per_thread_scratch_round_trip() -> None:
    """Chunks reuse a per-thread scratch block; an input needing more than its 8 MiB cap
    takes fresh memory, and a small one after it the block again: all bit-exact."""
    big = adversarial("bf16", 2_500_000, 12)  # ~5 MB: planes, symbols and streams > 8 MiB
    for raw in (adversarial("fp16", 30_000, 13), big, adversarial("weights", 30_000, 14)):
        payload = codec.encode_float_huffman(raw, 2, -1, 1, 3)
        assert decode(Codec.FLOAT, payload, len(raw)) == raw
