"""A/B of two source trees on one step, in alternating fresh processes (session 14).

The store benchmark's series drift by more than a 10% change on this shared host, so a
change to the save or read path is judged here: the step runs in a fresh child process
per run (imports not counted), the two trees alternate, and the medians are printed.
``--old`` is another checkout of modelvault (``git worktree add /tmp/old HEAD~1``; its
compiled extensions must be built or copied there), put first on ``sys.path`` ahead of
the editable install; ``--new`` defaults to this checkout.

Steps: ``save`` (a folder into an empty store), ``version`` (``--version-of``'s folder
first saved into a base store, then the folder saved into a copy of it) and ``path``
(``Model.path`` of the folder saved once, its cached copy removed before each run).
With ``--drop-caches`` (root) the page cache is emptied before each run and the folder
read back into it, as ``bench_store.py`` prepares its steps::

    .venv/bin/python benchmarks/bench_ab.py --old /tmp/old --step path \\
        --folder /var/tmp/mv-bf16/workload-bf16/v0 --runs 6
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, os, shutil, sys, time
tree = sys.argv[1]
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, tree)
import modelvault
import modelvault._cdc, modelvault._floatcodec  # (built there: no pure-Python stand-ins)
assert modelvault.__file__.startswith(tree + "/"), modelvault.__file__
step, folder, store = sys.argv[2], sys.argv[3], sys.argv[4]
s = modelvault.Store(store)
start, cpu = time.perf_counter(), time.process_time()
if step == "path":
    path = s.get("ab:v0").path
else:
    s.save(folder, "ab:v1" if step == "version" else "ab:v0")
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
if step == "path":
    shutil.rmtree(path)
print(json.dumps({"wall": wall, "cpu": cpu}))
"""


def _prepare(folder: Path, drop: bool) -> None:
    if drop:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass


def _run(tree: str, step: str, folder: Path, store: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, tree, step, str(folder), str(store)],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"{step} with {tree} failed:\n{out.stderr}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--old", required=True, help="the other checkout of modelvault")
    ap.add_argument("--new", default=str(ROOT), help="this checkout (default)")
    ap.add_argument("--step", choices=["save", "version", "path"], required=True)
    ap.add_argument("--folder", type=Path, required=True, help="the model folder saved")
    ap.add_argument("--version-of", type=Path, help="(version) the folder saved before it")
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--drop-caches", action="store_true")
    args = ap.parse_args()
    if args.step == "version" and args.version_of is None:
        ap.error("--step version needs --version-of")
    args.old, args.new = str(Path(args.old).resolve()), str(Path(args.new).resolve())
    results: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="mv-ab-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        base = work / "base"
        if args.step == "version":  # the base store, written once by the new tree
            _run(args.new, "save", args.version_of, base)
        for turn in range(args.runs):
            order = ["old", "new"] if turn % 2 == 0 else ["new", "old"]
            for side in order:
                tree = args.old if side == "old" else args.new
                store = work / f"store-{side}"
                if args.step == "path":
                    if not store.exists():
                        _run(tree, "save", args.folder, store)
                else:
                    shutil.rmtree(store, ignore_errors=True)
                    if args.step == "version":
                        shutil.copytree(base, store)
                _prepare(args.folder, args.drop_caches)
                results[side].append(_run(tree, args.step, args.folder, store))
    for side in ("old", "new"):
        walls = sorted(r["wall"] for r in results[side])
        cpus = sorted(r["cpu"] for r in results[side])
        print(
            f"{side}: wall median {statistics.median(walls):.3f} s "
            f"({' '.join(f'{w:.3f}' for w in walls)}), cpu median {statistics.median(cpus):.3f} s"
        )


if __name__ == "__main__":
    main()
