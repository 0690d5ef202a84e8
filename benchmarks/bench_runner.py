"""modelvault's batcher beside BentoML's CorkDispatcher, measured in the same run.

Run from the repository root, alone on the machine (about 8 minutes)::

    make .venv-bentoml/.installed
    .venv/bin/python benchmarks/bench_runner.py --runs 3 --seconds 5 --json runner.json

``--quick`` is one run of 1 s per measure (about 45 s), for a smoke test. The report ends
with issue 23's targets (met or MISSED, with the deciding figures, for threads and asyncio)
and the load average at the start and end: a load above ~0.5 means others shared the CPUs
and the figures are not worth keeping.

Every measure runs in a fresh child process, one at a time, alternating the sides: ours
with this interpreter (``benchmarks/bench_runner.py --child SPEC``), BentoML's with
``.venv-bentoml/bin/python benchmarks/bentoml_dispatcher.py SPEC``. Both import the same
callers, model and output checks from ``runner_workload.py``:

- the model: ``time.sleep(1 ms + 10 us * rows)`` then ``x @ W`` (numpy in, numpy out);
  ``max_batch_size=100``; 64 concurrent callers;
- closed loop: each caller resubmits as soon as it has its result (1-row and 4-row
  requests), after a 1 s warm-up in the same process;
- open loop: Poisson arrivals of 1-row requests at 50% and 90% of BentoML's closed-loop
  1-row throughput measured in the same run (the same offered rate for both sides),
  latency counted from each request's planned arrival; asyncio callers start a task per
  arrival, thread callers are a pool of ``OPEN_THREADS`` (256) threads, enough that the
  pool never caps the requests in flight (64 would: at 90% load BentoML holds ~110);
- a lone caller: median latency through the batcher minus a direct call of the model;
- every result is compared bit for bit with the model's output for that caller's input
  alone (inputs and weights are small integers, so products are exact); a wrong result or
  a failed request (BentoML sheds load as 503s) is counted and reported.

BentoML's callers are asyncio tasks (its HTTP handlers are); ours are measured both with
64 threads (``Batcher.submit``) and 64 asyncio tasks (``Batcher.submit_async``). A fourth
side, "BentoML, thread callers", drives BentoML's dispatcher with the same 64 threads as
ours (each hands its request to the dispatcher's event loop): a reference for the thread
column. Each figure is the median over ``--runs`` runs; ratios are ours / BentoML's of
those medians.
Wall-clock figures on a shared 2-core machine drift by tens of percent: run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENTOML_PY = ROOT / ".venv-bentoml" / "bin" / "python"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import runner_workload as wl  # noqa: E402

# BentoML's dispatcher (its own asyncio callers); ours with threads and asyncio; BentoML's
# dispatcher driven by the same thread callers as ours (a reference for the thread column)
SIDES = ("bentoml", "threads", "asyncio", "bentoml-threads")


# --- the child: one measure of our batcher


def child(spec: dict[str, Any]) -> dict[str, Any]:
    from modelvault.runner.batching import Batcher

    with Batcher(wl.model, max_batch_size=wl.MAX_BATCH_SIZE) as batcher:
        threads = spec["side"] == "threads"
        if spec["kind"] != "lone":  # the same 1 s warm-up as BentoML's side
            warm = {"kind": "closed", "seconds": spec.get("warmup", 1.0), "rows": spec["rows"]}
            if threads:
                wl.measure_sync(batcher.submit, warm)
            else:
                asyncio.run(wl.measure_async(batcher.submit_async, warm))
        first = len(batcher.stats.batch_sizes)
        if threads:
            out = wl.measure_sync(batcher.submit, spec)
        else:
            out = asyncio.run(wl.measure_async(batcher.submit_async, spec))
        sizes = batcher.stats.batch_sizes[first:]
        out["mean_batch_rows"] = sum(sizes) / len(sizes) if sizes else 0.0
    out["side"] = spec["side"]
    return out


# --- the parent


def measure(side: str, spec: dict[str, Any]) -> dict[str, Any]:
    spec = {**spec, "side": side}
    if side.startswith("bentoml"):
        cmd = [str(BENTOML_PY), str(HERE / "bentoml_dispatcher.py"), json.dumps(spec)]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed on {spec}:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measure")
    parser.add_argument("--quick", action="store_true", help="1 run of 1 s per measure")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument(
        "--bentoml-max-latency-ms",
        type=float,
        default=60000,
        help="BentoML's max_latency_ms (default: its own default); past it, it sheds 503s",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if not BENTOML_PY.exists():
        raise SystemExit(f"{BENTOML_PY} is missing: run `make .venv-bentoml/.installed` first")
    if args.quick:
        args.runs, args.seconds = 1, 1.0
    secs = args.seconds
    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def run_all(name: str, spec: dict[str, Any], run: int) -> None:
        spec = {**spec, "max_latency_ms": args.bentoml_max_latency_ms}  # BentoML's side
        sides = SIDES if run % 2 == 0 else SIDES[::-1]  # alternate who goes first
        for side in sides:
            out = measure(side, spec)
            results.setdefault(name, {}).setdefault(side, []).append(out)
            print(f"  run {run + 1} {name:<12} {side:<8} {_brief(out)}", file=sys.stderr)

    for run in range(args.runs):
        run_all("closed 1 row", {"kind": "closed", "seconds": secs, "rows": 1}, run)
        run_all("closed 4 rows", {"kind": "closed", "seconds": secs, "rows": 4}, run)
        run_all("lone caller", {"kind": "lone", "seconds": secs}, run)
    capacity = median_of(results["closed 1 row"]["bentoml"], "rps")
    for run in range(args.runs):
        for load in (0.5, 0.9):
            spec = {"kind": "open", "seconds": secs, "rows": 1, "rate": load * capacity}
            run_all(f"open {load:.0%}", spec, run)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    report(results, args.runs, secs, capacity)
    load_after = os.getloadavg()[0]
    print(f"\nload average (1 min): {load_before:.2f} at the start, {load_after:.2f} at the end")


def _brief(out: dict[str, Any]) -> str:
    if "added_ms" in out:
        return f"added {out['added_ms']:.3f} ms"
    return (
        f"{out['rps']:.0f} req/s p50 {out['p50_ms']:.2f} p99 {out['p99_ms']:.2f} ms "
        f"cpu {out['cpu_us_per_req']:.1f} us/req batch {out['mean_batch_rows']:.1f} "
        f"wrong {out['wrong']} failed {out['failed']}"
    )


def report(results: dict[str, Any], runs: int, secs: float, capacity: float) -> None:
    def med(name: str, side: str, key: str) -> float:
        return median_of(results[name][side], key)

    def total(name: str, side: str, key: str) -> int:
        return sum(int(r.get(key, 0)) for r in results[name][side])

    print(
        f"model 1 ms + 10 us/row, numpy in/out, {wl.CALLERS} callers, max_batch_size="
        f"{wl.MAX_BATCH_SIZE}; medians of {runs} run(s) of {secs:g} s; ratio = ours / BentoML\n"
    )
    print(
        "| measure | BentoML | ours, threads | ours, asyncio | ratio threads | ratio asyncio "
        "| BentoML, thread callers |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in ("closed 1 row", "closed 4 rows", "open 50%", "open 90%"):
        b = {k: med(name, "bentoml", k) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
        t = {k: med(name, "threads", k) for k in b}
        a = {k: med(name, "asyncio", k) for k in b}
        bt = {k: med(name, "bentoml-threads", k) for k in b}
        if name.startswith("closed"):
            print(
                f"| {name}: throughput | {b['rps']:.0f} req/s | {t['rps']:.0f} | {a['rps']:.0f}"
                f" | {t['rps'] / b['rps']:.2f}x | {a['rps'] / b['rps']:.2f}x"
                f" | {bt['rps']:.0f} (ours, threads: {t['rps'] / bt['rps']:.2f}x) |"
            )
        else:
            offered = capacity * float(name[5:-1]) / 100
            print(f"| {name}: offered | {offered:.0f} req/s | | | | | |")
        print(
            f"| {name}: p50 / p99 | {b['p50_ms']:.2f} / {b['p99_ms']:.2f} ms"
            f" | {t['p50_ms']:.2f} / {t['p99_ms']:.2f} | {a['p50_ms']:.2f} / {a['p99_ms']:.2f}"
            f" | p99 {t['p99_ms'] / b['p99_ms']:.2f}x | p99 {a['p99_ms'] / b['p99_ms']:.2f}x"
            f" | {bt['p50_ms']:.2f} / {bt['p99_ms']:.2f} |"
        )
        print(
            f"| {name}: CPU per request | {b['cpu_us_per_req']:.1f} us"
            f" | {t['cpu_us_per_req']:.1f} | {a['cpu_us_per_req']:.1f} | | "
            f"| {bt['cpu_us_per_req']:.1f} |"
        )
        rows = [med(name, s, "mean_batch_rows") for s in SIDES]
        print(
            f"| {name}: mean batch rows | {rows[0]:.1f} | {rows[1]:.1f} | {rows[2]:.1f} | | "
            f"| {rows[3]:.1f} |"
        )
        bad = [total(name, s, "wrong") + total(name, s, "failed") for s in SIDES]
        print(f"| {name}: wrong or failed | {bad[0]} | {bad[1]} | {bad[2]} | | | {bad[3]} |")
    lone = [med("lone caller", s, "added_ms") for s in SIDES]
    print(
        f"| lone caller, added to a direct call | +{lone[0]:.3f} ms | +{lone[1]:.3f} | "
        f"+{lone[2]:.3f} | | | +{lone[3]:.3f} |"
    )
    print(verdicts(med, total))
    print(FAIRNESS)


def verdicts(med: Any, total: Any) -> str:
    """Issue 23's targets, side by side: met or missed, with the figure that decides."""
    lines = ["", "| target (issue 23) | ours, threads | ours, asyncio |", "|---|---|---|"]

    def row(what: str, check: Any) -> None:
        cells = []
        for side in ("threads", "asyncio"):
            ok, why = check(side)
            cells.append(f"{'met' if ok else 'MISSED'}: {why}")
        lines.append(f"| {what} | {cells[0]} | {cells[1]} |")

    for name in ("closed 1 row", "closed 4 rows"):

        def closed(side: str, name: str = name) -> tuple[bool, str]:
            ratio = med(name, side, "rps") / med(name, "bentoml", "rps")
            p99, theirs = med(name, side, "p99_ms"), med(name, "bentoml", "p99_ms")
            why = f"{ratio:.2f}x, p99 {p99:.2f} vs {theirs:.2f} ms"
            return ratio >= 1.1 and p99 <= theirs, why

        row(f"{name}: >= 1.1x throughput, p99 no higher", closed)
    for name in ("open 50%", "open 90%"):

        def open_(side: str, name: str = name) -> tuple[bool, str]:
            ours = med(name, side, "p50_ms"), med(name, side, "p99_ms")
            theirs = med(name, "bentoml", "p50_ms"), med(name, "bentoml", "p99_ms")
            why = f"p50/p99 {ours[0]:.2f}/{ours[1]:.2f} vs {theirs[0]:.2f}/{theirs[1]:.2f} ms"
            return ours[0] <= theirs[0] and ours[1] <= theirs[1], why

        row(f"{name}: p50 and p99 no higher", open_)

    def lone(side: str) -> tuple[bool, str]:
        added = med("lone caller", side, "added_ms")
        return added <= 0.1, f"+{added:.3f} ms"

    row("lone caller: added latency <= 0.1 ms", lone)

    def dropped(side: str) -> tuple[bool, str]:
        names = ("closed 1 row", "closed 4 rows", "open 50%", "open 90%")
        bad = sum(total(n, side, "wrong") + total(n, side, "failed") for n in names)
        return bad == 0, f"{bad} wrong or failed"

    row("no request dropped or wrong", dropped)
    return "\n".join(lines)


