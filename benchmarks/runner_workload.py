"""The callers, model and output checks shared by both sides of bench_runner.py.

Imports only numpy and the standard library, so that the same code drives modelvault's
batcher (in modelvault's .venv) and BentoML's CorkDispatcher (in .venv-bentoml, see
bentoml_dispatcher.py). A side is a callable: ``call(x) -> y`` for thread callers or
``async acall(x) -> y`` for asyncio callers; every measure returns a dict of plain numbers.

The model costs about 1 ms + 10 us per row: ``time.sleep`` (which releases the GIL, as a
native or GPU model does) and ``x @ WEIGHTS``. Inputs and weights are small integers held
in float64, so every product is exact and a caller's result can be compared bit for bit
with what the model returns for its input alone, whatever batch it ran in.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

FEATURES = 8
WEIGHTS = np.random.default_rng(0).integers(0, 10, (FEATURES, 3)).astype(np.float64)
CALLERS = 64
# Open loop with threads: a pool this large so that it never caps the requests in flight
# (asyncio's open loop starts one task per arrival, unbounded). At 90% load BentoML holds
# ~110 requests in flight (rate x its p50); a pool of CALLERS threads would turn the open
# loop into a closed one and time the pool, not the batcher.
OPEN_THREADS = 256
MAX_BATCH_SIZE = 100

Call = Callable[[np.ndarray], Any]
AsyncCall = Callable[[np.ndarray], Awaitable[Any]]


def model(x: np.ndarray) -> np.ndarray:
    """About 1 ms + 10 us per row."""
    time.sleep(0.001 + 0.00001 * len(x))
    return np.asarray(x @ WEIGHTS)


class Checked:
    """Per caller: its input (unique values) and the exact output the model gives for it."""

    def __init__(self, caller: int, rows: int) -> None:
        self.x = (np.arange(rows * FEATURES).reshape(rows, FEATURES) % 5 + caller).astype(
            np.float64
        )
        self.want = self.x @ WEIGHTS

    def ok(self, got: Any) -> bool:
        return isinstance(got, np.ndarray) and np.array_equal(got, self.want)


class Tally:
    """Latencies and failures of one measure, from any number of threads or tasks."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.wrong = 0  # a result that is not the model's output for that caller's input
        self.failed = 0  # an exception (BentoML: a request shed as 503)
        self.lock = threading.Lock()

    def result(self, elapsed: float, cpu: float, offered: int | None = None) -> dict[str, Any]:
        done = len(self.latencies)
        lat = np.asarray(self.latencies) * 1e3 if done else np.zeros(1)
        out = {
            "rps": done / elapsed,
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "done": done,
            "wrong": self.wrong,
            "failed": self.failed,
            "cpu_us_per_req": cpu / max(done, 1) * 1e6,
        }
        if offered is not None:
            out["offered"] = offered
        return out


def _record(tally: Tally, checked: Checked, got: Any, latency: float, mine: list[float]) -> None:
    if checked.ok(got):
        mine.append(latency)
    else:
        tally.wrong += 1


# --- closed loop: each caller resubmits as soon as it has its result


def closed_threads(call: Call, seconds: float, rows: int) -> dict[str, Any]:
    tally = Tally()
    stop = time.perf_counter() + seconds

    def caller(i: int) -> None:
        checked, mine = Checked(i, rows), []
        while time.perf_counter() < stop:
            start = time.perf_counter()
            try:
                got = call(checked.x)
            except Exception:
                with tally.lock:
                    tally.failed += 1
                continue
            _record(tally, checked, got, time.perf_counter() - start, mine)
        with tally.lock:
            tally.latencies.extend(mine)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
    cpu, start = time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally.result(time.perf_counter() - start, time.process_time() - cpu)


async def closed_async(acall: AsyncCall, seconds: float, rows: int) -> dict[str, Any]:
    tally = Tally()
    stop = time.perf_counter() + seconds

    async def caller(i: int) -> None:
        checked, mine = Checked(i, rows), []
        while time.perf_counter() < stop:
            start = time.perf_counter()
            try:
                got = await acall(checked.x)
            except Exception:
                tally.failed += 1
                continue
            _record(tally, checked, got, time.perf_counter() - start, mine)
        tally.latencies.extend(mine)

    cpu, start = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(CALLERS)))
    return tally.result(time.perf_counter() - start, time.process_time() - cpu)


# --- open loop: Poisson arrivals at a fixed rate; latency counted from the planned arrival


