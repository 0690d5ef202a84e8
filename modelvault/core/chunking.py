"""Content-defined chunking (FastCDC 2020, via pyfastcdc's Cython build).

The parameters are part of the storage format: changing them does not break
reading, but chunks cut with other parameters no longer deduplicate with old ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

AVG_SIZE = 64 * 1024
MIN_SIZE = 16 * 1024
MAX_SIZE = 512 * 1024


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
