"""Benchmark of the adaptive batcher against calling the model once per request.

The model costs about 1 ms + 10 us per row (``time.sleep``, which releases the GIL as a
native or GPU model does, plus a small numpy product). Run::

    python benchmarks/bench_runner.py [--runs 5] [--requests 3000]

and read the markdown table; each figure is the median over ``--runs`` runs. Targets:
throughput with 64 concurrent callers >= 8x calling the model once per request; a lone
caller's added median latency < 0.5 ms; p99 under load within ``max_latency_ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from modelvault.runner.batching import Batcher

FEATURES = 8
WEIGHTS = np.random.default_rng(0).random((FEATURES, 3))
CALLERS = 64


def model(x: np.ndarray) -> np.ndarray:
    """About 1 ms + 10 us per row."""
    time.sleep(0.001 + 0.00001 * len(x))
    return np.asarray(x @ WEIGHTS)


def one_row(i: int) -> np.ndarray:
    return np.full((1, FEATURES), float(i % 7))


def closed_loop(call: Callable[[np.ndarray], Any], requests: int) -> tuple[float, list[float]]:
    """CALLERS threads share ``requests`` calls; returns (requests per second, latencies)."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_caller = requests // CALLERS

    def caller(seed: int) -> None:
        mine = []
        for i in range(per_caller):
            start = time.perf_counter()
            call(one_row(seed + i))
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    start = time.perf_counter()
    with ThreadPoolExecutor(CALLERS) as pool:
        list(pool.map(caller, range(CALLERS)))
    return per_caller * CALLERS / (time.perf_counter() - start), latencies


def async_closed_loop(batcher: Batcher, requests: int) -> float:
    """CALLERS asyncio tasks on one loop; returns requests per second."""
    per_caller = requests // CALLERS

    async def caller(seed: int) -> None:
        for i in range(per_caller):
            await batcher.submit_async(one_row(seed + i))

    async def main() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(caller(s) for s in range(CALLERS)))
        return per_caller * CALLERS / (time.perf_counter() - start)

    return asyncio.run(main())


def lone_latency(call: Callable[[np.ndarray], Any], n: int = 400) -> float:
    """Median seconds of ``n`` sequential calls by one caller."""
    times = []
    for i in range(n):
        start = time.perf_counter()
        call(one_row(i))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99))


def one_run(requests: int) -> dict[str, float]:
    serial = threading.Lock()

    def once_per_request(x: np.ndarray) -> np.ndarray:
        with serial:  # one model instance: calls run one at a time, one request each
            return model(x)

    baseline, _ = closed_loop(once_per_request, requests // 8)
    out: dict[str, float] = {"baseline_rps": baseline}
    with Batcher(model) as batcher:
        out["batched_rps"], latencies = closed_loop(batcher.submit, requests)
        out["p99_ms"] = p99(latencies) * 1e3
        out["mean_batch"] = float(np.mean(batcher.stats.batch_sizes))
        out["async_rps"] = async_closed_loop(batcher, requests)
    with Batcher(model, max_latency_ms=20) as tight:
        _, latencies = closed_loop(tight.submit, requests)
        out["p99_tight_ms"] = p99(latencies) * 1e3
    with Batcher(model) as lone:
        lone_latency(lone.submit, 50)  # warm up the policy
        out["lone_ms"] = lone_latency(lone.submit) * 1e3
    out["direct_ms"] = lone_latency(model) * 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3200)
    args = parser.parse_args()
    runs = [one_run(args.requests) for _ in range(args.runs)]

    def med(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    speedup = med("batched_rps") / med("baseline_rps")
    added = med("lone_ms") - med("direct_ms")
    print(f"model: 1 ms + 10 us/row; {CALLERS} callers; median of {args.runs} runs\n")
    print("| measure | value | target |")
    print("| --- | --- | --- |")
    print(f"| once per request, {CALLERS} threads | {med('baseline_rps'):.0f} req/s | |")
    print(f"| batched, {CALLERS} threads | {med('batched_rps'):.0f} req/s | |")
    print(f"| batched, {CALLERS} asyncio tasks | {med('async_rps'):.0f} req/s | |")
    print(f"| speed-up (threads) | {speedup:.1f}x | >= 8x |")
    print(f"| mean batch size under load | {med('mean_batch'):.1f} rows | |")
    print(f"| lone caller, direct call (median) | {med('direct_ms'):.3f} ms | |")
    print(f"| lone caller, through batcher (median) | {med('lone_ms'):.3f} ms | |")
    print(f"| lone caller, added latency | {added:.3f} ms | < 0.5 ms |")
    print(f"| p99 under load, max_latency_ms=10000 | {med('p99_ms'):.2f} ms | <= 10000 ms |")
    print(f"| p99 under load, max_latency_ms=20 | {med('p99_tight_ms'):.2f} ms | <= 20 ms |")


if __name__ == "__main__":
    main()
