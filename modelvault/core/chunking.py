"""Content-defined chunking (FastCDC 2020, via pyfastcdc's Cython build).

The parameters are part of the storage format: changing them does not break
reading, but chunks cut with other parameters no longer deduplicate with old ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from modelvault.core.hashing import ID_LEN, ObjType, object_id

if TYPE_CHECKING:
    from pyfastcdc.cy import FastCDC

__all__ = [
    "AVG_SIZE",
    "BLOCK",
    "LEAD",
    "MAX_SIZE",
    "MIN_SEGMENT",
    "MIN_SIZE",
    "SEGMENT",
    "WINDOW",
    "Known",
    "Piece",
    "R",
    "Resume",
    "Source",
    "Stitcher",
    "Work",
    "chunk_bytes",
    "chunk_file",
    "chunk_file_segmented",
    "cut_and_hash",
    "cut_piece",
    "next_chunk",
    "plan_segments",
]

AVG_SIZE = 64 * 1024
MIN_SIZE = 16 * 1024
MAX_SIZE = 512 * 1024


def _native_cut_hash() -> (
    Callable[[memoryview, int, int, int], tuple[int, list[int], bytes]] | None
):
    """The compiled ``cut_hash`` (``modelvault/_cdc.c``), when it was built and cuts with
    these parameters; None otherwise."""
    try:
        from modelvault import _cdc
    except ImportError:
        return None
    if (_cdc.MIN_SIZE, _cdc.AVG_SIZE, _cdc.MAX_SIZE) != (MIN_SIZE, AVG_SIZE, MAX_SIZE):
        return None
    return _cdc.cut_hash


_cut_hash = _native_cut_hash()


def cut_and_hash(view: memoryview, stop: int, skip: int = 0) -> tuple[int, list[int], list[bytes]]:
    """Cut ``view`` from its start while the next chunk starts before ``stop`` (``0 <= skip
    <= stop <= len(view)``), and hash the chunks that start at ``skip`` or later: where the
    first of those starts, the offset just past each of them, and their ids.

    One compiled call without the GIL where ``modelvault._cdc`` was built (a save's
    workers then run side by side instead of queueing for the GIL once per chunk);
    pyfastcdc and blake3, chunk by chunk, otherwise. The cut points are those of
    :func:`chunk_bytes` on ``view`` as long as ``view`` holds more than ``MAX_SIZE``
    bytes past ``stop`` or ends where the data does.
    """
    if _cut_hash is not None:
        first, cuts, ids = _cut_hash(view, stop, ObjType.CHUNK, skip)
        return first, cuts, [ids[i : i + ID_LEN] for i in range(0, len(ids), ID_LEN)]
    ends: list[int] = []
    oids: list[bytes] = []
    pos = first = 0
    for chunk in _cdc().cut_buf(view) if stop else ():
        if pos >= stop:
            break
        if pos < skip:
            pos += chunk.length
            first = pos
            continue
        oids.append(object_id(ObjType.CHUNK, chunk.data))
        pos += chunk.length
        ends.append(pos)
    return first, ends, oids


def next_chunk(view: memoryview) -> tuple[int, bytes]:
    """The length and id of the chunk that a cut from the start of ``view`` gives."""
    _, (size,), (oid,) = cut_and_hash(view, 1)
    return size, oid


WINDOW = 16 * 1024 * 1024  # bytes mapped per step of chunk_file


def chunk_file(path: Path | str) -> Iterator[memoryview]:
    """Yield the chunks of a regular file, one mapped window at a time.

    Each chunk is a view into a read-only memory map of one window of the file
    (no copy); the window is unmapped once no chunk of it is referenced, so
    memory stays bounded whatever the file size. The last chunk of a window is
    re-cut from the next window, so the cut points are exactly those of cutting
    the whole file at once.
    """
    import mmap

    from pyfastcdc.cy import FastCDC  # imported on first use: keeps start-up light

    cdc = FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE)
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        start, span = 0, max(WINDOW, 2 * MAX_SIZE)
        while start < size:
            base = start - start % mmap.ALLOCATIONGRANULARITY
            length = min(span + start - base, size - base)
            window = mmap.mmap(f.fileno(), length, offset=base, access=mmap.ACCESS_READ)
            chunks = [c.data for c in cdc.cut_buf(memoryview(window)[start - base :])]
            if base + length < size:  # not the end: the last cut is not final yet
                chunks.pop()
            start += sum(len(c) for c in chunks)
            yield from chunks


def chunk_bytes(data: bytes | memoryview) -> Iterator[memoryview]:
    """Yield the chunks of an in-memory buffer (same cut points as :func:`chunk_file`)."""
    from pyfastcdc.cy import FastCDC

    for chunk in FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE).cut_buf(data):
        yield chunk.data


# --- cutting segments of one file in parallel --------------------------------------------
#
# A cut depends only on the bytes since the previous cut (the gear hash restarts at every
# cut), so a chunker started at any offset B, once it cuts where the chunker started at 0
# cuts, agrees with it from there on. A file is split into segments cut independently
# (one worker each, GIL released while cutting); the segment before runs one chunk past
# its end and the pieces are stitched at the first cut point they share. Where they share
# none (long runs of one byte cut only at MAX_SIZE, in another phase), the stitcher cuts
# on from the last final cut point itself (stepping over such runs by comparing bytes),
# so the result is always the sequential one.

SEGMENT = 16 * 1024 * 1024  # bytes per segment of a large file
MIN_SEGMENT = 2 * 1024 * 1024  # smaller files are split in fewer, not smaller, segments
R = TypeVar("R")


def _cdc() -> FastCDC:
    from pyfastcdc.cy import FastCDC  # imported on first use: keeps start-up light

    return FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE)


class Source:
    """Read-only views of a file (memory-mapped one segment at a time) or of a buffer."""

    def __init__(self, size: int, fd: int | None = None, data: memoryview | None = None):
        self.size, self._fd, self._data = size, fd, data

    @classmethod
    def of_bytes(cls, data: bytes | memoryview) -> Source:
        """A source over an in-memory buffer."""
        view = memoryview(data).cast("B")
        return cls(len(view), data=view)

    def view(self, start: int, stop: int) -> memoryview:
        """Bytes ``[start, stop)``; a file's view keeps its own mapping alive (no copy)."""
        if self._data is not None:
            return self._data[start:stop]
        import mmap

        base = start - start % mmap.ALLOCATIONGRANULARITY
        assert self._fd is not None
        window = mmap.mmap(self._fd, stop - base, offset=base, access=mmap.ACCESS_READ)
        return memoryview(window)[start - base :]


