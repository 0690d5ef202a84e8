"""Batcher: merging, slicing, isolation, limits and the adaptive hold, on real threads/asyncio.

Merging is made deterministic with a gate: the first call holds ``fn`` until the test has
queued every other call (``Batcher.pending``), so the next batch holds all of them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import namedtuple
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from modelvault.errors import BatcherClosed, BatchingError, InvalidInput, ModelVaultError
from modelvault.runner.batching import AdaptivePolicy, Batcher, join_outputs, split_output

WAIT = 10.0  # seconds a wait_until may take before the test fails


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


class Gated:
    """Wraps fn: the first call blocks until ``release()``; counts calls in flight."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.seen: list[Any] = []

    def __call__(self, batch: Any) -> Any:
        self.seen.append(batch)
        if len(self.seen) == 1:
            self.entered.set()
            assert self.gate.wait(WAIT), "gate never released"
        return self.fn(batch)

    def release(self) -> None:
        self.gate.set()


@pytest.fixture
def make_batcher() -> Iterator[Callable[..., Batcher]]:
    made: list[Batcher] = []

    def make(fn: Callable[[Any], Any], **options: Any) -> Batcher:
        batcher = Batcher(fn, **options)
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.close(timeout=WAIT)


def run_gated(
    batcher: Batcher, gated: Gated, first: Any, payloads: list[Any]
) -> tuple[Any, list[Any]]:
    """Call ``first`` (it holds fn), queue ``payloads`` from threads, then open the gate.

    Returns the first result and, per payload, its result or the exception it raised.
    """

    def call(payload: Any) -> Any:
        try:
            return batcher.submit(payload)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(payloads) + 1) as pool:
        head = pool.submit(call, first)
        assert gated.entered.wait(WAIT)
        futures = [pool.submit(call, p) for p in payloads]
        wait_until(lambda: batcher.pending == len(payloads), "every call to be queued")
        gated.release()
        return head.result(), [f.result() for f in futures]


# --- payloads and slicing


def test_lone_numpy_call_returns_fn_output(make_batcher: Callable[..., Batcher]) -> None:
    batcher = make_batcher(lambda x: x * 2)
    np.testing.assert_array_equal(batcher.submit(np.arange(3)), [0, 2, 4])
    assert batcher.stats.calls == 1
    assert batcher.stats.batch_sizes == [3]


def test_threads_merge_numpy_rows_and_get_their_own_slice(
    make_batcher: Callable[..., Batcher],
) -> None:
    gated = Gated(lambda x: x * 10)
    batcher = make_batcher(gated)
    payloads = [np.full((i + 1, 2), i, dtype=np.int64) for i in range(8)]
    _, results = run_gated(batcher, gated, np.zeros((1, 2), np.int64), payloads)
    for payload, result in zip(payloads, results, strict=True):
        np.testing.assert_array_equal(result, payload * 10)
    stats = batcher.stats
    assert stats.calls == 2
    assert stats.batch_sizes == [1, sum(range(1, 9))]


def test_tuple_batch_dim_cuts_input_dim_1_and_output_dim_0(
    make_batcher: Callable[..., Batcher],
) -> None:
    # Inputs are (features=3, n); fn returns (n, 2): rows on dim 1 in, dim 0 out.
    weights = np.arange(6.0).reshape(3, 2)
    gated = Gated(lambda x: x.T @ weights)
    batcher = make_batcher(gated, batch_dim=(1, 0))
    payloads = [np.random.default_rng(i).random((3, i + 1)) for i in range(5)]
    _, results = run_gated(batcher, gated, np.ones((3, 1)), payloads)
    for payload, result in zip(payloads, results, strict=True):
        assert result.shape == (payload.shape[1], 2)
        np.testing.assert_allclose(result, payload.T @ weights)
    assert batcher.stats.batch_sizes == [1, 15]
    assert len(gated.seen[1].shape) == 2 and gated.seen[1].shape == (3, 15)


