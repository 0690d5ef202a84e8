"""Runner on a small in-test flavour module: signatures, init, batching, locking, pinning.

The flavour modules here (``_mv_test_flavour*``) are registered in ``sys.modules`` and
follow the flavour contract: ``load_model(model) -> object`` and ``THREAD_SAFE``. The real
store and flavours are exercised by the integration tests.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelvault
from modelvault.errors import InvalidInput
from modelvault.runner import (
    BatcherClosed,
    Runner,
    RunnerError,
    RunnerNotInitialized,
)
from modelvault.tags import Tag

WAIT = 10.0


class Toy:
    """The loaded model object: records calls and how many run at once."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[np.ndarray] = []
        self.active = 0
        self.most_active = 0
        self._count_lock = threading.Lock()

    def _enter(self) -> None:
        with self._count_lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        self.entered.set()

    def _leave(self) -> None:
        with self._count_lock:
            self.active -= 1

    def predict(self, x: np.ndarray) -> np.ndarray:
        self._enter()
        try:
            self.batches.append(x)
            assert self.gate.wait(WAIT)
            return np.asarray(x.sum(axis=1))
        finally:
            self._leave()

    def __call__(self, x: np.ndarray) -> np.ndarray:  # batch_dim (1, 0): (features, n) -> (n,)
        return np.asarray(x.T.sum(axis=1))

    def describe(self, prefix: str, *, pause: float = 0.0) -> str:
        self._enter()
        try:
            time.sleep(pause)
            return f"{prefix}:{self.version}"
        finally:
            self._leave()


SIGNATURES: dict[str, dict[str, Any]] = {
    "predict": {"batchable": True, "batch_dim": 0},
    "__call__": {"batchable": True, "batch_dim": [1, 0]},  # as read back from JSON
    "describe": {"batchable": False},
}


@dataclass
class FakeInfo:
    module: str
    signatures: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(SIGNATURES))


@dataclass
class FakeModel:
    tag: Tag
    info: FakeInfo


def make_flavour(name: str, thread_safe: bool) -> types.ModuleType:
    flavour = types.ModuleType(name)
    flavour.THREAD_SAFE = thread_safe  # type: ignore[attr-defined]
    flavour.loaded = []  # type: ignore[attr-defined]

    def load_model(model: FakeModel) -> Toy:
        toy = Toy(str(model.tag.version))
        flavour.loaded.append(toy)
        return toy

    flavour.load_model = load_model  # type: ignore[attr-defined]
    return flavour