FAIRNESS = """
Fairness: both sides run the same callers, model and output checks
(benchmarks/runner_workload.py), each measure in a fresh process, sides alternating.
- model: sleep 1 ms + 10 us/row (GIL released) then x @ W; numpy in and out;
  max_batch_size=100; 64 concurrent callers; 1 s warm-up in the same process.
- every result is compared bit for bit with the model's output for that caller's input
  alone; wrong results and failed requests (BentoML's 503s) are counted above.
- BentoML 1.4's CorkDispatcher is wired as its server wires @bentoml.api(batchable=True):
  AutoContainer merges and splits, the model runs in a worker thread through anyio with
  one thread, max_latency_ms as given (default 60000, its own); callers: asyncio tasks.
  The issue's targets compare both our columns with this side.
- "BentoML, thread callers": the same dispatcher on an event loop in a thread of its
  own, driven by the same thread callers as ours (asyncio.run_coroutine_threadsafe, as
  code outside the loop reaches it): a reference for the thread column, not a target.
  Its callback is decorated once, not per request as its server does (in its favour).
- open loop: the same Poisson arrivals for both sides, at 50% and 90% of BentoML's
  closed-loop 1-row throughput in this run; latency from each planned arrival; asyncio:
  a task per arrival; threads: a pool of 256, so the pool never caps requests in flight.
- CPU per request: process CPU time (all threads, user + system) / completed requests."""


if __name__ == "__main__":
    main()