def test_int_batch_dim_1_cuts_input_and_output_on_dim_1(
    make_batcher: Callable[..., Batcher],
) -> None:
    gated = Gated(lambda x: x[:2] + 1)  # (4, n) -> (2, n)
    batcher = make_batcher(gated, batch_dim=1)
    payloads = [np.full((4, i + 2), float(i)) for i in range(4)]
    _, results = run_gated(batcher, gated, np.zeros((4, 1)), payloads)
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, np.full((2, i + 2), i + 1.0))


def test_list_payloads_merge_on_dim_0(make_batcher: Callable[..., Batcher]) -> None:
    gated = Gated(lambda rows: [sum(r) for r in rows])
    batcher = make_batcher(gated)
    payloads = [[[i, i]] * (i + 1) for i in range(6)]
    _, results = run_gated(batcher, gated, [[0, 0]], payloads)
    assert results == [[2 * i] * (i + 1) for i in range(6)]
    assert gated.seen[1] == [row for p in payloads for row in p]


def test_tuple_dict_and_namedtuple_outputs_split_per_element(
    make_batcher: Callable[..., Batcher],
) -> None:
    Out = namedtuple("Out", "double labels")

    def fn(x: np.ndarray) -> Any:
        return {"pair": (x * 2, [f"r{v}" for v in x[:, 0]]), "named": Out(x * 2, list(x[:, 0]))}

    gated = Gated(fn)
    batcher = make_batcher(gated)
    payloads = [np.array([[i, i]] * 2) for i in range(1, 4)]
    _, results = run_gated(batcher, gated, np.zeros((1, 2), np.int64), payloads)
    for i, result in zip(range(1, 4), results, strict=True):
        double, labels = result["pair"]
        np.testing.assert_array_equal(double, np.array([[i, i]] * 2) * 2)
        assert labels == [f"r{i}", f"r{i}"]
        assert isinstance(result["named"], Out) and result["named"].labels == [i, i]


def test_split_output_treats_a_short_list_as_several_outputs() -> None:
    out = [np.arange(5), np.arange(5) * 2]  # two outputs, five rows
    parts = split_output(out, 0, [2, 3])
    np.testing.assert_array_equal(parts[1][1], [4, 6, 8])
    joined = join_outputs(parts, 0, [2, 3])
    np.testing.assert_array_equal(joined[1], out[1])


def test_output_with_wrong_rows_fails_the_batch_with_batching_error(
    make_batcher: Callable[..., Batcher],
) -> None:
    gated = Gated(lambda x: x[:1])  # drops rows: cannot be split
    batcher = make_batcher(gated)
    _, results = run_gated(batcher, gated, np.zeros(1), [np.zeros(2), np.zeros(3)])
    for result in results:
        assert isinstance(result, BatchingError)
        assert "1 rows along dim 0 for a batch of 5 rows" in str(result)


def test_torch_tensors_merge_on_dim_1() -> None:
    torch = pytest.importorskip("torch")
    gated = Gated(lambda x: x * 3)
    with Batcher(gated, batch_dim=1) as batcher:
        payloads = [torch.full((2, i + 1), float(i)) for i in range(4)]
        _, results = run_gated(batcher, gated, torch.zeros(2, 1), payloads)
        for payload, result in zip(payloads, results, strict=True):
            assert torch.equal(result, payload * 3)
        assert batcher.stats.batch_sizes == [1, 10]
        # A different dtype is not merged: it runs apart and still gets its own result.
        doubles = batcher.submit(torch.ones(2, 2, dtype=torch.float64))
        assert doubles.dtype == torch.float64


# --- asyncio callers


