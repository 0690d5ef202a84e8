"""A fresh machine's first pull from a remote of many packs (issue 18 point 3).

Builds a ``file://`` remote of ``--packs`` packs (one small version pushed at a time, so
one pack each, as a team's CI would), then, in a fresh process with an empty store, pulls
one 1 KiB tag and reports the wall time (Python start included), the requests the pull
made and how many index files (per-pack ``.idx`` and catalogue ``.cat``) it read.

Targets: at most 20 remote files read and under 1 s on ``file://``.

    python benchmarks/bench_catalogue.py [--packs 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import modelvault
from modelvault.remote.transport import wrapping
from modelvault.remote.wrappers import Metered
seen = {"idx": 0, "cat": 0, "requests": 0}
meters = []
def wrap(t):
    m = Metered(t)
    meters.append(m)
    orig = m.get
    def get(key):
        if key.endswith(".idx"): seen["idx"] += 1
        if key.endswith(".cat"): seen["cat"] += 1
        return orig(key)
    m.get = get
    return m
store = modelvault.Store(sys.argv[1])
with wrapping(wrap):
    store.pull(sys.argv[3], sys.argv[2])
seen["requests"] = sum(m.requests for m in meters)
seen["wall"] = time.perf_counter() - t0
print(json.dumps(seen))
"""


def build(url: str, packs: int, work: Path, options: dict[str, str]) -> None:
    import modelvault

    store = modelvault.Store(work / "source")
    if options:
        modelvault.remotes.add("r", url, store=store, **options)
        url = "r"
    src = work / "src"
    src.mkdir(exist_ok=True)
    for i in range(packs):
        (src / "w.bin").write_bytes(os.urandom(1024))
        store.save(src, f"m:v{i:05d}")
        store.push(f"m:v{i:05d}", url)
        if i % 100 == 99:
            print(f"  pushed {i + 1}/{packs}", file=sys.stderr)


def first_pull(url: str, tag: str, runs: int, work: Path) -> list[dict[str, float]]:
    out = []
    for run in range(runs):
        dest = work / f"fresh{run}"
        res = subprocess.run(
            [sys.executable, "-c", CHILD, str(dest), url, tag],
            capture_output=True,
            text=True,
            check=True,
        )
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packs", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cat-") as tmp:
        work = Path(tmp)
        url = (work / "remote").as_uri()
        t = time.perf_counter()
        build(url, args.packs, work, {})
        built = time.perf_counter() - t
        packs = len(list((work / "remote" / "packs").glob("*.pack")))
        cats = len(list((work / "remote" / "index").glob("*.cat")))
        rows = first_pull(url, "m:v00000", args.runs, work)
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"## first pull of a 1 KiB tag from file:// with {packs} packs, {cats} catalogues")
        print(f"(remote built in {built:.0f} s by {args.packs} pushes; medians of {args.runs})\n")
        print("| wall s (Python start incl.) | requests | .idx read | .cat read | files |")
        print("|---|---|---|---|---|")
        files = med["idx"] + med["cat"]
        print(
            f"| {med['wall']:.3f} | {med['requests']:.0f} | {med['idx']:.0f} | "
            f"{med['cat']:.0f} | {files:.0f} |"
        )
        ok = files <= 20 and med["wall"] < 1.0
        print(f"\ntarget <= 20 index files and < 1 s: {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
