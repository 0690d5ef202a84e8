"""Runners over real stored models: all three flavours, batching, version pinning."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import torch

import modelvault


class Doubler:
    """A picklable model with a batchable method."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x * 2

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x + 1


class Transposer(torch.nn.Module):
    """Input batch along dim 1, output batch along dim 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.t() * 3


def test_runner_pins_the_version_it_resolved() -> None:
    modelvault.picklable_model.save_model("pinned", Doubler())
    first = modelvault.models.get("pinned:latest")
    runner = modelvault.Runner("pinned:latest")
    modelvault.picklable_model.save_model("pinned", Doubler())  # a newer latest
    assert runner.tag == first.tag
    assert modelvault.models.get("pinned:latest").tag != first.tag
    runner.init_local()
    assert np.array_equal(runner.run(np.ones(3)), np.full(3, 2.0))


def test_picklable_batchable_signature_merges_concurrent_calls() -> None:
    model = modelvault.picklable_model.save_model(
        "doubler", Doubler(), signatures={"predict": {"batchable": True, "batch_dim": 0}}
    )
    runner = model.to_runner(max_batch_size=100, max_latency_ms=500)
    runner.init_local()
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        results[i] = runner.predict.run(np.full((2, 3), float(i)))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, out in results.items():
        assert np.array_equal(out, np.full((2, 3), 2.0 * i))
    stats = runner.predict.stats
    assert sum(stats.batch_sizes) == 48
    assert stats.calls == len(stats.batch_sizes) <= 24


def test_sklearn_runner_predicts_like_the_estimator() -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(x, y)
    modelvault.sklearn.save_model("iris_clf", clf, signatures={"predict": {"batchable": True}})
    runner = modelvault.sklearn.get("iris_clf:latest").to_runner()
    runner.init_local()
    assert (
        runner.predict.run([[5.9, 3, 5.1, 1.8]]).tolist()
        == clf.predict([[5.9, 3, 5.1, 1.8]]).tolist()
    )

    async def many() -> list[np.ndarray]:
        return await asyncio.gather(
            *(runner.predict.async_run(x[i : i + 5]) for i in range(0, 150, 5))
        )

    outs = asyncio.run(many())
    assert np.array_equal(np.concatenate(outs), clf.predict(x))


def test_pytorch_runner_with_tuple_batch_dim() -> None:

    modelvault.pytorch.save_model(
        "tp", Transposer(), signatures={"__call__": {"batchable": True, "batch_dim": (1, 0)}}
    )
    runner = modelvault.Runner("tp")
    runner.init_local()
    inputs = [torch.full((4, n), float(n)) for n in (1, 2, 3)]
    outs: list[torch.Tensor] = [torch.empty(0)] * 3

    def call(i: int) -> None:
        outs[i] = runner.run(inputs[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, inp in enumerate(inputs):
        assert torch.equal(outs[i], inp.t() * 3)