async def test_asyncio_callers_merge_without_blocking_the_loop() -> None:
    gated = Gated(lambda x: x + 1)
    with Batcher(gated) as batcher:
        loop = asyncio.get_running_loop()
        first = loop.run_in_executor(None, batcher.submit, np.zeros(1))
        await loop.run_in_executor(None, gated.entered.wait, WAIT)
        tasks = [asyncio.create_task(batcher.submit_async(np.full(2, i))) for i in range(16)]
        ticks = 0
        while batcher.pending < 16:  # the loop keeps running while callers wait
            ticks += 1
            await asyncio.sleep(0.001)
        gated.release()
        results = await asyncio.gather(*tasks)
        await first
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, [i + 1, i + 1])
    assert batcher.stats.batch_sizes == [1, 32]


async def test_a_cancelled_async_caller_is_dropped_from_its_batch() -> None:
    gated = Gated(lambda x: x)
    with Batcher(gated) as batcher:
        loop = asyncio.get_running_loop()
        first = loop.run_in_executor(None, batcher.submit, np.zeros(1))
        await loop.run_in_executor(None, gated.entered.wait, WAIT)
        doomed = asyncio.create_task(batcher.submit_async(np.zeros(5)))
        kept = asyncio.create_task(batcher.submit_async(np.zeros(2)))
        while batcher.pending < 2:
            await asyncio.sleep(0.001)
        doomed.cancel()
        await asyncio.wait([doomed])  # the cancel reaches the queued call on this loop turn
        gated.release()
        assert (await kept).shape == (2,)
        await first
        with pytest.raises(asyncio.CancelledError):
            await doomed
    assert batcher.stats.batch_sizes == [1, 2]


# --- limits


def test_max_batch_size_is_never_exceeded(make_batcher: Callable[..., Batcher]) -> None:
    gated = Gated(lambda x: x * 2)
    batcher = make_batcher(gated, max_batch_size=10)
    payloads = [np.full(3, i) for i in range(9)]
    _, results = run_gated(batcher, gated, np.zeros(1), payloads)
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, [2 * i] * 3)
    sizes = batcher.stats.batch_sizes
    assert max(sizes) <= 10
    assert sum(sizes) == 1 + 27
    assert sizes[1:] == [9, 9, 9]


def test_oversize_request_is_split_and_reassembled(make_batcher: Callable[..., Batcher]) -> None:
    batcher = make_batcher(lambda x: (x * 2, {"n": x[:, :1]}), max_batch_size=10)
    x = np.arange(50).reshape(25, 2)
    double, extra = batcher.submit(x)
    np.testing.assert_array_equal(double, x * 2)
    np.testing.assert_array_equal(extra["n"], x[:, :1])
    assert batcher.stats.batch_sizes == [10, 10, 5]


def test_oversize_list_request_on_asyncio(make_batcher: Callable[..., Batcher]) -> None:
    batcher = make_batcher(lambda rows: [r * 2 for r in rows], max_batch_size=4)
    assert asyncio.run(batcher.submit_async(list(range(10)))) == [r * 2 for r in range(10)]
    assert batcher.stats.batch_sizes == [4, 4, 2]