def arrivals(rate: float, seconds: float, seed: int = 1) -> np.ndarray:
    """Planned arrival times (seconds from the start) of a Poisson process."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, int(rate * seconds * 1.2) + 10)
    times = np.cumsum(gaps)
    return times[times < seconds]


def open_threads(call: Call, seconds: float, rows: int, rate: float) -> dict[str, Any]:
    """OPEN_THREADS threads take the planned arrivals in turn (a late one is still timed
    from its plan, so a busy pool would show as latency, not as a lower offered rate)."""
    tally = Tally()
    plan = arrivals(rate, seconds)
    counter = itertools.count()
    t0 = time.perf_counter() + 0.01

    def caller(i: int) -> None:
        checked, mine = Checked(i, rows), []
        while (n := next(counter)) < len(plan):
            due = t0 + plan[n]
            if (delay := due - time.perf_counter()) > 0:
                time.sleep(delay)
            try:
                got = call(checked.x)
            except Exception:
                with tally.lock:
                    tally.failed += 1
                continue
            _record(tally, checked, got, time.perf_counter() - due, mine)
        with tally.lock:
            tally.latencies.extend(mine)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(OPEN_THREADS)]
    cpu = time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally.result(time.perf_counter() - t0, time.process_time() - cpu, len(plan))


async def open_async(acall: AsyncCall, seconds: float, rows: int, rate: float) -> dict[str, Any]:
    """One task per planned arrival, started when due (the event loop wakes with about
    1 ms resolution, so arrivals come in small bursts: the same for both sides)."""
    tally = Tally()
    plan = arrivals(rate, seconds)
    inputs = [Checked(i, rows) for i in range(CALLERS)]
    t0 = time.perf_counter() + 0.01
    tasks = set()

    async def one(n: int, due: float) -> None:
        checked = inputs[n % CALLERS]
        try:
            got = await acall(checked.x)
        except Exception:
            tally.failed += 1
            return
        if checked.ok(got):
            tally.latencies.append(time.perf_counter() - due)
        else:
            tally.wrong += 1

    cpu = time.process_time()
    for n, at in enumerate(plan):
        due = t0 + at
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(one(n, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    return tally.result(time.perf_counter() - t0, time.process_time() - cpu, len(plan))


# --- a lone caller: added latency over calling the model directly


def _median_call(call: Call, x: np.ndarray, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _lone_result(direct: float, through: float) -> dict[str, Any]:
    added = through - direct
    return {"direct_ms": direct * 1e3, "lone_ms": through * 1e3, "added_ms": added * 1e3}


def lone_threads(call: Call, n: int = 300) -> dict[str, Any]:
    checked = Checked(0, 1)
    assert checked.ok(call(checked.x))
    _median_call(call, checked.x, 50)  # warm up
    direct = _median_call(model, checked.x, n)
    through = _median_call(call, checked.x, n)
    return {
        "direct_ms": direct * 1e3,
        "lone_ms": through * 1e3,
        "added_ms": (through - direct) * 1e3,
    }


async def lone_async(acall: AsyncCall, n: int = 300) -> dict[str, Any]:
    checked = Checked(0, 1)
    assert checked.ok(await acall(checked.x))
    times = []
    for i in range(n + 50):
        start = time.perf_counter()
        await acall(checked.x)
        if i >= 50:  # the first 50 warm up
            times.append(time.perf_counter() - start)
    direct = _median_call(model, checked.x, n)
    through = statistics.median(times)
    return {
        "direct_ms": direct * 1e3,
        "lone_ms": through * 1e3,
        "added_ms": (through - direct) * 1e3,
    }


def measure_sync(call: Call, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measure ``spec`` (kind, seconds, rows, rate) with thread callers."""
    kind, seconds, rows = spec["kind"], spec["seconds"], spec.get("rows", 1)
    if kind == "closed":
        return closed_threads(call, seconds, rows)
    if kind == "open":
        return open_threads(call, seconds, rows, spec["rate"])
    return lone_threads(call)


async def measure_async(acall: AsyncCall, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measure ``spec`` with asyncio callers on the running loop."""
    kind, seconds, rows = spec["kind"], spec["seconds"], spec.get("rows", 1)
    if kind == "closed":
        return await closed_async(acall, seconds, rows)
    if kind == "open":
        return await open_async(acall, seconds, rows, spec["rate"])
    return await lone_async(acall)
