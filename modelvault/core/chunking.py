"""Content-defined chunking (FastCDC 2020, via pyfastcdc's Cython build).

The parameters are part of the storage format: changing them does not break
reading, but chunks cut with other parameters no longer deduplicate with old ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

AVG_SIZE = 64 * 1024
MIN_SIZE = 16 * 1024
MAX_SIZE = 512 * 1024


def chunk_file(path: Path | str) -> Iterator[memoryview]:
    """Yield the chunks of a regular file, read as a stream (memory stays bounded).

    Each view is valid only until the next chunk is produced: copy what you keep.
    """
    from pyfastcdc.cy import FastCDC  # imported on first use: keeps start-up light

    with open(path, "rb", buffering=0) as f:
        for chunk in FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE).cut_stream(f):
            yield chunk.data


def chunk_bytes(data: bytes | memoryview) -> Iterator[memoryview]:
    """Yield the chunks of an in-memory buffer (same cut points as :func:`chunk_file`)."""
    from pyfastcdc.cy import FastCDC

    for chunk in FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE).cut_buf(data):
        yield chunk.data