@pytest.mark.parametrize(
    "options",
    [{"max_batch_size": 0}, {"max_latency_ms": -1}, {"batch_dim": (0, 1, 2)}, {"batch_dim": "0"}],
)
def test_bad_options_raise_invalid_input(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        Batcher(lambda x: x, **options)


# --- isolation


def test_a_bad_shape_fails_alone_with_the_shapes_named(
    make_batcher: Callable[..., Batcher],
) -> None:
    weights = np.ones((4, 2))
    gated = Gated(lambda x: x @ weights)
    batcher = make_batcher(gated)
    good = [np.ones((i + 1, 4)) for i in range(3)]
    _, results = run_gated(batcher, gated, np.ones((1, 4)), [*good[:2], np.ones((2, 3)), good[2]])
    bad = results.pop(2)
    for payload, result in zip(good, results, strict=True):
        np.testing.assert_array_equal(result, payload @ weights)
    assert isinstance(bad, ValueError)  # numpy's own error for the lone bad input
    notes = "\n".join(getattr(bad, "__notes__", []))
    assert "numpy float64 of shape (*, 3)" in notes and "(*, 4)" in notes
    assert batcher.stats.batch_sizes == [1, 6, 2]


def test_dtypes_and_array_kinds_merge_only_with_their_own_kind(
    make_batcher: Callable[..., Batcher],
) -> None:
    # Plain arrays take the inlined measuring in submit, a subclass takes cut(): the keys
    # must still agree (a subclass merges with plain arrays), and float32 never merges with
    # float64.
    gated = Gated(lambda x: x * 2)
    batcher = make_batcher(gated)

    class Tagged(np.ndarray):
        pass

    wide = np.full((2, 3), 1.0)
    narrow = np.full((1, 3), 2.0, dtype=np.float32)
    sub = np.full((3, 3), 3.0).view(Tagged)
    _, results = run_gated(batcher, gated, np.ones((1, 3)), [wide, narrow, sub])
    for payload, result in zip([wide, narrow, sub], results, strict=True):
        assert result.dtype == payload.dtype
        np.testing.assert_array_equal(result, payload * 2)
    assert batcher.stats.batch_sizes == [1, 5, 1]
    assert [batch.dtype for batch in gated.seen] == [np.float64, np.float64, np.float32]


def test_unbatchable_payloads_fail_at_submit_and_others_still_run(
    make_batcher: Callable[..., Batcher],
) -> None:
    batcher = make_batcher(lambda x: x, batch_dim=1)
    with pytest.raises(BatchingError, match=r"shape \(3,\) along dim 1"):
        batcher.submit(np.zeros(3))
    with pytest.raises(BatchingError, match="type dict"):
        batcher.submit({"x": 1})
    with pytest.raises(BatchingError, match="dim 0 only"):
        batcher.submit([1, 2])
    assert batcher.submit(np.zeros((2, 2))).shape == (2, 2)
    assert isinstance(BatchingError("x"), ModelVaultError)


def test_an_exception_in_fn_fails_only_its_batch_and_serving_goes_on(
    make_batcher: Callable[..., Batcher],
) -> None:
    def fn(x: np.ndarray) -> np.ndarray:
        if (x < 0).any():
            raise ArithmeticError("negative input")
        return x + 1

    gated = Gated(fn)
    batcher = make_batcher(gated)
    first, results = run_gated(batcher, gated, np.array([-1.0]), [np.ones(2), np.ones(3)])
    assert isinstance(first, ArithmeticError)  # the first batch held only the bad call
    for result, n in zip(results, [2, 3], strict=True):
        np.testing.assert_array_equal(result, np.full(n, 2.0))
    np.testing.assert_array_equal(batcher.submit(np.zeros(1)), [1.0])
    assert batcher.stats.calls == 3


def test_calling_submit_from_inside_fn_raises_instead_of_deadlocking(
    make_batcher: Callable[..., Batcher],
) -> None:
    box: list[Batcher] = []
    batcher = make_batcher(lambda x: box[0].submit(x))
    box.append(batcher)
    with pytest.raises(RuntimeError, match="inside its own fn"):
        batcher.submit(np.zeros(1))


# --- concurrency at large


def test_many_threads_each_get_exactly_their_result(make_batcher: Callable[..., Batcher]) -> None:
    def fn(x: np.ndarray) -> np.ndarray:
        time.sleep(0.002)
        return x * 2 + 1

    batcher = make_batcher(fn, max_batch_size=64)

    def caller(seed: int) -> int:
        rng = np.random.default_rng(seed)
        rows = 0
        for _ in range(15):
            x = rng.integers(0, 1000, size=(int(rng.integers(1, 5)), 3))
            np.testing.assert_array_equal(batcher.submit(x), x * 2 + 1)
            rows += len(x)
        return rows

    with ThreadPoolExecutor(32) as pool:
        total = sum(pool.map(caller, range(32)))
    stats = batcher.stats
    assert sum(stats.batch_sizes) == total
    assert stats.calls < 32 * 15 / 2  # merging happened
    assert max(stats.batch_sizes) <= 64


# --- lifecycle


def test_close_fails_queued_calls_and_stops_the_worker() -> None:
    gated = Gated(lambda x: x)
    batcher = Batcher(gated)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(batcher.submit, np.zeros(1))
        assert gated.entered.wait(WAIT)
        queued = pool.submit(batcher.submit, np.zeros(2))
        wait_until(lambda: batcher.pending == 1, "the second call to queue")
        closer = threading.Thread(target=batcher.close)
        closer.start()
        with pytest.raises(BatcherClosed):
            queued.result(WAIT)
        gated.release()
        assert running.result(WAIT).shape == (1,)  # the running batch still completes
        closer.join(WAIT)
    worker = batcher._worker
    assert worker is not None and not worker.is_alive()
    with pytest.raises(BatcherClosed):
        batcher.submit(np.zeros(1))


# --- the adaptive hold


def test_policy_fits_cost_line_and_skips_the_first_call() -> None:
    policy = AdaptivePolicy(max_batch_size=100, max_latency_s=10.0)
    policy.record_call(1, 5.0)  # warm-up: ignored
    for rows in (1, 10, 50, 100, 3):
        policy.record_call(rows, 0.001 + 0.00001 * rows)
    assert policy.a == pytest.approx(0.001)
    assert policy.b == pytest.approx(0.00001)


def test_policy_never_holds_a_lone_caller() -> None:
    policy = AdaptivePolicy(max_batch_size=100, max_latency_s=10.0)
    for rows in (1, 1, 2, 2):
        policy.record_call(rows, 0.001 * rows)
    now = time.monotonic()
    for _ in range(20):
        policy.record_batch_done(served=1, queued=0)  # its only company is itself
        assert policy.hold_until(1, 1, since=now, returning=0, last_event=now) == 0.0


def test_policy_holds_a_crowd_at_most_the_fixed_cost_within_max_latency() -> None:
    policy = AdaptivePolicy(max_batch_size=100, max_latency_s=10.0)
    for rows in (1, 10, 50, 100):
        policy.record_call(rows, 0.002 + 0.00001 * rows)
    policy.record_batch_done(served=64, queued=0)
    t = 100.0
    # Callers of the last batch still waking up: hold up to the fixed cost of a call.
    assert policy.hold_until(5, 5, since=t, returning=59, last_event=t) == pytest.approx(t + 0.002)
    # All awake: hold only while arrivals keep coming in a burst.
    gap = AdaptivePolicy.BURST_GAP_S
    assert policy.hold_until(5, 5, since=t, returning=0, last_event=t) == pytest.approx(t + gap)
    # Everyone expected is here, or a full batch: no hold.
    assert policy.hold_until(64, 64, since=t, returning=0, last_event=t) == 0.0
    assert policy.hold_until(30, 100, since=t, returning=34, last_event=t) == 0.0
    # room left by max_latency for a full batch: 3.5 ms - (2 ms + 100 * 10 us) = 0.5 ms
    tight = AdaptivePolicy(max_batch_size=100, max_latency_s=0.0035)
    tight.a, tight.b, tight.expected = 0.002, 0.00001, 64
    assert tight.hold_until(1, 1, since=t, returning=63, last_event=t) == pytest.approx(t + 0.0005)
    tight.max_latency_s = 0.001
    assert tight.hold_until(1, 1, since=t, returning=63, last_event=t) == 0.0


def test_policy_learns_the_pace_of_returning_callers() -> None:
    policy = AdaptivePolicy(max_batch_size=100, max_latency_s=10.0)
    assert policy.pace == 0.0
    policy.record_returned(1, 0.5)  # a lone caller says nothing of a crowd's pace
    assert policy.pace == 0.0
    policy.record_returned(64, 64 * 20e-6)  # the first sample is taken as it is
    assert policy.pace == pytest.approx(20e-6)
    for _ in range(40):  # then an average that follows the newest batches
        policy.record_returned(64, 64 * 5e-6)
    assert policy.pace == pytest.approx(5e-6, rel=0.01)


def test_policy_lets_batches_take_turns_when_callers_come_back_slowly() -> None:
    policy = AdaptivePolicy(max_batch_size=100, max_latency_s=10.0)
    policy.a, policy.b, policy.expected = 0.001, 0.00001, 64
    t = 100.0
    # 64 callers back 5 us apart: all are back in 0.32 ms, less than the 1 ms a second
    # call would cost: hold for them, one batch of everybody.
    policy.record_returned(64, 64 * 5e-6)
    assert policy.waits_for_returners()
    until = policy.hold_until(32, 32, since=t, returning=32, last_event=t)
    assert until == pytest.approx(t + 0.001)
    # 25 us apart: 1.6 ms to bring everybody back costs more than a call's fixed cost;
    # what is queued runs now and the returning callers make the next batch meanwhile.
    slow = AdaptivePolicy(max_batch_size=100, max_latency_s=10.0)
    slow.a, slow.b, slow.expected = 0.001, 0.00001, 64
    slow.record_returned(64, 64 * 25e-6)
    assert not slow.waits_for_returners()
    assert slow.hold_until(32, 32, since=t, returning=32, last_event=t) == 0.0
    # Once nobody is returning, a burst of new arrivals is still waited for as before.
    gap = AdaptivePolicy.BURST_GAP_S
    assert slow.hold_until(5, 5, since=t, returning=0, last_event=t) == pytest.approx(t + gap)
    # A lone caller never waits, whatever the pace.
    slow.expected = 1
    assert slow.hold_until(1, 1, since=t, returning=0, last_event=t) == 0.0


def test_batcher_measures_how_fast_its_callers_come_back(
    make_batcher: Callable[..., Batcher],
) -> None:
    def slow(x: np.ndarray) -> np.ndarray:
        time.sleep(0.05)  # a fixed cost no thread's wake-up comes near, even on loaded CI
        return x * 2

    batcher = make_batcher(slow)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: [batcher.submit(np.ones(1)) for _ in range(5)], range(8)))
    # Thread callers woken one after another: microseconds each, far under the 50 ms a
    # call costs, so the batcher keeps waiting for them (one batch of everybody).
    assert 0.0 < batcher.policy.pace < 0.05 / 8
    assert batcher.policy.waits_for_returners()


