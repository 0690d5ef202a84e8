"""Chunking a file window by window, or segment by segment from each segment's own start
and stitched, cuts exactly where cutting it whole would."""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelvault.core import chunking
from modelvault.core.hashing import ObjType, object_id


def _data(size: int, kind: str) -> bytes:
    """``size`` bytes: random, one repeated byte, zeros, or random with a zero run."""
    if kind == "rand":
        return os.urandom(size)
    if kind == "same":
        return b"x" * size
    if kind == "zero":
        return bytes(size)
    assert kind == "mix"
    return os.urandom(size // 2) + bytes(size // 4) + os.urandom(size - size // 2 - size // 4)


@pytest.mark.parametrize("window", [1, 300_000, 1 << 20])
@pytest.mark.parametrize(
    "size_and_kind",
    [
        (0, "rand"),
        (100, "rand"),
        (600_000, "same"),
        (2 * 524_288 + 4096, "rand"),
        (7_000_000, "mix"),
    ],
)
def test_windowed_cuts_equal_whole_cuts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int, size_and_kind: tuple[int, str]
) -> None:
    size, kind = size_and_kind
    data = _data(size, kind)
    path = tmp_path / "f"
    path.write_bytes(data)
    monkeypatch.setattr(chunking, "WINDOW", window)
    windowed = [bytes(c) for c in chunking.chunk_file(path)]
    assert windowed == [bytes(c) for c in chunking.chunk_bytes(data)]
    assert b"".join(windowed) == data
    assert all(len(c) <= chunking.MAX_SIZE for c in windowed)


# --- segments cut on their own, then stitched (the parallel save) --------------------------

MAX = chunking.MAX_SIZE


def _stitched(data: bytes, segment: int) -> tuple[list[bytes], chunking.Stitcher[bytes]]:
    """The chunks of cutting ``data`` by segments of ``segment`` bytes, and the stitcher
    (how many bytes it cut itself, how many it stepped over in runs of one byte)."""
    source = chunking.Source.of_bytes(data)
    stitcher: chunking.Stitcher[bytes] = chunking.Stitcher(_bytes)
    out: list[bytes] = []
    for start, stop in chunking.plan_segments(len(data), segment):
        out += stitcher.feed(chunking.cut_piece(source, start, stop, _bytes))
    assert stitcher.pos == len(data)
    return out, stitcher


def _bytes(data: memoryview, oid: bytes) -> bytes:
    assert oid == object_id(ObjType.CHUNK, data)
    return bytes(data)


def _whole(data: bytes) -> list[bytes]:
    return [bytes(c) for c in chunking.chunk_bytes(data)]


