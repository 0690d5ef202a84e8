"""The batching policy: how long a batch waits for company (:class:`AdaptivePolicy`), from
a sliding least-squares fit of the cost of a call. Re-exported by
:mod:`modelvault.runner.batching`.
"""

from __future__ import annotations

from collections import deque


class AdaptivePolicy:
    """Decides whether the queued calls run now or wait a little for company.

    It fits the cost of a call of ``fn`` as ``a + b * rows`` (least squares over the last
    ``WINDOW`` calls) and keeps ``expected``: how many callers may take part in the next
    batch, set when a batch finishes to the calls still queued plus the callers just
    served (a caller that resubmits at once comes back within a few microseconds).

    A batch is held only while fewer calls are queued than ``expected`` and company is
    still on its way: some callers just served have not woken up yet (``returning``), or
    the newest arrival or wake-up is less than ``BURST_GAP_S`` old. It is held at most
    ``a`` counted from when the worker was free (waiting longer than the fixed cost of a
    call cannot pay for itself), leaving room for a full batch's call within
    ``max_latency``. So a lone caller, whose only company is itself, is never held; nor
    is a call arriving long after the last batch.

    Waiting for the callers just served pays only while they come back quickly. The
    policy keeps ``pace``, the time each of them takes to be back (an average over recent
    batches: thread callers wake one after another, asyncio callers all in one turn of
    their loop). If ``expected`` callers at that pace take longer than ``a``, one batch
    of everybody costs more than two batches that take turns (one runs while the callers
    of the other come back): then the queued calls run at once instead of waiting for
    the returning ones (:meth:`waits_for_returners`). Not thread-safe: the batcher's lock
    guards it.
    """

    WINDOW = 64
    BURST_GAP_S = 50e-6  # callers coming back from a batch arrive closer together than this
    PACE_WEIGHT = 0.2  # weight of the newest batch in ``pace``

    def __init__(self, max_batch_size: int, max_latency_s: float) -> None:
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self.a = 0.0  # fixed cost of a call, seconds; 0 until measured, so no hold
        self.b = 0.0  # cost per row, seconds
        self.expected = 1  # callers that may join the next batch
        self.pace = 0.0  # seconds a caller just served takes to be back; 0 until measured
        self._fit = _LineFit(self.WINDOW)
        self._seen_calls = 0

    def record_call(self, rows: int, seconds: float) -> None:
        """Note that ``fn`` took ``seconds`` for ``rows`` rows, and refit the cost."""
        self._seen_calls += 1
        if self._seen_calls == 1:
            return  # the first call pays for warm-up (imports, caches): not a cost sample
        self._fit.add(rows, seconds)
        self.a, self.b = self._fit.line()

    def record_batch_done(self, served: int, queued: int) -> None:
        """A batch of ``served`` calls finished with ``queued`` calls waiting."""
        self.expected = served + queued

    def record_returned(self, callers: int, seconds: float) -> None:
        """The ``callers`` served by one batch were all back ``seconds`` after it ended."""
        if callers < 2:
            return  # one caller tells nothing of how a crowd comes back
        sample = seconds / callers
        if self.pace == 0.0:
            self.pace = sample
        else:
            self.pace += self.PACE_WEIGHT * (sample - self.pace)

    def waits_for_returners(self) -> bool:
        """Whether waiting for the callers just served can pay: they are expected back
        within the fixed cost of a call (else the batches take turns)."""
        return self.expected * self.pace <= self.a

    def max_hold(self) -> float:
        """The longest a batch may wait for company: ``a``, within ``max_latency``."""
        room = self.max_latency_s - (self.a + self.b * self.max_batch_size)
        return max(0.0, min(self.a, room))

    def hold_until(
        self, queued: int, rows: int, since: float, returning: int, last_event: float
    ) -> float:
        """Until when (``time.monotonic()``) ``queued`` calls of ``rows`` rows wait.

        ``since`` is when the oldest of them could first have run (its arrival, or the
        end of the previous batch if later); ``returning`` how many callers served by the
        last batch have not woken up yet; ``last_event`` the newest arrival or wake-up.
        A time already past means: run now.
        """
        if rows >= self.max_batch_size or queued >= self.expected:
            return 0.0
        limit = self.max_hold()
        if limit <= 0.0:
            return 0.0
        if returning > 0:
            # Company is on its way, but too slowly to be worth it: run what is queued,
            # the returning callers make the next batch while this one runs.
            return since + limit if self.waits_for_returners() else 0.0
        return min(since + limit, last_event + self.BURST_GAP_S)


class _LineFit:
    """Least squares of ``seconds = a + b * rows`` over a sliding window, O(1) per sample."""

    def __init__(self, window: int) -> None:
        self.rows: deque[int] = deque(maxlen=window)
        self.seconds: deque[float] = deque(maxlen=window)
        self.sx = self.sy = self.sxx = self.sxy = 0.0

    def add(self, x: int, y: float) -> None:
        if len(self.rows) == self.rows.maxlen:
            self._update(self.rows[0], self.seconds[0], -1.0)
        self.rows.append(x)
        self.seconds.append(y)
        self._update(x, y, 1.0)

    def _update(self, x: int, y: float, sign: float) -> None:
        self.sx += sign * x
        self.sy += sign * y
        self.sxx += sign * x * x
        self.sxy += sign * x * y

    def line(self) -> tuple[float, float]:
        """``(a, b)``, both kept non-negative; ``(0, 0)`` until two samples are in."""
        n = len(self.rows)
        if n < 2:
            return 0.0, 0.0
        mean_x, mean_y = self.sx / n, self.sy / n
        if max(self.rows) < 2 * min(self.rows):  # too narrow a spread to tell a per-row cost
            return mean_y, 0.0
        b = (self.sxy - self.sx * mean_y) / (self.sxx - self.sx * mean_x)
        if b <= 0:
            return mean_y, 0.0
        a = mean_y - b * mean_x
        if a < 0:  # all cost is per row: nothing to save by waiting
            return 0.0, mean_y / mean_x
        return a, b


# --- the batcher
