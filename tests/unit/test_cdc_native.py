"""The compiled segment cutter and hasher (``modelvault._cdc``) gives exactly what
pyfastcdc and the blake3 package give: the same cut points, the same ids.

The module is optional for users (a build without a compiler falls back to the
packages), but it is built on every machine these tests run on: a failed build must
fail here rather than quietly leave the save on the slow path."""

from __future__ import annotations

import ctypes.util
import itertools
import json
import os
import random
import subprocess
import sys

import pytest
from blake3 import blake3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelvault import _cdc
from modelvault.core import chunking, hashing
from modelvault.core.hashing import ObjType

MAX = chunking.MAX_SIZE
KiB = 1024


def _reference(data: bytes, stop: int, skip: int, kind: int) -> tuple[int, list[int], bytes]:
    """pyfastcdc's cut of ``data`` from its start, and blake3 ids of the chunks that start
    at ``skip`` or later while the next chunk starts before ``stop``."""
    first, ends, ids = 0, [], b""
    pos = 0
    for chunk in chunking.chunk_bytes(data):
        if pos >= stop:
            break
        if pos < skip:
            pos += len(chunk)
            first = pos
            continue
        ids += blake3(bytes((kind,)) + bytes(chunk)).digest()
        pos += len(chunk)
        ends.append(pos)
    return first, ends, ids


def test_the_parameters_are_the_chunkers() -> None:
    assert (_cdc.MIN_SIZE, _cdc.AVG_SIZE, _cdc.MAX_SIZE) == (
        chunking.MIN_SIZE,
        chunking.AVG_SIZE,
        chunking.MAX_SIZE,
    )
    assert chunking._cut_hash is _cdc.cut_hash  # the save uses it
    assert hashing._id is _cdc.object_id


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 3 * MAX),
    kind=st.integers(0, 255),
    where=st.tuples(st.floats(0, 1), st.floats(0, 1)),
)
def test_cuts_and_ids_equal_pyfastcdc_and_blake3(
    seed: int, size: int, kind: int, where: tuple[float, float]
) -> None:
    data = random.Random(seed).randbytes(size)
    skip, stop = sorted(int(w * size) for w in where)
    assert _cdc.cut_hash(data, stop, kind, skip) == _reference(data, stop, skip, kind)