def plan_segments(size: int, segment: int | None = None) -> list[tuple[int, int]]:
    """Split ``[0, size)`` into ``(start, stop)`` segments: at least four for files of
    ``4 * MIN_SEGMENT`` bytes or more, at most ``segment`` (default ``SEGMENT``) bytes each."""
    step = segment or max(MIN_SEGMENT, min(SEGMENT, -(-size // 4)))
    return [(start, min(start + step, size)) for start in range(0, size, step)]


LEAD = 2 * MAX_SIZE  # a segment is cut from this far before its start (see cut_piece)
BLOCK = 2 * MAX_SIZE  # cut and hashed at once, then worked on while in the cache


@dataclass
class Piece(Generic[R]):
    """The chunks of one segment, as cut from a little before it, and ``work`` done on
    each.

    The first chunk starts at ``start``, the first cut at or after the segment's start
    (or where ``cut_piece``'s ``resume`` guessed one); the last runs past ``stop`` (it
    is the one that contains ``stop - 1``). A segment shorter than a chunk may hold no
    cut, and its piece no chunk. ``view``
    covers the source from ``base`` (at most the segment's start) to ``min(size, stop + 2
    * MAX_SIZE)``, enough for the stitcher to cut on from any point before the last end.
    """

    start: int
    stop: int
    ends: list[int]  # file offset just past each chunk, increasing
    results: list[R]
    view: memoryview
    base: int  # the file offset of view[0]


Known = Callable[[memoryview, int, int], "tuple[list[int], list[R]] | None"]
Resume = Callable[[memoryview, int, int, int], "tuple[int, list[int], list[R]] | None"]
Work = Callable[[memoryview, bytes], R]  # called with a chunk and its id


def cut_piece(
    source: Source,
    start: int,
    stop: int,
    work: Work[R],
    known: Known[R] | None = None,
    lead: int = LEAD,
    before_work: Callable[[list[bytes]], None] | None = None,
    resume: Resume[R] | None = None,
    block: Callable[[], int] | None = None,
    after_work: Callable[[list[R]], list[R]] | None = None,
) -> Piece[R]:
    """Cut the segment ``[start, stop)`` and call ``work`` on each chunk and its id.

    The cutting starts ``lead`` bytes before ``start`` (or at 0), where only the cut points
    are wanted: by ``start`` they are almost always those of the whole file, as a chunker
    started anywhere falls in step within a chunk or two (the stitcher makes sure). The
    chunks kept are those from the first cut at or after ``start`` (or from where
    ``resume`` answers, below). Every chunk is cut
    with more than ``MAX_SIZE`` bytes after its start in the view (or up to the end of the
    source), so it is exactly the chunk a sequential cut from the same point gives.
    ``known``, given the view, a cut point in it and the segment's end (both relative to
    the view), may instead answer ``(ends, results)`` for chunks from that cut point, each
    starting before the segment's end, ``ends`` relative to the cut point (``odb.known``:
    stored chunks with the same bytes, whose cuts it vouches for); cutting resumes after
    the last of them. Without ``known`` the segment is cut and hashed a block at a time
    (one :func:`cut_and_hash` call a block: the chunks that start in the next ``block()``
    bytes, default ``BLOCK``), and ``before_work`` (if given) is called with the ids of a
    block's chunks, in order, before ``work`` is called on any of them (so a caller can
    look them all up at once); ``work`` runs on a block's chunks while their bytes are
    still in the CPU's cache, before the next block is cut, and ``after_work`` (if given)
    then gets the block's results and returns what the piece keeps of them (a caller
    writes the block's new chunks at once, while their payloads are in the cache too,
    and keeps no payload). With ``known``, chunk by chunk, asking ``known`` at each cut
    point. ``resume`` (with ``known``), given the view, its file offset and the segment's
    start and stop (file offsets), may answer ``(at, ends, results)``: chunks that start
    at a point ``start <= at < stop`` it takes for a cut point, as ``known`` answers them;
    the lead is then not cut. A wrong guess costs time, not correctness: the stitcher
    joins pieces only at cut points they share.
    """
    base = max(0, start - lead)
    view = source.view(base, min(source.size, stop + 2 * MAX_SIZE))
    if known is None:
        limit = stop - base
        block_size = block or (lambda: BLOCK)
        first, rel, oids = cut_and_hash(view, min(limit, start - base + block_size()), start - base)
        if not rel:  # no cut in [start, stop): a segment shorter than a chunk
            return Piece(base + first, stop, [], [], view, base)
        done: list[int] = []
        results = []
        at = first
        while True:  # a block at a time: its chunks are worked on while in the cache
            if before_work is not None:
                before_work(oids)
            block_results = []
            for b, oid in zip(rel, oids, strict=True):
                block_results.append(work(view[at:b], oid))
                at = b
            results += block_results if after_work is None else after_work(block_results)
            done += rel
            if at >= limit:
                break
            _, rel, oids = cut_and_hash(view[at:], min(limit - at, block_size()))
            rel = [at + e for e in rel]
        return Piece(base + first, stop, [base + e for e in done], results, view, base)
    ends: list[int] = []
    results = []
    resumed = resume(view, base, start, stop) if resume is not None and start > base else None
    if resumed is not None:
        pos, rel, got = resumed
        begin = pos
        ends += [pos + e for e in rel]
        results += got
        pos = ends[-1]
    else:
        pos = base + cut_and_hash(view, start - base, start - base)[0]
        begin = pos
    while pos < stop:
        hit = known(view, pos - base, stop - base)
        if hit is not None:
            rel, got = hit
            ends += [pos + e for e in rel]
            results += got
            pos = ends[-1]
            continue
        size, oid = next_chunk(view[pos - base :])
        results.append(work(view[pos - base : pos - base + size], oid))
        pos += size
        ends.append(pos)
    return Piece(begin, stop, ends, results, view, base)


class Stitcher(Generic[R]):
    """Joins pieces, in file order, into the chunks of a sequential cut from offset 0.

    ``feed`` returns the final results of a piece: those after the first cut point the
    piece shares with the chunks already final, preceded by the chunks cut here (and
    ``work`` done on them here) to reach that point. A piece that shares none is skipped.

    Runs of one byte value (zeros, mostly) are the usual reason to share none: they cut
    every MAX_SIZE bytes (or every L bytes for a few values) in the phase of the last
    cut before the run. Inside a run every chunk is the same, so the stitcher remembers
    the chunk of each byte value and steps over the run comparing bytes, not cutting.
    """

    def __init__(self, work: Work[R]) -> None:
        self.pos = 0  # every byte before this is in a final chunk (pos: a cut point)
        self.work = work
        self.recut = 0  # bytes cut here rather than in a worker (for tests and tuning)
        self.reused = 0  # bytes of runs stepped over with a remembered chunk
        self._runs: dict[int, tuple[int, R, bytes]] = {}  # byte -> length, result, fill

    def feed(self, piece: Piece[R]) -> list[R]:
        """The final results that ``piece`` completes, in order."""
        import bisect

        assert piece.base <= self.pos, "pieces must be fed in file order"
        out: list[R] = []
        ends = piece.ends
        while self.pos < piece.stop or (ends and self.pos < ends[-1]):
            if ends:
                if self.pos == piece.start:
                    first = 0
                else:
                    i = bisect.bisect_left(ends, self.pos)
                    first = i + 1 if ends[i] == self.pos else -1
                if first >= 0:  # in step with the piece from here on
                    out += piece.results[first:]
                    self.pos = ends[-1]
                    break
            out.append(self._next(piece.view[self.pos - piece.base :]))
        return out

    def _next(self, view: memoryview) -> R:
        """The chunk at the start of ``view`` (which holds more than MAX_SIZE bytes or
        reaches the end of the source): its result, and ``pos`` moved past it.

        A cut from offset s reads bytes s .. s+L (L the length, the byte after the chunk
        included) or s .. s+MAX_SIZE-1 when cut at MAX_SIZE, and nothing else once more
        than MAX_SIZE bytes follow s. So where those bytes are all one value, the chunk
        is the one already cut from inside a run of that value.
        """
        deep = len(view) > MAX_SIZE
        run = self._runs.get(view[0]) if deep else None
        if run is not None:
            length, result, fill = run
            if fill.startswith(view[: len(fill)]):
                self.pos += length
                self.reused += length
                return result
        size, oid = next_chunk(view)
        result = self.work(view[:size], oid)
        self.pos += size
        self.recut += size
        span = min(size + 1, MAX_SIZE)
        if deep and view[0] == view[span - 1] == view[span // 2]:
            fill = bytes(view[:1]) * span
            if fill.startswith(view[:span]):
                self._runs[view[0]] = (size, result, fill)
        return result


def chunk_file_segmented(path: Path | str, segment: int | None = None) -> Iterator[memoryview]:
    """:func:`chunk_file` by segments, cut one after the other here (the parallel save
    cuts them in worker threads): the same chunks, for tests and comparisons."""
    with open(path, "rb", buffering=0) as f:
        source = Source(os.fstat(f.fileno()).st_size, fd=f.fileno())
        stitcher: Stitcher[memoryview] = Stitcher(_chunk)
        for start, stop in plan_segments(source.size, segment):
            yield from stitcher.feed(cut_piece(source, start, stop, _chunk))


def _chunk(data: memoryview, oid: bytes) -> memoryview:
    return data