def test_policy_stops_holding_once_company_stops_coming() -> None:
    policy = AdaptivePolicy(max_batch_size=100, max_latency_s=10.0)
    policy.a, policy.expected = 0.001, 64
    t = 100.0
    # Nobody is waking up and the last arrival is older than a burst gap: run now.
    until = policy.hold_until(10, 10, since=t, returning=0, last_event=t - 0.0002)
    assert until < t


def test_lone_caller_is_not_held_for_max_latency(make_batcher: Callable[..., Batcher]) -> None:
    def fn(x: np.ndarray) -> np.ndarray:
        time.sleep(0.001)
        return x

    batcher = make_batcher(fn, max_latency_ms=10_000)
    with ThreadPoolExecutor(16) as pool:  # a crowd first: the policy learns to hold
        list(pool.map(lambda _: [batcher.submit(np.zeros(1)) for _ in range(10)], range(16)))
    start = time.monotonic()
    for _ in range(30):
        batcher.submit(np.zeros(1))
    elapsed = time.monotonic() - start
    assert elapsed < 2.0, f"30 lone calls took {elapsed:.2f} s"
    assert batcher.policy.expected == 1
    now = time.monotonic()
    assert batcher.policy.hold_until(1, 1, since=now, returning=0, last_event=now) == 0.0


