"""Hypothesis feeds the float codec (codec 3, docs/format.md section 2) random and
adversarial planes: every encoding decodes bit-exact, through ``codec.encode`` /
``codec.decode`` and through a real save and read of a store, and no mutation of a
float payload decodes to anything but the original bytes or an IntegrityError.

Adversarial: all exponents equal, NaNs (with payloads), infinities, denormals, -0.0,
lengths that are not a multiple of the element width, tiny and empty inputs, chunks
starting at any byte of an element, and dtype hints that are wrong for the bytes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import modelvault
from modelvault.core import codec
from modelvault.core.codec import Codec
from modelvault.errors import IntegrityError

pytestmark = pytest.mark.usefixtures("float_codec")  # its writing is off by default

FUZZ = settings(max_examples=200, deadline=None)
SPECIAL32 = [0x7FC00000, 0xFFC00001, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001, 0x007FFFFF]
SPECIAL16 = [0x7E00, 0xFE01, 0x7C00, 0xFC00, 0x8000, 0x0001, 0x03FF, 0x7F80, 0xFF81, 0x7FC1]
DTYPES = [None, "F32", "BF16", "F16", "I8", "F8_E4M3", "U8", "nonsense"]


@st.composite
def float_bytes(draw: st.DrawFn) -> bytes:
    """Weights-like floats of one width with adversarial values mixed in, cut anywhere."""
    width = draw(st.sampled_from([2, 4]))
    n = draw(st.integers(0, 6000))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = draw(st.sampled_from(["normal", "one-exponent", "special", "denormal", "zeros"]))
    vals = rng.normal(0, draw(st.sampled_from([1e-3, 0.02, 1.0, 300.0])), n).astype("<f4")
    bits = vals.view("<u4").copy()
    if shape == "one-exponent":  # every exponent equal: the exponent plane is one symbol
        bits = (bits & 0x807FFFFF) | (0x7D << 23)
    elif shape == "special":
        picks = rng.integers(0, len(SPECIAL32), n)
        mask = rng.random(n) < draw(st.sampled_from([0.01, 0.5, 1.0]))
        bits[mask] = np.array(SPECIAL32, dtype="<u4")[picks[mask]]
    elif shape == "denormal":
        bits = bits & 0x807FFFFF
    elif shape == "zeros":
        bits[:] = draw(st.sampled_from([0, 0x80000000]))
    if width == 2:
        half = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")  # bf16
        if draw(st.booleans()):  # fp16 instead
            half = vals.astype("<f2").view("<u2").copy()
        if shape == "special":
            picks = rng.integers(0, len(SPECIAL16), n)
            half[mask] = np.array(SPECIAL16, dtype="<u2")[picks[mask]]
        raw = half.tobytes()
    else:
        raw = bits.tobytes()
    start = draw(st.integers(0, 3))
    end = len(raw) - draw(st.integers(0, 3))
    return raw[start:end] if start < end else b""


def round_trip(raw: bytes, dtype: str | None) -> Codec:
    how, payload = codec.encode(raw, dtype=dtype)
    assert codec.decode(how, bytes(payload), len(raw)) == raw
    return how


@FUZZ
@given(float_bytes(), st.sampled_from(DTYPES))
def test_floats_round_trip_through_encode(raw: bytes, dtype: str | None) -> None:
    round_trip(raw, dtype)


@FUZZ
@given(st.binary(max_size=20_000), st.sampled_from(DTYPES))
def test_random_bytes_round_trip_through_encode(raw: bytes, dtype: str | None) -> None:
    round_trip(raw, dtype)


@FUZZ
@given(
    float_bytes(),
    st.sampled_from([2, 4]),
    st.integers(0, 3),
    st.integers(1, 31),
    st.integers(0, 15),
)
def test_every_layout_round_trips(raw: bytes, width: int, skip: int, rot: int, tries: int) -> None:
    """Any width, skip, rotation and choice of zstd planes the format allows decodes
    bit-exact, whatever the bytes (the encoder's choice is only an optimisation)."""
    assume(skip < width and rot < 8 * width)
    payload = codec.encode_float(raw, width, skip, rot, tries & ((1 << width) - 1))
    assert codec.decode(Codec.FLOAT, payload, len(raw)) == raw


@FUZZ
@given(float_bytes(), st.data())
def test_mutated_float_payloads_decode_exactly_or_raise(raw: bytes, data: st.DataObject) -> None:
    assume(len(raw) >= 8)
    payload = bytearray(codec.encode_float(raw, 4 if len(raw) % 2 else 2, 1, 3, 0b11))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(0, len(payload) - 1)))
        if op == "flip" and payload:
            payload[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del payload[at : at + data.draw(st.integers(1, 8))]
        else:
            payload[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        out = codec.decode(Codec.FLOAT, bytes(payload), len(raw))
    except IntegrityError:
        return
    assert len(out) == len(raw)  # a decodable mutant gives raw_len bytes; the id check follows


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(float_bytes(), min_size=1, max_size=3), st.booleans())
def test_floats_round_trip_through_a_store(files: list[bytes], safetensors: bool) -> None:
    """A real save (chunking, the dtype hint, packs) and a real read give the bytes back."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        suffix = ".safetensors" if safetensors else ".bin"
        for i, data in enumerate(files):
            (src / f"w{i}{suffix}").write_bytes(data * 3)  # larger than one chunk, often
        store = modelvault.Store(Path(tmp) / "store")
        model = store.save(src, "fuzz:v1")
        for i, data in enumerate(files):
            assert (Path(model.path) / f"w{i}{suffix}").read_bytes() == data * 3
        assert store.verify().ok