@pytest.mark.parametrize(
    "data",
    [
        bytes(3 * MAX + 5),  # zeros: cut at MAX_SIZE
        b"\x07" * (2 * MAX),
        bytes(range(256)) * 5000,
        os.urandom(MAX) + bytes(MAX) + os.urandom(MAX),
    ],
    ids=["zeros", "one-byte", "cycle", "mixed"],
)
def test_structured_data_cuts_the_same(data: bytes) -> None:
    for skip, stop in [(0, len(data)), (0, 1), (MAX // 2, len(data) - 1), (MAX, MAX)]:
        assert _cdc.cut_hash(data, stop, 1, skip) == _reference(data, stop, skip, 1)


def test_ids_of_every_length_around_blake3s_chunk_and_block_sizes() -> None:
    """BLAKE3 splits its input into 1 KiB chunks of 64-byte blocks; _cdc hashes the
    whole chunks of a tree at once and the short last chunk block by block."""
    data = os.urandom(MAX + 3 * KiB)
    lengths = set(range(0, 3 * KiB))
    lengths |= {k * KiB + d for k in range(1, 514) for d in (-65, -64, -63, -2, -1, 0, 1)}
    lengths |= {random.Random(k).randrange(len(data)) for k in range(300)}
    for n in sorted(lengths):
        kind = n % 256
        want = blake3(bytes((kind,)) + data[:n]).digest()
        assert _cdc.object_id(kind, data[:n]) == want, n
        assert _cdc.object_id(kind, memoryview(data)[:n]) == want, n


def test_ids_of_consecutive_chunks_at_once() -> None:
    """object_ids hashes the spans between given ends in one call: the ids object_id and
    the blake3 package give each span, empty spans included; ends that fall or pass the
    buffer's end are refused."""
    data = os.urandom(3 * MAX + 77)
    rng = random.Random(5)
    ends = [*sorted(rng.randrange(len(data) + 1) for _ in range(40)), len(data)]
    ends[3] = ends[4]  # an empty span
    joined = _cdc.object_ids(7, data, ends)
    starts = [0, *ends[:-1]]
    want = [blake3(b"\x07" + data[a:b]).digest() for a, b in zip(starts, ends, strict=True)]
    assert joined == b"".join(want)
    assert hashing.object_ids(ObjType.CHUNK, memoryview(data), ends[:2]) == [
        hashing.object_id(ObjType.CHUNK, data[: ends[0]]),
        hashing.object_id(ObjType.CHUNK, data[ends[0] : ends[1]]),
    ]
    assert _cdc.object_ids(1, data, []) == b""
    with pytest.raises(ValueError, match="must rise"):
        _cdc.object_ids(1, data, [10, 5])
    with pytest.raises(ValueError, match="must rise"):
        _cdc.object_ids(1, data, [len(data) + 1])
    with pytest.raises(ValueError, match="a byte"):
        _cdc.object_ids(256, data, [1])
    with pytest.raises(TypeError):
        _cdc.object_ids(1, data, 5)  # type: ignore[arg-type]


@pytest.mark.parametrize("native", [True, False])
def test_ids_stop_at_the_first_that_differs(native: bool) -> None:
    """Given the ids expected, object_ids (compiled, or the fallback) hashes up to the
    first span whose id differs, that one included, and no further; matching_ids counts
    the spans that matched in a row. An expect of the wrong size is refused."""
    ids = _cdc.object_ids if native else hashing._ids_function(native=False)
    data = os.urandom(2 * MAX + 999)
    ends = [100, 5000, 5000, MAX, MAX + 7, 2 * MAX, len(data)]
    true = _cdc.object_ids(1, data, ends)
    assert ids(1, data, ends, true) == true
    for wrong in (0, 2, 4, len(ends) - 1):
        want = bytearray(true)
        want[32 * wrong + 31] ^= 1
        assert ids(1, data, ends, bytes(want)) == true[: 32 * (wrong + 1)]
        expect = [bytes(want[i : i + 32]) for i in range(0, len(want), 32)]
        assert hashing.matching_ids(ObjType.CHUNK, data, ends, expect) == wrong
    assert ids(1, data, [], b"") == b""
    with pytest.raises(ValueError, match="expect holds 31 bytes"):
        ids(1, data, [5], true[:31])


def test_the_fallback_gives_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(2 * MAX) + bytes(MAX) + os.urandom(MAX // 3)
    view = memoryview(data)
    native = [chunking.cut_and_hash(view, stop, skip) for skip, stop in [(0, len(data)), (5, 9)]]
    monkeypatch.setattr(chunking, "_cut_hash", None)
    fallback = [chunking.cut_and_hash(view, stop, skip) for skip, stop in [(0, len(data)), (5, 9)]]
    assert native == fallback
    assert hashing._blake3_id(ObjType.CHUNK, data) == hashing.object_id(ObjType.CHUNK, data)
    ends = [MAX, MAX, 2 * MAX + 5, len(data)]
    native_ids = hashing.object_ids(ObjType.CHUNK, view, ends)
    monkeypatch.setattr(hashing, "_id", hashing._blake3_id)
    monkeypatch.setattr(hashing, "_ids", hashing._ids_function(native=False))
    assert hashing.object_ids(ObjType.CHUNK, view, ends) == native_ids


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="must hold"):
        _cdc.cut_hash(b"abc", 4, 1)
    with pytest.raises(ValueError, match="must hold"):
        _cdc.cut_hash(b"abc", 2, 1, 3)
    with pytest.raises(ValueError, match="a byte"):
        _cdc.cut_hash(b"abc", 2, 256)
    with pytest.raises(ValueError, match="a byte"):
        _cdc.object_id(-1, b"abc")
    with pytest.raises(TypeError):
        _cdc.object_id(1, "text")  # type: ignore[arg-type]


def test_a_chunk_crossing_the_stop_is_the_last() -> None:
    data = os.urandom(4 * MAX)
    _, ends, ids = _cdc.cut_hash(data, MAX, 1)
    assert ends[-2] < MAX <= ends[-1] and len(ids) == 32 * len(ends)
    assert (
        ends == list(itertools.accumulate(len(c) for c in chunking.chunk_bytes(data)))[: len(ends)]
    )


def test_cut_points_across_the_gear_lanes_equal_pyfastcdc() -> None:
    """The gear loop runs two lanes 4 KiB apart, the second started 64 bytes early (see
    _cdc.c, gear_scan): a cut in either lane or in the one-lane rest, with the hash
    carried from lane to lane and from the smaller mask's stretch into the larger one's,
    must be pyfastcdc's. 32 MiB of random bytes (~400 cuts, anywhere relative to
    the lanes) and 400 pieces of random lengths (the shortened stretches of a file's last
    bytes: past MIN_SIZE, around AVG_SIZE, past MAX_SIZE) cut as pyfastcdc cuts them."""
    rng = random.Random(11)
    data = rng.randbytes(32 << 20)

    def reference(buf: bytes) -> list[int]:
        return list(itertools.accumulate(len(c) for c in chunking.chunk_bytes(buf)))

    assert _cdc.cut_hash(data, len(data), 1)[1] == reference(data)
    for _ in range(400):
        at, n = rng.randrange(len(data) - 2 * MAX), rng.randrange(chunking.MIN_SIZE, 2 * MAX)
        piece = data[at : at + n]
        assert _cdc.cut_hash(piece, n, 1)[1] == reference(piece), (at, n)


# Run under Electric Fence (LD_PRELOAD): every malloc'd block ends at a page that is
# followed by an unmapped one, so a read past any buffer the hash reads (its scratch
# memory, the caller's data) is a SIGSEGV every time, not once in thousands of runs.
_GUARDED = r"""
import importlib.util, json, random, sys
spec = importlib.util.spec_from_file_location("modelvault._cdc", sys.argv[1])
cdc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cdc)  # (the module alone: not modelvault, numpy and the rest)
out = []
for n in json.loads(sys.argv[2]):
    data = random.Random(n).randbytes(n)
    one = cdc.object_id(1, data)
    two = cdc.object_ids(1, data, [n // 3, n])
    _, ends, cut = cdc.cut_hash(data, n, 1)
    out.append([one.hex(), two.hex(), ends, cut.hex()])
print(json.dumps(out))
"""


def test_hashing_reads_no_byte_past_its_buffers() -> None:
    """BLAKE3's AVX2 and AVX-512 assembly loads the first input of a group of 2 or 4
    chunks 32 or 64 bytes at a time where it needs 16, reading up to 48 bytes past it;
    _cdc hands it its own copy of the first 1 KiB (the type byte in front), which once
    sat at the very end of its memory: a push segfaulted in object_id (2-8 KiB objects,
    one run in ~15 of the crash sweep). Every number of whole BLAKE3 chunks up to 20,
    short last chunks and segments whose last chunk is short are hashed with the memory
    fenced; the ids are the blake3 package's."""
    fence = ctypes.util.find_library("efence")
    assert fence, "Electric Fence (libefence) is missing: `make` installs it (electric-fence)"
    lengths = sorted(
        {k * KiB + d for k in range(1, 21) for d in (-2, -1, 0, 1, 500)}
        | {MAX - 1, MAX, 3 * MAX + 5000, 40 * KiB + 4 * KiB}
    )
    env = {**os.environ, "LD_PRELOAD": fence, "EF_DISABLE_BANNER": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _GUARDED, _cdc.__file__, json.dumps(lengths)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    for n, (one, two, ends, cut) in zip(lengths, json.loads(done.stdout), strict=True):
        data = random.Random(n).randbytes(n)
        assert one == blake3(b"\x01" + data).hexdigest(), n
        want = [blake3(b"\x01" + data[a:b]).digest() for a, b in ((0, n // 3), (n // 3, n))]
        assert two == b"".join(want).hex(), n
        starts = [0, *ends[:-1]]
        spans = zip(starts, ends, strict=True)
        assert ends[-1] == n, n
        assert cut == b"".join(blake3(b"\x01" + data[a:b]).digest() for a, b in spans).hex(), n