# --- full batches from a crowd, cheap hand-offs


def sleepy(x: np.ndarray) -> np.ndarray:
    # A fixed cost of 10 ms: callers have that long to come back before a batch stops
    # waiting for them, generous even on a loaded CI machine.
    time.sleep(0.01)
    return x * 2


def full_share(sizes: list[int], crowd: int) -> float:
    """Share of batches that held every caller, leaving out the first and last ten
    (callers starting up and finishing)."""
    steady = sizes[10:-10]
    return sum(1 for n in steady if n == crowd) / max(len(steady), 1)


def test_64_thread_callers_form_full_batches_not_halves(
    make_batcher: Callable[..., Batcher],
) -> None:
    # Callers that resubmit at once used to settle into two alternating half-batches.
    batcher = make_batcher(sleepy)
    ready = threading.Barrier(64)

    def caller(i: int) -> None:
        x = np.full((1, 2), float(i))
        ready.wait(WAIT)
        for _ in range(40):
            np.testing.assert_array_equal(batcher.submit(x), x * 2)

    with ThreadPoolExecutor(64) as pool:
        list(pool.map(caller, range(64)))
    sizes = batcher.stats.batch_sizes
    assert sum(sizes) == 64 * 40
    assert full_share(sizes, 64) >= 0.5, f"batches: {sizes}"


