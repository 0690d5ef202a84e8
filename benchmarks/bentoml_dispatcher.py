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
tasks, as BentoML's HTTP handlers are. One difference, in BentoML's favour: BentoML's server
re-decorates its callback on every request; here it is decorated once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
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


async def main(spec: dict[str, Any]) -> dict[str, Any]:
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

    acall = dispatcher(inner_infer)
    if spec["kind"] != "lone":  # warm up: the dispatcher trains its optimizer first
        await wl.closed_async(acall, spec.get("warmup", 1.0), spec.get("rows", 1))
    first = len(batch_rows)
    out = await wl.measure_async(acall, spec)
    sizes = batch_rows[first:]
    out["mean_batch_rows"] = float(np.mean(sizes)) if sizes else 0.0
    out["side"] = "bentoml"
    dispatcher.shutdown()
    return out


if __name__ == "__main__":
    started = time.perf_counter()
    result = asyncio.run(main(json.loads(sys.argv[1])))
    result["process_s"] = time.perf_counter() - started
    print(json.dumps(result))
