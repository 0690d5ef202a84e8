"""Child processes for the crash and concurrency tests: save, gc or materialise, and
optionally die by SIGKILL (``--kill-at POINT``) or stop and wait (``--pause-at POINT``)
at a precise point of the write path.

Commands: ``save STORE SRC TAG``, ``create STORE SRC TAG`` (copies SRC into the staging
folder of ``Store.create``), ``gc STORE``, ``path STORE TAG`` (materialises ``Model.path``).
Run as ``python _procs.py COMMAND STORE [ARGS] [--kill-at P | --pause-at P]``. The
process prints ``ready`` once imported (and, with ``--wait``, then waits for one line on
stdin before starting, so that several children start together). At a pause point it
prints ``paused <P>`` and waits for one line on stdin.

The points are reached by wrapping functions of the real code in this process only
(nothing in modelvault knows about them); the work itself is the real thing:

- ``pack-half``      a pack is being written (temporary file, 100 records in)
- ``pack-renamed``   a sealed pack was renamed into place, its index not yet written
- ``index-renamed``  a pack and its index are published, the save goes on
- ``before-ref``     every object is durable, the ref is not yet created
- ``ref-temp``       the ref's content is in a temporary file, not yet linked
- ``after-ref``      the ref is published (the save is complete)
- ``gc-repacked``    gc copied the live objects of a pack, the old pack still exists
- ``gc-idx-gone``    gc deleted an index, not yet its pack
- ``gc-cache-half``  gc removed the first file of a cached model folder, not the rest
- ``cache-rename``   a materialised folder is complete under its temporary name

Exit codes: 0 done, 3 ModelExists, 4 another ModelVaultError (message on stderr).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import modelvault
from modelvault import _fsutil
from modelvault.odb import packs
from modelvault.refs import RefStore
from modelvault.repo import maintenance
from modelvault.store import Store

POINTS = (
    "pack-half",
    "pack-renamed",
    "index-renamed",
    "before-ref",
    "ref-temp",
    "after-ref",
    "gc-repacked",
    "gc-idx-gone",
    "gc-cache-half",
    "cache-rename",
)

_ACTION: dict[str, str] = {}  # point -> "kill" | "pause"


def hit(point: str) -> None:
    """Die or pause here if the command line asked for it."""
    action = _ACTION.get(point)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "pause":
        print(f"paused {point}", flush=True)
        sys.stdin.readline()


def _after(owner: Any, attr: str, point: str, when: Callable[..., bool] | None = None) -> None:
    real = getattr(owner, attr)

    def wrapper(*args: Any, **kw: Any) -> Any:
        result = real(*args, **kw)
        if when is None or when(*args, **kw):
            hit(point)
        return result

    setattr(owner, attr, wrapper)


def _before(owner: Any, attr: str, point: str, when: Callable[..., bool] | None = None) -> None:
    real = getattr(owner, attr)

    def wrapper(*args: Any, **kw: Any) -> Any:
        if when is None or when(*args):
            hit(point)
        return real(*args, **kw)

    setattr(owner, attr, wrapper)


def install_points() -> None:
    records = [0]
    real_add = packs.PackWriter.add_prepared_many

    def add_prepared_many(
        self: packs.PackWriter, objects: Any, lane: int = 0, *, checked: bool = False
    ) -> None:
        batch = list(objects)
        real_add(self, batch, lane, checked=checked)
        records[0] += len(batch)
        if records[0] >= 100:  # every record goes through here, single or batched
            records[0] = -(10**9)
            hit("pack-half")

    packs.PackWriter.add_prepared_many = add_prepared_many  # type: ignore[method-assign]
    _after(os, "replace", "pack-renamed", lambda src, dst: str(dst).endswith(".pack"))
    _after(os, "replace", "index-renamed", lambda src, dst: str(dst).endswith(".idx"))
    _before(RefStore, "create", "before-ref")
    _after(RefStore, "create", "after-ref")
    _after(_fsutil, "write_new", "ref-temp", lambda path, data: "refs" in Path(path).parts)
    _after(maintenance, "_repack", "gc-repacked")
    _after(os, "unlink", "gc-idx-gone", lambda path, *a, **k: str(path).endswith(".idx"))
    _after(os, "unlink", "gc-cache-half", lambda path, *a, **k: "dir_fd" in k)  # rmtree
    _before(os, "rename", "cache-rename", lambda src, dst: ".cache" in str(src))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["save", "create", "gc", "path"])
    p.add_argument("store")
    p.add_argument("args", nargs="*")
    p.add_argument("--kill-at", choices=POINTS)
    p.add_argument("--pause-at", choices=POINTS, action="append", default=[])
    p.add_argument("--wait", action="store_true", help="wait for a line on stdin first")
    a = p.parse_args(argv)
    if a.kill_at:
        _ACTION[a.kill_at] = "kill"
    for point in a.pause_at:
        _ACTION[point] = "pause"
    install_points()
    store = Store(a.store)
    print("ready", flush=True)
    if a.wait:
        sys.stdin.readline()
    try:
        if a.command == "save":
            src, tag = a.args
            model = store.save(src, tag)
            print(f"saved {model.tag} {model.id}", flush=True)
        elif a.command == "create":  # copy a folder into the staging folder of create()
            src, tag = a.args
            with store.create(tag) as ref:
                shutil.copytree(src, ref.path, dirs_exist_ok=True)
            assert ref.model is not None
            print(f"saved {ref.model.tag} {ref.model.id}", flush=True)
        elif a.command == "gc":
            print(f"freed {store.gc()}", flush=True)
        else:
            print(f"path {store.get(a.args[0]).path}", flush=True)
    except modelvault.ModelExists as exc:
        print(exc, file=sys.stderr)
        return 3
    except modelvault.ModelVaultError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 4
    return 0


# -- parent side: used by the tests to drive the children above -----------------
class Child:
    """One child process running this script; talks over stdin/stdout lines."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def expect(self, prefix: str) -> str:
        """The child's next output line, which must start with ``prefix``."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(prefix):
            _, err = self.proc.communicate(timeout=60)
            raise AssertionError(f"expected {prefix!r} from the child, got {line!r}: {err}")
        return line.strip()

    def send(self) -> None:
        """Release a child waiting for a line (``--wait`` or a pause point)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """Wait for the end: ``(exit code, rest of stdout, stderr)``."""
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=60)


def leftovers(store: Path) -> list[str]:
    """Temporaries and unpublished packs left in a store (what gc must remove)."""
    found = []
    for root, dirs, files in os.walk(store):
        for name in dirs + files:
            path = Path(root) / name
            unpublished = name.endswith(".pack") and not path.with_suffix(".idx").exists()
            if name.startswith(".tmp-") or unpublished:
                found.append(str(path.relative_to(store)))
    return sorted(found)


def waiting_for_lock(lock: Path, pid: int) -> bool:
    """True when process ``pid`` is blocked waiting for an flock on ``lock`` (Linux)."""
    inode = os.stat(lock).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and str(pid) in fields and any(f.endswith(f":{inode}") for f in fields):
            return True
    return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