def test_plan_segments_cover_the_file() -> None:
    for size in [1, MAX, 5 * chunking.MIN_SEGMENT + 1, 3 * chunking.SEGMENT + 7, 100 << 20]:
        spans = chunking.plan_segments(size)
        assert spans[0][0] == 0 and spans[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        assert all(stop - start <= chunking.SEGMENT for start, stop in spans)
    assert len(chunking.plan_segments(8 * chunking.MIN_SEGMENT)) == 4
    assert chunking.plan_segments(0) == []


@pytest.mark.parametrize("segment", [5000, 100_000, MAX, 3 * MAX, 1 << 20])
@pytest.mark.parametrize(
    "size_and_kind",
    [
        (100, "rand"),
        (600_000, "same"),
        (2 * MAX + 4096, "rand"),
        (7_000_000, "mix"),
        (6 * MAX, "zero"),
        (6 * MAX + 1, "zero"),
    ],
)
def test_segmented_file_cuts_equal_whole_cuts(
    tmp_path: Path, segment: int, size_and_kind: tuple[int, str]
) -> None:
    size, kind = size_and_kind
    data = _data(size, kind)
    path = tmp_path / "f"
    path.write_bytes(data)
    segmented = [bytes(c) for c in chunking.chunk_file_segmented(path, segment)]
    assert segmented == _whole(data)
    assert segmented == _stitched(data, segment)[0]


def test_a_segment_is_worked_on_block_by_block() -> None:
    """Without ``known``, a segment is cut and hashed a block at a time, and each
    block's chunks are looked up (``before_work``) and worked on before the next block
    is cut: the chunks are those of a sequential cut, and each id is screened before its
    work, in blocks of about ``BLOCK`` bytes."""
    data = os.urandom(6 * chunking.BLOCK + 12345)
    source = chunking.Source.of_bytes(data)
    calls: list[tuple[str, list[bytes]]] = []

    def screen(oids: list[bytes]) -> None:
        calls.append(("screen", list(oids)))

    def work(view: memoryview, oid: bytes) -> bytes:
        calls.append(("work", [oid]))
        return _bytes(view, oid)

    start, stop = 3 * MAX + 17, len(data) - MAX  # a lead, and a last chunk past stop
    piece = chunking.cut_piece(source, start, stop, work, before_work=screen)
    whole = _whole(data)
    ends = list(itertools.accumulate(len(c) for c in whole))
    first = next(i for i, e in enumerate(ends) if e >= start) + 1  # the first cut >= start
    assert piece.results == whole[first : first + len(piece.results)]
    assert piece.ends == ends[first : first + len(piece.ends)]
    assert piece.ends[-2] < stop <= piece.ends[-1]
    screens = [oids for kind, oids in calls if kind == "screen"]
    span, block = stop - start, chunking.BLOCK  # a block: chunks that start in BLOCK bytes
    assert span // (block + MAX) <= len(screens) <= span // block + 1
    # every id is screened once, in order, before it is worked on, and no later block
    # is screened before the work of the one before it is done
    screened: list[bytes] = []
    worked: list[bytes] = []
    for kind, oids in calls:
        if kind == "screen":
            assert worked == screened, "a block was screened before the last one was done"
            screened += oids
        else:
            assert oids[0] == screened[len(worked)]
            worked += oids
    assert worked == screened == [object_id(ObjType.CHUNK, c) for c in piece.results]


def test_each_block_is_handed_on_before_the_next_is_screened() -> None:
    """``after_work`` gets each block's results, in order, right after their work and
    before the next block is screened; the piece keeps what it returns (a saving worker
    writes the block's new chunks there and keeps no payload)."""
    data = os.urandom(6 * chunking.BLOCK + 12345)
    source = chunking.Source.of_bytes(data)
    calls: list[tuple[str, list[bytes]]] = []

    def screen(oids: list[bytes]) -> None:
        calls.append(("screen", list(oids)))

    def after(results: list[bytes]) -> list[int]:
        calls.append(("after", [object_id(ObjType.CHUNK, r) for r in results]))
        return [len(r) for r in results]

    start, stop = 3 * MAX + 17, len(data) - MAX
    piece = chunking.cut_piece(source, start, stop, _bytes, before_work=screen, after_work=after)
    assert [kind for kind, _ in calls] == ["screen", "after"] * (len(calls) // 2)
    assert len(calls) // 2 >= (stop - start) // (chunking.BLOCK + MAX)  # (4 blocks)
    for (_, screened), (_, handed) in zip(calls[::2], calls[1::2], strict=True):
        assert handed == screened
    whole = _whole(data)
    ends = list(itertools.accumulate(len(c) for c in whole))
    first = next(i for i, e in enumerate(ends) if e >= start) + 1  # the first cut >= start
    assert piece.results == [len(c) for c in whole[first : first + len(piece.results)]]


def test_blocks_of_any_size_give_the_chunks_of_a_sequential_cut() -> None:
    """``block`` is asked before each block is cut; whatever it answers (down to one
    chunk's worth, up to more than the segment), the piece is the same."""
    data = os.urandom(5 * chunking.BLOCK)
    source = chunking.Source.of_bytes(data)
    start, stop = 2 * MAX + 5, len(data) - 2 * MAX
    expected = chunking.cut_piece(source, start, stop, _bytes, block=lambda: 1 << 30)
    sizes = random.Random(7)
    asked = []

    def block() -> int:
        asked.append(sizes.choice([1, MAX, 3 * MAX]))
        return asked[-1]

    piece = chunking.cut_piece(source, start, stop, _bytes, block=block)
    assert (piece.start, piece.ends, piece.results) == (
        expected.start,
        expected.ends,
        expected.results,
    )
    assert len(asked) > 4


def test_random_segments_stitch_after_a_few_chunks() -> None:
    data = os.urandom(12 << 20)
    chunks, stitcher = _stitched(data, 1 << 20)
    assert chunks == _whole(data)
    assert stitcher.recut < 11 * 4 * MAX  # a few chunks per seam, not whole segments


@pytest.mark.parametrize("value", [0, 0x3F, 0xFF])
def test_runs_of_one_byte_out_of_phase(value: int) -> None:
    """Runs of one byte cut only every MAX_SIZE bytes: segments that start in another
    phase never meet the sequential cuts inside the run. The stitcher cuts one chunk
    of the run itself and steps over the rest, comparing bytes."""
    run = bytes([value]) * (8 * MAX)
    assert {len(c) for c in _whole(run)} == {MAX}
    chunks, stitcher = _stitched(run, 2 * MAX)  # segments start on sequential cut points
    assert (chunks, stitcher.recut, stitcher.reused) == (_whole(run), 0, 0)
    head = os.urandom(100_001)
    for data in [
        head + run,
        head + run + os.urandom(3 * MAX),
        head + run[: 3 * MAX + 5] + b"\1" + run + os.urandom(MAX + 3),  # a byte breaks the run
        head + run + bytes([value ^ 1]) * (3 * MAX),  # another run right after
        head + run[:-1] + os.urandom(1),  # the run ends one byte short of the end
    ]:
        chunks, stitcher = _stitched(data, 2 * MAX + 4096)
        assert chunks == _whole(data)
        assert stitcher.reused >= 2 * MAX and stitcher.recut < 4 * MAX + len(data) - len(run)


def _mix(draw: st.DrawFn) -> bytes:
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["rand", "zero", "byte", "pattern"]))
        n = draw(
            st.one_of(
                st.integers(0, 3 * MAX),
                st.sampled_from([MAX - 1, MAX, MAX + 1, 2 * MAX, chunking.MIN_SIZE]),
            )
        )
        if kind == "rand":
            parts.append(rng.randbytes(n))
        elif kind == "zero":
            parts.append(bytes(n))
        elif kind == "byte":
            parts.append(bytes([rng.randrange(256)]) * n)
        else:
            period = rng.choice([1, 2, 7, 64, 4096, 65536, 100_003])
            unit = rng.randbytes(period)
            parts.append((unit * (n // period + 1))[:n])
    return b"".join(parts)


@st.composite
def _data_and_segment(draw: st.DrawFn) -> tuple[bytes, int]:
    data = _mix(draw)
    segment = draw(
        st.one_of(
            st.integers(1, 2 * MAX),
            st.sampled_from([MAX, 2 * MAX, 3 * MAX, chunking.MIN_SIZE, chunking.AVG_SIZE]),
        )
    )
    # sizes at and around a segment boundary or a multiple of MAX_SIZE
    edge = draw(st.sampled_from([None, "segment", "max"]))
    if edge is not None and data:
        unit = segment if edge == "segment" else MAX
        target = max(1, round(len(data) / unit)) * unit + draw(st.integers(-2, 2))
        data = (data * (target // len(data) + 1))[: max(1, target)]
    return data, max(segment, len(data) // 400)  # at most ~400 segments: keeps it quick


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_data_and_segment())
def test_stitched_cuts_equal_whole_cuts(case: tuple[bytes, int]) -> None:
    data, segment = case
    assert _stitched(data, segment)[0] == _whole(data)


@pytest.mark.parametrize("wrong", [1, 777, 3 * MAX // 2])
def test_a_resumed_piece_that_starts_off_a_cut_point_is_stitched_into_the_whole_cuts(
    wrong: int,
) -> None:
    """``cut_piece``'s ``resume`` is a guess: a piece that starts where a cut from the
    file's start does not (here ``wrong`` bytes past the segment's first true cut point,
    each chunk after it as a cut from there gives) costs the stitcher time, never a
    wrong chunk."""
    data = os.urandom(24 * MAX)
    source = chunking.Source.of_bytes(data)
    whole = _whole(data)
    cuts = list(itertools.accumulate(len(c) for c in whole))
    resumed = []

    def resume(
        view: memoryview, base: int, start: int, stop: int
    ) -> tuple[int, list[int], list[bytes]]:
        at = next(c for c in cuts if c >= start) + wrong  # not a cut point
        chunks = [bytes(c) for c in chunking.chunk_bytes(view[at - base :])][:2]
        resumed.append(at)
        return at, list(itertools.accumulate(len(c) for c in chunks)), chunks

    stitcher: chunking.Stitcher[bytes] = chunking.Stitcher(_bytes)
    out: list[bytes] = []
    for start, stop in chunking.plan_segments(len(data), 4 * MAX):
        piece = chunking.cut_piece(
            source, start, stop, _bytes, known=lambda v, a, lim: None, resume=resume
        )
        out += stitcher.feed(piece)
    assert len(resumed) == len(chunking.plan_segments(len(data), 4 * MAX)) - 1  # (not the first)
    assert out == whole
    assert stitcher.recut > 0  # the stitcher cut its way back into step