async def test_64_asyncio_callers_form_full_batches_with_one_loop_hop_each() -> None:
    loop = asyncio.get_running_loop()
    hops = 0
    real = loop.call_soon_threadsafe

    def counting(*args: Any, **kwargs: Any) -> Any:  # the loop's own method, counted
        nonlocal hops
        hops += 1
        return real(*args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        with Batcher(sleepy) as batcher:

            async def caller(i: int) -> None:
                x = np.full((1, 2), float(i))
                for _ in range(40):
                    np.testing.assert_array_equal(await batcher.submit_async(x), x * 2)

            await asyncio.gather(*(caller(i) for i in range(64)))
            sizes = batcher.stats.batch_sizes
    finally:
        del loop.call_soon_threadsafe
    assert sum(sizes) == 64 * 40
    assert full_share(sizes, 64) >= 0.5, f"batches: {sizes}"
    assert hops == len(sizes)  # one hop onto the loop per batch, not one per call


def test_callers_of_one_batch_all_wake_with_their_own_result(
    make_batcher: Callable[..., Batcher],
) -> None:
    # Thread callers of a batch are woken one after another (each wakes the next):
    # every one of them must wake, with its own slice, also when fn fails.
    gated = Gated(lambda x: x * 3 if (x >= 0).all() else np.log(-1.0 + "x"))  # type: ignore[operator]
    batcher = make_batcher(gated)
    payloads = [np.full((1, 2), float(i)) for i in range(40)]
    _, results = run_gated(batcher, gated, np.zeros((1, 2)), payloads)
    for payload, result in zip(payloads, results, strict=True):
        np.testing.assert_array_equal(result, payload * 3)
    bad = [np.full((1, 2), -1.0)] + [np.full((1, 2), float(i)) for i in range(20)]
    gated.seen.clear()
    gated.gate.clear()
    gated.entered.clear()
    _, results = run_gated(batcher, gated, np.zeros((1, 2)), bad)
    assert all(isinstance(r, TypeError) for r in results)  # the whole batch failed
    np.testing.assert_array_equal(batcher.submit(np.ones((1, 2))), np.full((1, 2), 3.0))


def test_an_asyncio_caller_whose_loop_closed_does_not_stall_the_batcher(
    make_batcher: Callable[..., Batcher],
) -> None:
    gated = Gated(lambda x: x + 1)
    batcher = make_batcher(gated)

    async def give_up() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.submit_async(np.zeros(1)), 0.05)

    asyncio.run(give_up())  # its call is running (gated) when its loop closes
    assert gated.entered.wait(WAIT)
    gated.release()
    np.testing.assert_array_equal(batcher.submit(np.ones(1)), [2.0])
    wait_until(lambda: batcher._returning == 0, "no caller to be counted as returning")
    assert batcher.stats.calls == 2


