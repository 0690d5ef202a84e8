"""A child process for test_crash_index.py: a save (whose commit merges pack indexes) or a
gc (sweep, repack, one index rebuild), killed by SIGKILL at a chosen point.

Run as ``python _index_procs.py save STORE SRC TAG --kill-at P`` or
``python _index_procs.py gc STORE --kill-at P``. The points are reached by wrapping
functions of the real code in this process only; the work itself is the real thing:

- ``midx-buckets``      the body of the new multi-pack index (ids, entries, filter) is
                        written to its temporary file, its header, fan-out and checksum
                        not yet (the small merges of these tests are made in memory:
                        ``_write_small``; ``_write_large`` is wrapped the same way)
- ``midx-side``         a merge made with numpy (the child forces it: ``_SMALL_MERGE``
                        0) has written its ids, its entries are in the temporary file
                        beside it, not yet appended
- ``midx-sealed``       the new index is complete and fsync'd under its temporary name
- ``midx-renamed``      the new index is in view, the ones it supersedes not yet removed
- ``midx-old-gone``     the first superseded index was removed
- ``repack-half``       gc is copying live objects into a new pack (3 copied)
- ``repack-done``       gc's new pack is durable and visible, no old pack removed yet
- ``pack-gone``         gc removed the first dead or repacked pack
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from modelvault import _fsutil
from modelvault.odb import midx, packs
from modelvault.repo import maintenance
from modelvault.store import Store

MERGE_POINTS = ("midx-buckets", "midx-side", "midx-sealed", "midx-renamed", "midx-old-gone")
GC_POINTS = ("repack-half", "repack-done", "pack-gone")

_KILL: set[str] = set()


def hit(point: str) -> None:
    if point in _KILL:
        os.kill(os.getpid(), signal.SIGKILL)


def install_points() -> None:
    for name in ("_write_small", "_write_large"):  # the index's body written, not sealed
        real_body = getattr(midx, name)

        def write_body(*args: Any, _real: Any = real_body, **kw: Any) -> Any:
            out = _real(*args, **kw)
            hit("midx-buckets")
            return out

        setattr(midx, name, write_body)

    real_buckets = midx._write_buckets

    def write_buckets(*args: Any, **kw: Any) -> Any:
        out = real_buckets(*args, **kw)
        hit("midx-side")
        return out

    midx._write_buckets = write_buckets  # type: ignore[assignment]

    real_rename = _fsutil.rename_into

    def rename_into(tmp: Path, final: Path, **kw: Any) -> None:
        if final.name.endswith(".midx"):
            hit("midx-sealed")
        real_rename(tmp, final, **kw)
        if final.name.endswith(".midx"):
            hit("midx-renamed")

    _fsutil.rename_into = rename_into  # type: ignore[assignment]

    real_unlink = os.unlink

    def unlink(path: Any, *args: Any, **kw: Any) -> None:
        real_unlink(path, *args, **kw)
        if str(path).endswith(".midx"):
            hit("midx-old-gone")
        if str(path).endswith(".pack"):
            hit("pack-gone")

    os.unlink = unlink  # type: ignore[assignment]

    copied = [0]
    real_add = packs.PackWriter.add_prepared

    def add_prepared(self: packs.PackWriter, *args: Any, **kw: Any) -> None:
        real_add(self, *args, **kw)
        copied[0] += 1
        if copied[0] == 3:
            hit("repack-half")

    packs.PackWriter.add_prepared = add_prepared  # type: ignore[method-assign]

    real_repack = maintenance._repack

    def repack(*args: Any, **kw: Any) -> None:
        real_repack(*args, **kw)
        hit("repack-done")

    maintenance._repack = repack  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["save", "gc"])
    p.add_argument("store")
    p.add_argument("args", nargs="*")
    p.add_argument("--kill-at", choices=MERGE_POINTS + GC_POINTS, required=True)
    a = p.parse_args(argv)
    _KILL.add(a.kill_at)
    if a.kill_at == "midx-side":  # reached only by a merge made with numpy
        midx._SMALL_MERGE = 0
    install_points()
    store = Store(a.store)
    if a.command == "save":
        src, tag = a.args
        store.save(src, tag)
    else:
        store.gc()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
