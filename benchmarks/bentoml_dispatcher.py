"""BentoML's side of bench_runner.py: its CorkDispatcher under the shared callers and model.

Run by bench_runner.py with .venv-bentoml/bin/python (``make .venv-bentoml/.installed``;
BentoML is never installed into modelvault's own .venv), one measure per process::

    .venv-bentoml/bin/python benchmarks/bentoml_dispatcher.py '{"kind": "closed", "rows": 1,
        "seconds": 5}'

prints one JSON line. The dispatcher is wired as BentoML 1.4's new SDK wires a
``@bentoml.api(batchable=True)`` method (``_bentoml_impl/server/app.py``: ``batch_infer``):
``CorkDispatcher(max_latency_in_ms, max_batch_size, fallback=503, get_batch_size=
AutoContainer.get_batch_size, batch_dim)``, whose callback concatenates the requests with
``AutoContainer.batches_to_batch``, runs the sync model in a worker thread through
``anyio.to_thread.run_sync`` with a ``CapacityLimiter(1)`` (the service's ``threads=1``
default) and cuts the output with ``AutoContainer.batch_to_batches``. Callers are asyncio
tasks, as BentoML's HTTP handlers are; with ``"side": "bentoml-threads"`` they are threads
that hand each request to the dispatcher's loop (``main_threads``), a reference point for
our thread callers. One difference, in BentoML's favour: BentoML's server
re-decorates its callback on every request; here it is decorated once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher
from bentoml._internal.runner.container import AutoContainer
from bentoml.exceptions import ServiceUnavailable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runner_workload as wl

MAX_LATENCY_MS = 60000  # BentoML 1.4's default for @bentoml.api(batchable=True)


def make(spec: dict[str, Any]) -> tuple[Any, list[int], CorkDispatcher[Any, Any]]:
    """The dispatcher, its decorated callback and the rows of every batch it ran; made on
    the event loop that will run it."""
    batch_rows: list[int] = []
    limiter = anyio.CapacityLimiter(1)

    def fallback() -> Any:
        raise ServiceUnavailable("process is overloaded")

    dispatcher: CorkDispatcher[Any, Any] = CorkDispatcher(
        max_latency_in_ms=spec.get("max_latency_ms", MAX_LATENCY_MS),
        max_batch_size=wl.MAX_BATCH_SIZE,
        fallback=fallback,
        get_batch_size=functools.partial(AutoContainer.get_batch_size, batch_dim=0),
        batch_dim=(0, 0),
    )

    async def inner_infer(batches: Any) -> Any:
        if len(batches) == 0:
            return []
        batch, indices = AutoContainer.batches_to_batch(batches, 0)
        batch_rows.append(len(batch))
        result = await anyio.to_thread.run_sync(wl.model, batch, limiter=limiter)
        return AutoContainer.batch_to_batches(result, indices, 0)

    return dispatcher(inner_infer), batch_rows, dispatcher


def _finish(out: dict[str, Any], sizes: list[int], side: str) -> dict[str, Any]:
    out["mean_batch_rows"] = float(np.mean(sizes)) if sizes else 0.0
    out["side"] = side
    return out


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """BentoML's own callers: asyncio tasks on the dispatcher's loop."""
    acall, batch_rows, dispatcher = make(spec)
    if spec["kind"] != "lone":  # warm up: the dispatcher trains its optimizer first
        await wl.closed_async(acall, spec.get("warmup", 1.0), spec.get("rows", 1))
    first = len(batch_rows)
    out = await wl.measure_async(acall, spec)
    dispatcher.shutdown()
    return _finish(out, batch_rows[first:], "bentoml")


def main_threads(spec: dict[str, Any]) -> dict[str, Any]:
    """Thread callers (side "bentoml-threads"): each hands its request to the
    dispatcher's event loop, running in a thread of its own, and blocks on the result
    (``asyncio.run_coroutine_threadsafe``), as code outside the loop reaches an asyncio
    dispatcher. The same threads as ours measured with ``Batcher.submit``."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bentoml-loop", daemon=True)
    thread.start()

    async def made() -> tuple[Any, list[int], CorkDispatcher[Any, Any]]:
        return make(spec)

    acall, batch_rows, dispatcher = asyncio.run_coroutine_threadsafe(made(), loop).result()

    def call(x: np.ndarray) -> Any:
        return asyncio.run_coroutine_threadsafe(acall(x), loop).result()

    if spec["kind"] != "lone":
        warm = {"kind": "closed", "seconds": spec.get("warmup", 1.0), "rows": spec["rows"]}
        wl.measure_sync(call, warm)
    first = len(batch_rows)
    out = wl.measure_sync(call, spec)
    loop.call_soon_threadsafe(dispatcher.shutdown)
    # let the cancelled controller task finish on its loop before stopping it
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    return _finish(out, batch_rows[first:], "bentoml-threads")


if __name__ == "__main__":
    started = time.perf_counter()
    spec = json.loads(sys.argv[1])
    if spec.get("side") == "bentoml-threads":
        result = main_threads(spec)
    else:
        result = asyncio.run(main(spec))
    result["process_s"] = time.perf_counter() - started
    print(json.dumps(result))