def test_oversize_and_small_thread_calls_mixed_each_get_their_result(
    make_batcher: Callable[..., Batcher],
) -> None:
    def fn(x: np.ndarray) -> np.ndarray:
        time.sleep(0.001)
        return x * 2

    batcher = make_batcher(fn, max_batch_size=10)

    def caller(i: int) -> None:
        for n in (1, 25, 3, 11):
            x = np.arange(n * 2).reshape(n, 2) + 1000 * i
            np.testing.assert_array_equal(batcher.submit(x), x * 2)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(caller, range(16)))
    sizes = batcher.stats.batch_sizes
    assert max(sizes) <= 10
    assert sum(sizes) == 16 * (1 + 25 + 3 + 11)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_fn_raising_system_exit_fails_its_callers_instead_of_hanging_them() -> None:
    # The worker thread stops with the SystemExit (the warning pytest would print).
    def fn(x: np.ndarray) -> np.ndarray:
        raise SystemExit("model gave up")

    batcher = Batcher(fn)
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(batcher.submit, np.zeros(1))
        with pytest.raises(BatcherClosed, match="stopped"):
            call.result(WAIT)
    with pytest.raises(BatcherClosed):
        batcher.submit(np.zeros(1))
    batcher.close(timeout=WAIT)


async def test_fn_raising_stop_iteration_reaches_asyncio_callers_as_runtime_error() -> None:
    def fn(x: np.ndarray) -> np.ndarray:
        raise StopIteration

    with Batcher(fn) as batcher:
        with pytest.raises(RuntimeError, match="StopIteration"):
            await asyncio.wait_for(batcher.submit_async(np.zeros(1)), WAIT)
        with pytest.raises(RuntimeError, match="StopIteration"):  # and it keeps serving
            await asyncio.wait_for(batcher.submit_async(np.zeros(1)), WAIT)


def test_a_small_call_is_not_held_behind_the_later_chunk_of_an_oversize_call(
    make_batcher: Callable[..., Batcher],
) -> None:
    # max_batch_size 10: after the gated first call, the queue holds A (4 rows), the two
    # chunks of X (10 rows of 7s, then 5 rows of 8s) and B (1 row). The next batch takes
    # A, X's second chunk and B (9 + 1 rows; X's first chunk does not fit); X's first
    # chunk runs after, and is held until B has its result. B must not wait for it.
    b_done = threading.Event()

    def fn(x: np.ndarray) -> np.ndarray:
        if (x == 7).any():
            assert b_done.wait(WAIT), "B never got its result"
        return x * 2

    gated = Gated(fn)
    batcher = make_batcher(gated, max_batch_size=10)
    a, x, b = (
        np.full((4, 1), 1.0),
        np.vstack([np.full((10, 1), 7.0), np.full((5, 1), 8.0)]),
        np.full((1, 1), 2.0),
    )
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.submit, np.zeros((1, 1)))
        assert gated.entered.wait(WAIT)
        calls = [pool.submit(batcher.submit, a)]
        wait_until(lambda: batcher.pending == 1, "A to queue")
        calls.append(pool.submit(batcher.submit, x))
        wait_until(lambda: batcher.pending == 3, "X's chunks to queue")
        calls.append(pool.submit(batcher.submit, b))
        wait_until(lambda: batcher.pending == 4, "B to queue")
        gated.release()
        try:
            np.testing.assert_array_equal(calls[2].result(WAIT / 2), b * 2)
        finally:
            b_done.set()
        np.testing.assert_array_equal(calls[0].result(WAIT), a * 2)
        np.testing.assert_array_equal(calls[1].result(WAIT), x * 2)
        first.result(WAIT)
    assert batcher.stats.batch_sizes == [1, 10, 10]
