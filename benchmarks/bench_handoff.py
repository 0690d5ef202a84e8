"""The floor under thread callers: what a GIL hand-off between threads costs, and the
1-row throughput of a bare-minimum batcher whose 64 thread callers are woken in a chain.

Used for docs/runner.md ("What limits thread callers"); run alone on the machine::

    .venv/bin/python benchmarks/bench_handoff.py            # about 10 s

- ``pingpong``: two threads hand each other a lock (and so the GIL) N times; prints the
  wall time and CPU of one hand-off, then the same with both threads held on one CPU (a
  wake-up across CPUs costs more where an idle virtual CPU must be woken by its host);
- ``chain``: the same callers and model as bench_runner.py (``runner_workload.py``: 64
  thread callers resubmitting at once, 1 row, model 1 ms + 10 us a row), through a
  batcher reduced to what any thread batcher must do: queue under a lock, wake the worker
  at 64 calls, concatenate, call, slice, wake the first caller, each caller the next. No
  policy, no error handling: it only shows how much of a batch's cycle is the threads'
  own wake-ups. Compare its req/s with BentoML's and modelvault's in bench_runner.py.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from _thread import LockType, allocate_lock
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runner_workload as wl


def pingpong(n: int = 20000, one_cpu: bool = False) -> str:
    if one_cpu:  # this thread and the one it starts (which inherits it) share one CPU
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(before)})
        try:
            return pingpong(n).replace("pingpong:", "pingpong, both threads on one CPU:")
        finally:
            os.sched_setaffinity(0, before)
    mine, theirs = allocate_lock(), allocate_lock()
    mine.acquire()
    theirs.acquire()

    def other() -> None:
        for _ in range(n):
            theirs.acquire()
            mine.release()

    thread = threading.Thread(target=other)
    thread.start()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        theirs.release()
        mine.acquire()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    thread.join()
    each = 1e6 / n / 2
    return f"pingpong: one hand-off {wall * each:.2f} us wall, {cpu * each:.2f} us CPU"


class _Chain:
    """A bare-minimum batcher for thread callers; a job is [payload, lock, result, next]."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: list[list[Any]] = []
        self.full = allocate_lock()
        self.full.acquire()
        self.stop = False

    def submit(self, x: np.ndarray) -> Any:
        mine: LockType = allocate_lock()
        mine.acquire()
        job: list[Any] = [x, mine, None, None]
        with self.lock:
            self.queue.append(job)
            if len(self.queue) == wl.CALLERS and self.full.locked():
                self.full.release()
        mine.acquire()
        if job[3] is not None:
            job[3].release()
        return job[2]

    def work(self) -> None:
        while not self.stop:
            self.full.acquire(timeout=0.005)  # or run whatever is queued every 5 ms
            with self.lock:
                batch, self.queue = self.queue, []
            if not batch:
                continue
            out = wl.model(np.concatenate([job[0] for job in batch]))
            for i, job in enumerate(batch):
                job[2] = out[i : i + 1]
            for job, after in pairwise(batch):
                job[3] = after[1]
            batch[0][1].release()


def chain(seconds: float) -> str:
    batcher = _Chain()
    worker = threading.Thread(target=batcher.work, daemon=True)
    worker.start()
    wl.closed_threads(batcher.submit, 0.5, 1)  # warm up
    out = wl.closed_threads(batcher.submit, seconds, 1)
    batcher.stop = True
    worker.join()
    return (
        f"minimal chain, 64 threads, 1 row: {out['rps']:.0f} req/s, p50 {out['p50_ms']:.2f} "
        f"p99 {out['p99_ms']:.2f} ms, CPU {out['cpu_us_per_req']:.1f} us/req, "
        f"wrong {out['wrong']}"
    )


if __name__ == "__main__":
    print(pingpong())
    print(pingpong(one_cpu=True))
    print(chain(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0))
