"""Buffered writes against O_DIRECT writes of 800 MiB, with fsync (session 20 probe).

A new 1 GiB bf16 save writes ~0.8 GiB of packs; on this project's Firecracker hosts the
page cache's new pages can cost a host fault each (free page reporting, RESULTS.md
session 18), charged to the writer's CPU. This measures what O_DIRECT (no page cache:
the device reads the writer's own, reused, page-aligned buffer) would save, before any
pack-writer change::

    .venv/bin/python benchmarks/proto/odirect_write.py [folder]   # default /var/tmp

Both write the same 4 MiB buffer 200 times to a new file, then fsync; three rounds,
alternating. Needs a filesystem that supports O_DIRECT (ext4, xfs; not tmpfs).
"""

from __future__ import annotations

import mmap
import os
import sys
import time

TOTAL = 800 << 20
BLOCK = 4 << 20


def run(folder: str, buf: mmap.mmap, direct: bool) -> tuple[float, float]:
    """Wall and CPU seconds of writing TOTAL bytes to a new file and fsyncing it."""
    path = os.path.join(folder, "odirect-probe.bin")
    if os.path.exists(path):
        os.unlink(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | (os.O_DIRECT if direct else 0)
    fd = os.open(path, flags, 0o644)
    try:
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(0, TOTAL, BLOCK):
            os.write(fd, buf)
        os.fsync(fd)
        return time.perf_counter() - start, time.process_time() - cpu
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> None:
    folder = sys.argv[1] if len(sys.argv) > 1 else "/var/tmp"
    buf = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT needs
    buf.write(os.urandom(BLOCK))
    for _ in range(3):
        for direct in (False, True):
            wall, cpu = run(folder, buf, direct)
            name = "O_DIRECT" if direct else "buffered"
            print(f"{name}: wall {wall:.3f} s, cpu {cpu:.3f} s")


if __name__ == "__main__":
    main()