@pytest.fixture
def flavour(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = make_flavour("_mv_test_flavour", thread_safe=False)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


@pytest.fixture
def runner(flavour: types.ModuleType) -> Iterator[Runner]:
    made = Runner(FakeModel(Tag("toy", "v1"), FakeInfo(flavour.__name__)))
    yield made
    made.close()


def loaded(flavour: types.ModuleType) -> Toy:
    toys: list[Toy] = flavour.loaded
    assert len(toys) == 1
    return toys[0]


def test_signatures_are_attributes_and_calls_need_init_local(
    runner: Runner, flavour: types.ModuleType
) -> None:
    assert runner.name == "toy"
    assert set(runner.methods) == {"predict", "__call__", "describe"}
    assert runner.predict.batchable and not runner.describe.batchable
    with pytest.raises(RunnerNotInitialized, match="init_local"):
        runner.predict.run(np.ones((1, 2)))
    assert flavour.loaded == []  # nothing loaded until asked
    runner.init_local()
    runner.init_local()  # idempotent
    assert runner.initialized
    np.testing.assert_array_equal(runner.predict.run(np.ones((2, 3))), [3.0, 3.0])
    assert runner.describe.run("hi") == "hi:v1"
    assert len(flavour.loaded) == 1


def test_run_calls_the_call_signature_with_its_tuple_batch_dim(runner: Runner) -> None:
    runner.init_local()
    x = np.arange(6.0).reshape(2, 3)  # 2 features, 3 rows on dim 1
    np.testing.assert_array_equal(runner.run(x), x.T.sum(axis=1))
    assert asyncio.run(runner.async_run(x)).shape == (3,)
    assert runner.methods["__call__"].stats.batch_sizes == [3, 3]


def test_unknown_signature_names_the_known_ones(runner: Runner) -> None:
    with pytest.raises(AttributeError, match="predict"):
        runner.transform  # noqa: B018


def test_batchable_signature_takes_exactly_one_positional_argument(runner: Runner) -> None:
    runner.init_local()
    with pytest.raises(TypeError, match="exactly one positional"):
        runner.predict.run(np.ones((1, 2)), np.ones((1, 2)))
    with pytest.raises(TypeError, match="exactly one positional"):
        runner.predict.run(x=np.ones((1, 2)))


def test_concurrent_threads_are_merged_into_one_model_call(
    runner: Runner, flavour: types.ModuleType
) -> None:
    runner.init_local()
    toy = loaded(flavour)
    toy.gate.clear()
    payloads = [np.full((i + 1, 2), float(i)) for i in range(10)]
    with ThreadPoolExecutor(11) as pool:
        head = pool.submit(runner.predict.run, np.zeros((1, 2)))
        assert toy.entered.wait(WAIT)
        futures = [pool.submit(runner.predict.run, p) for p in payloads]
        deadline = time.monotonic() + WAIT
        while runner.predict.pending < len(payloads) and time.monotonic() < deadline:
            time.sleep(0.001)
        toy.gate.set()
        results = [f.result(WAIT) for f in futures]
        head.result(WAIT)
    for payload, result in zip(payloads, results, strict=True):
        np.testing.assert_array_equal(result, payload.sum(axis=1))
    stats = runner.predict.stats
    assert stats.calls == 2
    assert stats.batch_sizes == [1, 55]


async def test_async_run_of_both_kinds_leaves_the_loop_free(
    runner: Runner, flavour: types.ModuleType
) -> None:
    runner.init_local()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    tick_task = asyncio.create_task(ticker())
    described = await runner.describe.async_run("x", pause=0.05)
    predicted = await asyncio.gather(*(runner.predict.async_run(np.ones((1, 2))) for _ in range(8)))
    tick_task.cancel()
    assert described == "x:v1"
    assert all(p.tolist() == [2.0] for p in predicted)
    assert ticks >= 5  # the loop ran while describe slept in a worker thread
    assert sum(runner.predict.stats.batch_sizes) == 8


def test_model_calls_are_serialised_unless_the_flavour_is_thread_safe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for thread_safe in (False, True):
        module = make_flavour(f"_mv_test_flavour_ts_{thread_safe}", thread_safe)
        monkeypatch.setitem(sys.modules, module.__name__, module)
        runner = Runner(FakeModel(Tag("toy", "v1"), FakeInfo(module.__name__)))
        runner.init_local()
        with ThreadPoolExecutor(8) as pool:
            slow = [pool.submit(runner.describe.run, "p", pause=0.05) for _ in range(4)]
            fast = [pool.submit(runner.predict.run, np.ones((1, 2))) for _ in range(4)]
            for future in [*slow, *fast]:
                future.result(WAIT)
        most_active = loaded(module).most_active
        assert most_active >= 2 if thread_safe else most_active == 1
        assert runner.describe.stats.calls == 4
        runner.close()


def test_a_runner_pins_the_version_resolved_at_creation(
    flavour: types.ModuleType, tmp_path: Path
) -> None:
    """``modelvault.Runner("toy:latest")`` resolves the tag in the default store once: a
    newer version saved before ``init_local`` does not change what it serves."""
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "weights").write_bytes(b"w")
    for version in ("v1", "v2"):
        if version == "v2":
            runner = modelvault.Runner("toy:latest")  # the façade resolves tags
            assert str(runner.tag) == "toy:v1"
        modelvault.models.save(
            folder, f"toy:{version}", module=flavour.__name__, signatures=SIGNATURES
        )
    assert str(modelvault.models.get("toy:latest").tag) == "toy:v2"
    runner.init_local()  # a newer "latest" exists by now: the runner keeps v1
    assert runner.describe.run("d") == "d:v1"
    runner.close()


def test_model_that_cannot_be_served_raises_runner_error(flavour: types.ModuleType) -> None:
    with pytest.raises(RunnerError, match="without a flavour module"):
        Runner(FakeModel(Tag("toy", "v1"), FakeInfo(""))).init_local()
    bad = FakeInfo(flavour.__name__, {"transform": {"batchable": True}})
    with pytest.raises(RunnerError, match="no such method"):
        Runner(FakeModel(Tag("toy", "v1"), bad)).init_local()


def test_bad_options_fail_at_creation(flavour: types.ModuleType) -> None:
    with pytest.raises(InvalidInput):
        Runner(FakeModel(Tag("toy", "v1"), FakeInfo(flavour.__name__)), max_batch_size=0)


def test_close_refuses_later_calls(runner: Runner) -> None:
    runner.init_local()
    runner.close()
    with pytest.raises(BatcherClosed):
        runner.predict.run(np.ones((1, 2)))


def test_the_mechanism_runner_takes_a_model_and_points_to_the_facade_for_tags(
    flavour: types.ModuleType,
) -> None:
    """``modelvault.runner.Runner`` takes a Model (issue 17: the runner takes a Model, not
    a tag lookup); ``modelvault.Runner`` is the one that resolves tags, and is a Runner."""
    with pytest.raises(InvalidInput, match=r"modelvault\.Runner\(tag\)"):
        Runner("toy:v1")  # type: ignore[arg-type]
    assert issubclass(modelvault.Runner, Runner)
    made = modelvault.Runner(FakeModel(Tag("toy", "v1"), FakeInfo(flavour.__name__)))
    assert isinstance(made, Runner) and str(made.tag) == "toy:v1"
    made.close()
