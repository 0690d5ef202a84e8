"""Durable writes start their write-back early (``_fsutil.WriteBack``, ``start_writeback``)
so the final fsync has little left; the bytes and their durability must not change."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from modelvault import _fsutil
from modelvault.core.hashing import ObjType
from modelvault.odb import PackDB, PackWriter
from modelvault.odb import writer as writer_module


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Records each range whose write-back is started (and still starts it)."""
    started: list[tuple[int, int]] = []
    real = _fsutil.start_writeback

    def spy(fd: int, offset: int, nbytes: int) -> None:
        started.append((offset, nbytes))
        real(fd, offset, nbytes)

    monkeypatch.setattr(_fsutil, "start_writeback", spy)
    return started


@pytest.mark.skipif(_fsutil._sync_file_range() is None, reason="needs sync_file_range (Linux)")
def test_writeback_starts_every_step_over_consecutive_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = _spy(monkeypatch)
    data = os.urandom(1 << 20)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        wb = _fsutil.WriteBack(fd, step=3 << 20)
        for _ in range(10):
            _fsutil.write_all(fd, [data])
            wb.wrote(len(data))
        wb.wait()
        os.fsync(fd)
    finally:
        os.close(fd)
    assert started == [(0, 3 << 20), (3 << 20, 3 << 20), (6 << 20, 3 << 20)]
    assert (tmp_path / "f").read_bytes() == data * 10


def test_without_sync_file_range_a_thread_fdatasyncs_and_reports_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_fsutil, "_sync_file_range", lambda: None)  # as on macOS
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    wb = _fsutil.WriteBack(fd, every=10)
    os.write(fd, b"x" * 20)
    os.close(fd)  # the helper thread's fdatasync now fails
    wb.wrote(20)
    with pytest.raises(OSError):
        wb.wait()


@pytest.mark.skipif(_fsutil._sync_file_range() is None, reason="needs sync_file_range (Linux)")
def test_a_pack_starts_its_write_back_while_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = _spy(monkeypatch)
    monkeypatch.setattr(writer_module, "_WRITEBACK", 1 << 20)
    db = PackDB(tmp_path / "objects")
    blobs = [os.urandom(300_000) for _ in range(12)]
    with PackWriter(db) as writer:
        ids = [writer.add(ObjType.CHUNK, b) for b in blobs]
    assert len(started) >= 3  # ~3.6 MB written: a head start every MiB or so
    ends = [offset + n for offset, n in started]
    assert all(b == a for a, b in zip(ends, [o for o, _ in started[1:]], strict=False))
    assert [bytes(db.read(i)) for i in ids] == blobs


def test_write_all_writes_every_byte_in_calls_of_bounded_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts of any size (empty, tiny, several times ``WRITE_MAX``) land in order, and no
    single ``writev`` carries more than ``WRITE_MAX`` bytes (large writes make the kernel
    fill large page-cache folios, which cost far more here)."""
    sizes: list[int] = []
    real = os.writev

    def spy(fd: int, views: list[memoryview]) -> int:
        sizes.append(sum(len(v) for v in views))
        return real(fd, views)

    monkeypatch.setattr(os, "writev", spy)
    rng = random.Random(5)
    parts = [rng.randbytes(n) for n in (0, 1, 44, 3 * _fsutil.WRITE_MAX + 7, 0, 1000, 300_000)]
    parts += [rng.randbytes(rng.randrange(1, 70_000)) for _ in range(40)]
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        _fsutil.write_all(fd, [memoryview(p) if i % 2 else p for i, p in enumerate(parts)])
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(parts)
    assert max(sizes) == _fsutil.WRITE_MAX
    assert len(sizes) == -(-sum(map(len, parts)) // _fsutil.WRITE_MAX)  # all full but the last
