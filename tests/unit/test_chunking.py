"""Chunking a file window by window cuts exactly where cutting it whole would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelvault.core import chunking


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
    data = {
        "rand": os.urandom(size),
        "same": b"x" * size,
        "mix": os.urandom(size // 2)
        + b"\0" * (size // 4)
        + os.urandom(size - size // 2 - size // 4),
    }[kind]
    path = tmp_path / "f"
    path.write_bytes(data)
    monkeypatch.setattr(chunking, "WINDOW", window)
    windowed = [bytes(c) for c in chunking.chunk_file(path)]
    assert windowed == [bytes(c) for c in chunking.chunk_bytes(data)]
    assert b"".join(windowed) == data
    assert all(len(c) <= chunking.MAX_SIZE for c in windowed)
