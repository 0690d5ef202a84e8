"""Processes in separate PID namespaces (containers sharing one store volume) saving,
materialising and running gc at once: gc never destroys their in-flight work.

Each process runs under ``unshare --pid --fork`` (CI runs as root), so the pid in a
temporary's name means nothing to gc's namespace: only the in-flight flocks tell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelvault import Store

pytestmark = pytest.mark.slow

NFILES = 90


def _data(i: int) -> bytes:
    return (f"file {i} ".encode() * 5000)[: 20_000 + 97 * i]


_CREATE = """
import sys, time
from modelvault import Store
store = Store(sys.argv[1])
with store.create("created") as ref:
    for i in range(%(n)d):
        with open(f"{ref.path}/f{i:03d}.bin", "wb") as f:
            f.write((f"file {i} ".encode() * 5000)[: 20_000 + 97 * i])
        time.sleep(0.01)
print(ref.model.tag, flush=True)
"""

_MATERIALISE = """
import os, sys
from pathlib import Path
from modelvault import Store
store = Store(sys.argv[1])
bad = 0
for rnd in range(int(sys.argv[2])):
    for model in store.list():
        store.repo.cache.drop(bytes.fromhex(model.id))  # write it out afresh each round
        root = Path(model.path)
        names = sorted(os.listdir(root))
        if len(names) != %(n)d:
            bad += 1
            print("incomplete", model.tag, len(names), flush=True)
print("bad", bad, flush=True)
"""

_GC_LOOP = """
import sys, time, traceback
from pathlib import Path
from modelvault import Store
store, stop = Store(sys.argv[1]), Path(sys.argv[2])
runs = 0
while not stop.exists():
    try:
        store.gc()
    except Exception:
        traceback.print_exc()
        sys.exit(3)
    runs += 1
print("gc runs", runs, flush=True)
"""


def _in_own_pid_namespace(code: str, *args: str, pad: int = 0) -> list[str]:
    """A Python process in a new PID namespace, as pid 1 or (after ``pad`` short-lived
    processes) as pid ``pad + 2``: pids that mean another process, or none, elsewhere."""
    script = f'for i in $(seq {pad}); do /bin/true; done; "$@"; exit $?' if pad else 'exec "$@"'
    return ["unshare", "--pid", "--fork", "sh", "-c", script, "sh", sys.executable, "-c", code,
            *args]  # fmt: skip


def _run_beside_gc(store: Path, code: str, *args: str, timeout: float = 240) -> str:
    stop = store.parent / "stop-gc"
    gc = subprocess.Popen(_in_own_pid_namespace(_GC_LOOP, str(store), str(stop)),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        work = subprocess.run(_in_own_pid_namespace(code, str(store), *args, pad=20),
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
    finally:
        stop.touch()
        out, err = gc.communicate(timeout=120)
    assert gc.returncode == 0, f"gc raised beside the work:\n{err}"
    assert int(out.split()[-1]) > 0, "gc never ran"
    assert work.returncode == 0, work.stderr
    return work.stdout


def test_create_in_another_pid_namespace_survives_gc_loop(tmp_path: Path) -> None:
    path = tmp_path / "store"
    Store(path)
    out = _run_beside_gc(path, _CREATE % {"n": NFILES})
    store = Store(path)
    model = store.get(out.strip())
    for i in range(NFILES):
        with model.open(f"f{i:03d}.bin") as f:
            assert f.read() == _data(i)
    assert store.verify().ok
    assert sorted(os.listdir(path / "tmp")) == []  # its staging folder and lock are gone


def test_materialise_in_another_pid_namespace_survives_gc_loop(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store = Store(path)
    for k in range(3):
        src = tmp_path / f"src{k}"
        src.mkdir()
        for i in range(NFILES):
            (src / f"f{i:03d}.bin").write_bytes(_data(i) + bytes([k]))
        store.save(src, f"m{k}")
    out = _run_beside_gc(path, _MATERIALISE % {"n": NFILES}, "4")
    assert out.splitlines()[-1] == "bad 0", out
    for k in range(3):  # what the cache holds now is whole and exact
        root = Path(store.get(f"m{k}").path)
        for i in range(NFILES):
            assert (root / f"f{i:03d}.bin").read_bytes() == _data(i) + bytes([k])
    assert store.verify().ok
