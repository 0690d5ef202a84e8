"""Codecs (docs/format.md, section 2): round trips, the transfer encoder's choices, and
hostile payloads, which must raise IntegrityError without allocating past the raw length.

Byte-planes payloads are built here by hand from the written layout (not only with the
module's encoder), so these tests also check that the code follows docs/format.md.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from modelvault.core import codec, floats
from modelvault.core.codec import Codec, decode, encode_for_transfer, encode_planes
from modelvault.errors import IntegrityError

pytestmark = pytest.mark.usefixtures("float_codec")  # its writing is off by default

LANE_ZSTD = zstandard.ZstdCompressor(level=1)


def weights(count: int, seed: int = 0, scale: float = 0.02) -> bytes:
    """float32 values drawn like trained weights (what the benchmark uses)."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, scale, count).astype("<f4").tobytes()


def planes(width: int, lanes: list[bytes], mask: int, tail: bytes = b"") -> bytes:
    """A byte-planes payload laid out as docs/format.md says."""
    head = struct.pack("<BB", width, mask) + struct.pack(f"<{width}I", *map(len, lanes))
    return head + b"".join(lanes) + tail


def split(raw: bytes, width: int) -> tuple[list[bytes], bytes]:
    """Lanes and tail of ``raw``, computed the slow obvious way."""
    n = len(raw) // width
    return [raw[i : n * width : width] for i in range(width)], raw[n * width :]


# --- round trips --------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000), width=st.integers(2, 8))
def test_planes_round_trip_random_bytes(data: bytes, width: int) -> None:
    payload = bytes(encode_planes(data, width=width))
    assert decode(Codec.PLANES, payload, len(data)) == data
    assert payload[0] == width
    assert len(payload) <= codec.planes_bound(len(data))


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(0, 7) | st.integers(8, 70_000),
    seed=st.integers(0, 2**32 - 1),
    phase=st.integers(0, 3),
)
def test_transfer_round_trip_floats_at_any_phase(size: int, seed: int, phase: int) -> None:
    data = weights(size // 4 + 2, seed)[phase : phase + size]
    how, payload = encode_for_transfer(data)
    assert decode(how, bytes(payload), len(data)) == data
    if how != Codec.RAW:
        assert len(payload) < len(data) * codec.TRANSFER_KEEP


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=40_000))
def test_transfer_round_trip_any_bytes(data: bytes) -> None:
    how, payload = encode_for_transfer(data)
    assert decode(how, bytes(payload), len(data)) == data


INTERLEAVES = ["compiled", "numpy"]


@contextlib.contextmanager
def interleaving(how: str) -> Iterator[None]:
    """Decode byte planes with the compiled interleave or with the numpy fallback."""
    compiled = codec._interleave
    if how == "numpy":
        codec._interleave = None
    try:
        yield
    finally:
        codec._interleave = compiled


def test_the_compiled_interleave_is_built() -> None:
    """``make test`` builds modelvault._planes (optional for users: numpy stands in)."""
    assert codec._interleave is not None, "modelvault._planes was not built: is gcc there?"


@pytest.mark.parametrize("how", INTERLEAVES)
@settings(max_examples=100, deadline=None)
@given(items=st.lists(st.tuples(st.binary(max_size=2000), st.integers(2, 8)), max_size=20))
def test_many_payloads_decode_together(how: str, items: list[tuple[bytes, int]]) -> None:
    """split_planes then join_planes (the importer's batch path), widths mixed, with and
    without buffers handed in."""
    split = [codec.split_planes(bytes(encode_planes(d, width=w)), len(d)) for d, w in items]
    given_buffers: list[bytearray] = []

    def alloc(n: int) -> memoryview:
        given_buffers.append(bytearray(b"\xee" * (n + 3)))  # larger, and not zeroed
        return memoryview(given_buffers[-1])

    with interleaving(how):
        assert [bytes(raw) for raw in codec.join_planes(split)] == [d for d, _ in items]
        joined = codec.join_planes(split, alloc)
    assert [bytes(raw) for raw in joined] == [d for d, _ in items]
    for raw in joined:  # views of the buffers handed in
        view = np.frombuffer(raw, np.uint8)
        assert not len(raw) or any(np.shares_memory(view, buf) for buf in given_buffers)


@pytest.mark.parametrize("how", INTERLEAVES)
@pytest.mark.parametrize("width", range(2, 9))
@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 1000, 65_537])
def test_every_width_the_reader_accepts(how: str, width: int, size: int) -> None:
    raw = weights(size // 4 + 1)[:size]
    lanes, tail = split(raw, width)
    packed = [LANE_ZSTD.compress(lane) for lane in lanes]
    mask = 0b10101010 & ((1 << width) - 1)  # odd lanes zstd, even lanes raw
    chosen = [packed[i] if mask >> i & 1 else lanes[i] for i in range(width)]
    with interleaving(how):
        assert decode(Codec.PLANES, planes(width, chosen, mask, tail), size) == raw


def test_compiled_interleave_checks_its_arguments() -> None:
    from modelvault import _planes

    out = bytearray(12)
    _planes.interleave(out, [b"abc", memoryview(b"def"), bytearray(b"ghi"), b"jkl"])
    assert out == b"adgjbehkcfil"
    _planes.interleave(out, [b"abcdefghijkl"])  # one lane: a copy
    assert out == b"abcdefghijkl"
    with pytest.raises(ValueError, match="lane 1 is 2 bytes, lane 0 is 3"):
        _planes.interleave(out, [b"abc", b"de"])
    with pytest.raises(ValueError, match="out holds 5 bytes"):
        _planes.interleave(bytearray(5), [b"abc", b"def"])
    with pytest.raises(ValueError, match="9 lanes"):
        _planes.interleave(bytearray(9), [b"a"] * 9)
    with pytest.raises(ValueError, match="0 lanes"):
        _planes.interleave(bytearray(9), [])
    with pytest.raises(BufferError):  # out must be writable
        _planes.interleave(b"123456", [b"abc", b"def"])
    with pytest.raises(TypeError):
        _planes.interleave(bytearray(6), [b"abc", "def"])  # type: ignore[list-item]


def test_lanes_follow_the_written_layout() -> None:
    raw = weights(5000) + b"abc"  # 20_003 bytes: a 3-byte tail
    payload = bytes(encode_planes(raw, width=4))
    width, mask = struct.unpack_from("<BB", payload)
    lengths = struct.unpack_from("<4I", payload, 2)
    assert width == 4 and len(payload) == 18 + sum(lengths) + 3
    assert payload.endswith(b"abc")
    lanes, _ = split(raw, 4)
    at = 18
    for i, length in enumerate(lengths):
        lane = payload[at : at + length]
        body = zstandard.ZstdDecompressor().decompress(lane) if mask >> i & 1 else lane
        assert body == lanes[i]
        at += length


# --- what the transfer encoder chooses -------------------------------------------------


@pytest.mark.parametrize("phase", range(4))
def test_float_weights_travel_as_byte_planes(phase: int) -> None:
    data = weights(20_000, seed=phase)[phase : phase + 65_536]
    how, payload = encode_for_transfer(data)
    assert how == Codec.PLANES
    plain = len(zstandard.ZstdCompressor(level=1).compress(data))
    assert len(payload) < 0.88 * len(data) < plain  # plain zstd gets ~0.92
    mask = payload[1]
    assert bin(mask).count("1") == 1  # only the exponent lane is compressed


def test_text_travels_as_zstd_and_noise_raw() -> None:
    text = b"".join(b'{"token%d": %d},\n' % (i, i) for i in range(5000))[:65_536]
    assert encode_for_transfer(text)[0] == Codec.ZSTD
    noise = np.random.default_rng(1).bytes(65_536)
    how, payload = encode_for_transfer(noise)
    assert how == Codec.RAW and payload == noise
    assert encode_for_transfer(b"")[0] == Codec.RAW


def test_a_chunk_that_is_mostly_floats_behind_a_text_head() -> None:
    """The sample is spread over the chunk: a text head does not hide the floats."""
    data = b"x" * 4096 + weights(30_000)
    how, payload = encode_for_transfer(data)
    assert how == Codec.PLANES and decode(how, bytes(payload), len(data)) == data


# --- the encoder of a sequence of chunks ----------------------------------------------


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` cut into consecutive chunks of the given sizes (the rest dropped)."""
    out, at = [], 0
    for size in sizes:
        out.append(data[at : at + size])
        at += size
    return out


SIZES = [65_537, 70_001, 66_666, 80_003, 64_000, 90_001, 65_535, 70_002, 71_111, 69_999]


def test_transfer_encoder_guesses_the_lanes_of_the_next_chunk() -> None:
    chunks = cut(weights(200_000), SIZES)  # chunk lengths shift the lanes' phase
    enc = codec.TransferEncoder()
    enc.next_file()
    out = [enc.encode(c) for c in chunks]
    assert [how for how, _ in out] == [Codec.PLANES] * len(chunks)
    assert enc._guessed == len(chunks) - 1  # only the first chunk was probed
    for (how, payload), c in zip(out, chunks, strict=True):
        assert decode(how, bytes(payload), len(c)) == c
        probed = encode_for_transfer(c)[1]
        assert len(payload) <= len(probed) * 1.01


def test_transfer_encoder_notices_other_content() -> None:
    text = b"".join(b'{"token%d": %d, "merges": ["a b", "c d"]},\n' % (i, i) for i in range(9000))
    chunks = cut(weights(100_000), SIZES[:4]) + cut(text, [60_000, 60_000])
    enc = codec.TransferEncoder()
    out = [enc.encode(c) for c in chunks]
    assert [how for how, _ in out[4:]] == [Codec.ZSTD] * 2
    assert all(len(p) < 0.1 * len(c) for (_, p), c in zip(out[4:], chunks[4:], strict=True))


def test_transfer_encoder_after_a_gap() -> None:
    """A chunk that does not follow the last one is probed again; skip() keeps the guess."""
    chunks = cut(weights(100_000), [65_537, 70_001, 66_667])
    enc = codec.TransferEncoder()
    enc.encode(chunks[0])
    how, payload = enc.encode(chunks[2])  # chunks[1] left out: the guess is off by 1 byte
    assert how == Codec.PLANES and len(payload) < 0.88 * len(chunks[2])
    assert enc._guessed == 0  # probed
    enc = codec.TransferEncoder()
    enc.encode(chunks[0])
    enc.skip(len(chunks[1]))
    how, payload = enc.encode(chunks[2])
    assert how == Codec.PLANES and len(payload) < 0.88 * len(chunks[2])
    assert enc._guessed == 1  # guessed right


@settings(max_examples=100, deadline=None)
@given(
    parts=st.lists(
        st.tuples(
            st.sampled_from(["floats", "text", "noise", "zeros"]),
            st.integers(0, 100_000),
            st.booleans(),
        ),
        max_size=12,
    ),
    seed=st.integers(0, 1000),
)
def test_transfer_encoder_round_trips_any_sequence(
    parts: list[tuple[str, int, bool]], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    enc = codec.TransferEncoder()
    for kind, size, new_file in parts:
        if kind == "floats":
            data = weights(size // 4 + 1, seed)[size % 4 : size % 4 + size]
        elif kind == "text":
            data = (b"the quick brown fox %d\n" % seed * (size // 20 + 1))[:size]
        elif kind == "noise":
            data = rng.bytes(size)
        else:
            data = bytes(size)
        if new_file:
            enc.next_file()
        how, payload = enc.encode(data)
        assert decode(how, bytes(payload), len(data)) == data
        assert how == Codec.RAW or len(payload) < len(data) * codec.TRANSFER_KEEP


# --- hostile payloads ------------------------------------------------------------------

N = 1000  # raw length of the hostile cases: lanes of 250 bytes
RAW = weights(N // 4)
LANES, _ = split(RAW, 4)
GOOD = planes(4, [*LANES[:3], LANE_ZSTD.compress(LANES[3])], 0b1000)


def _no_content_size(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=1, write_content_size=False).compress(data)


HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty": (lambda: b"", "no header"),
    "width 0": (lambda: b"\x00" + GOOD[1:], "width 0 is not in 2..8"),
    "width 1": (lambda: b"\x01" + GOOD[1:], "width 1 is not in 2..8"),
    "width 9": (lambda: b"\x09" + GOOD[1:], "width 9 is not in 2..8"),
    "width 255": (lambda: b"\xff" + GOOD[1:], "width 255"),
    "mask beyond width": (lambda: GOOD[:1] + b"\x18" + GOOD[2:], "beyond 4"),
    "header cut short": (lambda: GOOD[:10], "header is truncated"),
    "truncated lanes": (lambda: GOOD[:-1], "payload is"),
    "trailing bytes": (lambda: GOOD + b"\0", "payload is"),
    "raw lane too short": (
        lambda: planes(4, [LANES[0][:-1], *LANES[1:3], LANES[3] + b"x"], 0),
        "raw lane 0 is 249 bytes, expected 250",
    ),
    "raw lane too long": (
        lambda: planes(4, [LANES[0] + b"x", LANES[1][:-1], *LANES[2:]], 0),
        "raw lane 0 is 251 bytes",
    ),
    "lengths that overflow": (
        lambda: planes(4, LANES, 0)[:2] + struct.pack("<4I", *[2**32 - 1] * 4) + b"".join(LANES),
        "payload is",
    ),
    "zstd lane decodes to more": (
        lambda: planes(4, [*LANES[:3], LANE_ZSTD.compress(LANES[3] + b"x")], 0b1000),
        "zstd lane 3 declares 251 bytes, expected 250",
    ),
    "zstd lane decodes to fewer": (
        lambda: planes(4, [*LANES[:3], LANE_ZSTD.compress(LANES[3][:-1])], 0b1000),
        "zstd lane 3 declares 249 bytes",
    ),
    "zstd lane without content size decodes to more": (
        lambda: planes(4, [*LANES[:3], _no_content_size(LANES[3] + b"x")], 0b1000),
        "undecodable zstd lane 3",
    ),
    "zstd lane without content size decodes to fewer": (
        lambda: planes(4, [*LANES[:3], _no_content_size(LANES[3][:-1])], 0b1000),
        "zstd lane 3 decodes to 249 bytes, expected 250",
    ),
    "zstd lane that is not zstd": (
        lambda: planes(4, [*LANES[:3], b"not a zstd frame"], 0b1000),
        "undecodable zstd lane 3",
    ),
    "empty zstd lane": (lambda: planes(4, [*LANES[:3], b""], 0b1000), "undecodable zstd lane 3"),
    "bytes after the zstd frame": (
        lambda: planes(4, [*LANES[:3], LANE_ZSTD.compress(LANES[3]) + b"xx"], 0b1000),
        "undecodable zstd lane 3",
    ),
    "two zstd frames in a lane": (
        lambda: planes(4, [*LANES[:3], LANE_ZSTD.compress(LANES[3][:100]) * 2], 0b1000),
        "zstd lane 3 declares 100 bytes",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_planes_payload_raises_integrity_error(case: str) -> None:
    make, message = HOSTILE[case]
    with pytest.raises(IntegrityError, match=message):
        decode(Codec.PLANES, make(), N)


def test_the_good_payload_of_the_hostile_cases_decodes() -> None:
    assert decode(Codec.PLANES, GOOD, N) == RAW


BOMB = 256 << 20  # what a hostile lane inflates to: far more than the test may allocate


def _peak_allocation(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(IntegrityError):
            fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("content_size", [True, False])
def test_a_zstd_lane_bomb_is_refused_without_inflating(content_size: bool) -> None:
    bomb = zstandard.ZstdCompressor(level=19, write_content_size=content_size).compress(bytes(BOMB))
    payload = planes(4, [*LANES[:3], bomb], 0b1000)
    assert len(payload) < 100_000
    peak = _peak_allocation(lambda: decode(Codec.PLANES, payload, N))
    assert peak < 1 << 20


def test_a_zstd_payload_bomb_is_refused_without_inflating() -> None:
    """Codec 1 too: the frame's declared size is checked before anything is allocated."""
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(BOMB))
    peak = _peak_allocation(lambda: decode(Codec.ZSTD, bomb, 100))
    assert peak < 1 << 20
    no_size = _no_content_size(bytes(BOMB))
    peak = _peak_allocation(lambda: decode(Codec.ZSTD, no_size, 100))
    assert peak < 1 << 20


@settings(max_examples=500, deadline=None)
@given(
    at=st.integers(0, len(GOOD) - 1),
    value=st.integers(0, 255),
    cut=st.integers(0, len(GOOD)),
)
def test_damaged_planes_payloads_raise_integrity_error_or_keep_the_length(
    at: int, value: int, cut: int
) -> None:
    """Any byte changed or the payload cut: IntegrityError, or exactly raw-length bytes
    (a changed raw-lane byte decodes to other bytes; the object id catches those)."""
    for bad in (GOOD[:at] + bytes([value]) + GOOD[at + 1 :], GOOD[:cut]):
        try:
            out = decode(Codec.PLANES, bad, N)
        except IntegrityError:
            continue
        assert len(out) == N


def test_unknown_codec() -> None:
    with pytest.raises(IntegrityError, match="unknown codec 4"):
        decode(4, b"x", 1)


# --- the stored-length bound -------------------------------------------------------------


@settings(max_examples=500)
@given(raw_len=st.integers(0, 64 << 20))
def test_planes_bound_covers_every_width(raw_len: int) -> None:
    for width in range(2, 9):
        n, tail = divmod(raw_len, width)
        largest = 2 + 4 * width + width * codec.zstd_bound(n) + tail
        assert largest <= codec.planes_bound(raw_len)


@pytest.mark.parametrize("width", range(2, 9))
def test_planes_bound_holds_for_incompressible_lanes(width: int) -> None:
    """zstd frames of noise are larger than the noise: still within the bound."""
    noise = np.random.default_rng(width).bytes(100_003)
    lanes, tail = split(noise, width)
    payload = planes(width, [LANE_ZSTD.compress(x) for x in lanes], (1 << width) - 1, tail)
    assert len(payload) > len(noise)
    assert len(payload) <= codec.planes_bound(len(noise))
    assert decode(Codec.PLANES, payload, len(noise)) == noise


def test_the_codec_module_does_not_import_numpy() -> None:
    """numpy costs ~80 ms of start-up: only byte planes need it, and import it then."""
    import subprocess
    import sys

    code = "import sys, modelvault.core.codec; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- float planes (codec 3) ----------------------------------------------------------


def float_payload(raw: bytes, width: int, skip: int, rot: int, zstd_planes: int = 1) -> bytes:
    """A float payload built by hand from docs/format.md, section 2 (numpy, no C)."""
    n = (len(raw) - skip) // width
    bits = 8 * width
    v = np.frombuffer(raw[skip : skip + n * width], f"<u{width}").astype(np.uint64)
    v = ((v << np.uint64(rot)) | (v >> np.uint64(bits - rot))) & np.uint64((1 << bits) - 1)
    planes = [((v >> np.uint64(bits - 8)) & np.uint64(255)).astype(np.uint8).tobytes()]
    planes += [
        ((v >> np.uint64(8 * k)) & np.uint64(255)).astype(np.uint8).tobytes()
        for k in range(width - 1)
    ]
    zstd = zstandard.ZstdCompressor(compression_params=codec._LANE_PARAMS)
    stored = [zstd.compress(p) if zstd_planes >> i & 1 else p for i, p in enumerate(planes)]
    head = struct.pack("<BBBB", width, skip, zstd_planes, rot)
    head += struct.pack(f"<{width}I", *map(len, stored))
    return head + raw[:skip] + b"".join(stored) + raw[skip + n * width :]


def bf16(count: int, seed: int = 0) -> bytes:
    bits = np.frombuffer(weights(count, seed), "<u4")
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()


@pytest.mark.parametrize(("width", "skip", "rot"), [(4, 0, 1), (4, 3, 3), (2, 1, 3), (2, 0, 1)])
@pytest.mark.parametrize("mask", [0, 1, 3])
def test_float_payload_built_from_the_spec_decodes(
    width: int, skip: int, rot: int, mask: int
) -> None:
    raw = b"\x07" * skip + weights(3000, seed=width + skip) + b"\x01\x02\x03"[: 3 - skip]
    payload = float_payload(raw, width, skip, rot, mask)
    assert decode(Codec.FLOAT, payload, len(raw)) == raw


@pytest.mark.parametrize(("width", "skip", "rot"), [(4, 0, 3), (4, 2, 1), (2, 1, 1), (2, 0, 3)])
def test_float_encoder_writes_the_spec(width: int, skip: int, rot: int) -> None:
    """The encoder's payload is the one docs/format.md describes, byte for byte."""
    raw = b"\x09" * skip + weights(5000, seed=3) + b"\x05"
    mask = 1  # the exponent plane shrinks; these mantissas do not
    assert codec.encode_float(raw, width, skip, rot, 1) == float_payload(
        raw, width, skip, rot, mask
    )


def test_fp32_weights_are_stored_as_float_planes() -> None:
    """Before codec 3 the store kept float32 weights raw (zstd gained < 10%)."""
    raw = weights(128 * 1024)
    how, payload = codec.encode(raw)
    assert how == Codec.FLOAT
    assert len(payload) < 0.86 * len(raw)
    assert decode(how, bytes(payload), len(raw)) == raw


@pytest.mark.parametrize("offset", [0, 1, 2, 3])
def test_chunk_cut_anywhere_in_bf16_finds_its_elements(offset: int) -> None:
    raw = bf16(100_000)[offset : offset + 150_001]
    how, payload = codec.encode(raw)
    assert how == Codec.FLOAT and payload[0] == 2 and payload[1] == offset % 2
    assert len(payload) < 0.70 * len(raw)
    assert decode(how, bytes(payload), len(raw)) == raw


def test_fp16_weights_use_rotation_1_and_the_hint_is_honoured() -> None:
    raw = np.frombuffer(weights(80_000), "<f4").astype("<f2").tobytes()
    how, payload = codec.encode(raw)
    assert how == Codec.FLOAT and payload[0] == 2 and payload[3] == 1
    hinted = codec.encode(raw, dtype="F16")[1]
    assert hinted[:4] == bytes(payload[:4])
    assert decode(Codec.FLOAT, bytes(hinted), len(raw)) == raw


@pytest.mark.parametrize("kind", ["random", "int8", "int4", "fp8", "zeros"])
def test_non_floats_never_take_float_planes(kind: str) -> None:
    rng = np.random.default_rng(7)
    if kind == "random":
        raw = rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    elif kind == "int8":
        raw = np.clip(rng.normal(0, 20, 200_000), -127, 127).astype(np.int8).tobytes()
    elif kind == "int4":
        nib = np.clip(rng.normal(0, 2.5, 400_000), -8, 7).astype(np.int8) & 15
        raw = (nib[0::2] | nib[1::2] << 4).astype(np.uint8).tobytes()
    elif kind == "fp8":  # e4m3 of normal weights: the top bits of fp32 after rounding
        bits = np.frombuffer(weights(200_000), "<u4")
        raw = ((bits >> 31) << 7 | (((bits >> 20) & 0x7F) ^ 0x40)).astype(np.uint8).tobytes()
    else:
        raw = bytes(200_000)
    assert codec.float_plan(raw) is None
    assert codec.encode(raw)[0] != Codec.FLOAT


def test_a_non_float_dtype_hint_skips_the_float_codec() -> None:
    raw = weights(50_000)
    assert codec.float_plan(raw, "I8") is None
    assert codec.encode(raw, dtype="I8")[0] != Codec.FLOAT
    assert codec.encode(raw, dtype="F32")[0] == Codec.FLOAT


def test_float_decode_without_the_compiled_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """A build without modelvault._floatcodec still reads codec 3 (numpy), and writes none."""
    raw = b"\x01" + bf16(40_000) + b"\x02"
    how, payload = codec.encode(raw)
    assert how == Codec.FLOAT
    monkeypatch.setattr(floats, "_fc", None)
    assert decode(how, bytes(payload), len(raw)) == raw
    assert codec.encode(raw)[0] != Codec.FLOAT


def _good_float() -> tuple[bytes, bytes]:
    raw = b"\x01" + weights(4000)
    return raw, codec.encode_float(raw, 4, 1, 3, 1)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p[:3], "no header"),
        (lambda p: b"\x03" + p[1:], "width 3"),
        (lambda p: p[:1] + b"\x04" + p[2:], "header is invalid"),
        (lambda p: p[:2] + b"\x10" + p[3:], "header is invalid"),
        (lambda p: p[:3] + b"\x00" + p[4:], "header is invalid"),
        (lambda p: p[:3] + b"\x20" + p[4:], "header is invalid"),
        (lambda p: p[:10], "truncated"),
        (lambda p: p[:-1], "float payload is"),
        (lambda p: p + b"\x00", "float payload is"),
        (lambda p: p[:4] + struct.pack("<I", 99) + p[8:], "float payload is"),
        (lambda p: p[:2] + b"\x03" + p[3:], "plane"),
        (lambda p: p[:2] + b"\x00" + p[3:], "raw plane 0"),
    ],
)
def test_damaged_float_payloads_are_refused(damage: Callable[[bytes], bytes], message: str) -> None:
    raw, payload = _good_float()
    with pytest.raises(IntegrityError, match=message):
        decode(Codec.FLOAT, damage(payload), len(raw))


def test_float_zstd_plane_declaring_too_much_is_refused_before_allocating() -> None:
    raw = weights(1000)
    n = len(raw) // 4
    big = LANE_ZSTD.compress(bytes(64 << 20))
    head = struct.pack("<BBBB", 4, 0, 1, 3) + struct.pack("<4I", len(big), n, n, n)
    payload = head + big + bytes(3 * n)
    tracemalloc.start()
    try:
        with pytest.raises(IntegrityError, match="declares"):
            decode(Codec.FLOAT, payload, len(raw))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_float_bound_is_within_the_archive_bound() -> None:
    for raw_len in (0, 1, 3, 7, 4096, 524_288, 1 << 20):
        assert codec.float_bound(raw_len) <= codec.planes_bound(raw_len)


def test_safetensors_header_gives_the_file_dtype(tmp_path: Path) -> None:
    from modelvault.ingest import file_dtype, safetensors_dtypes

    def write(header: bytes, body: bytes) -> tuple[int, int]:
        path = tmp_path / "m.safetensors"
        path.write_bytes(struct.pack("<Q", len(header)) + header + body)
        fd = os.open(path, os.O_RDONLY)
        return fd, path.stat().st_size

    good = b'{"a":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]},"__metadata__":{}}'
    fd, size = write(good, bytes(8))
    try:
        assert safetensors_dtypes(fd, size) == [(8 + len(good), 16 + len(good), "BF16")]
        assert file_dtype(fd, size) == "BF16"
    finally:
        os.close(fd)
    mixed = (
        b'{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},'
        b'"b":{"dtype":"I8","shape":[16],"data_offsets":[16,32]}}'
    )
    for header, body, want in [
        (mixed, bytes(32), None),
        (b'{"a":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}}', bytes(4), "I8"),
        (b'{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,99]}}', bytes(16), None),
        (b"not json", bytes(16), None),
        (b"[1, 2]", bytes(16), None),
    ]:
        fd, size = write(header, body)
        try:
            assert file_dtype(fd, size) == want
        finally:
            os.close(fd)


def test_repeating_text_goes_to_zstd_not_float_planes() -> None:
    """Order-0 entropy does not see repeats: text whose period is a multiple of 4 looks
    like cheap planes to the probe (a 5600-byte config.json: 120 bytes as float planes),
    but zstd on the whole is far smaller (46)."""
    raw = b'{"hidden": 64, "layers": 2}\n' * 200
    how, payload = codec.encode(raw)
    assert how == Codec.ZSTD
    assert len(payload) <= len(codec._compressor().compress(raw))
    assert decode(how, bytes(payload), len(raw)) == raw
    big = raw * 25  # a larger chunk: the sample decides, and either way it is tiny
    how, payload = codec.encode(big)
    assert len(payload) < 0.002 * len(big) and decode(how, bytes(payload), len(big)) == big
