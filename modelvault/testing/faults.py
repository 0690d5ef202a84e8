"""A fault-injecting transport: errors, truncated reads, stalled reads and slow writes.

::

    from modelvault.testing.faults import FaultPlan, injected

    plan = FaultPlan(seed=7, rate=0.3)
    with injected(plan):                 # every transport opened in this block is wrapped
        modelvault.models.push("m:v1", "s3://bucket/p")   # may raise RemoteError
    print(plan.summary())                # what was injected, by kind

:class:`FaultyTransport` wraps any :class:`~modelvault.remote.transport.Transport` (so
``file://``, ``s3://`` and the rest alike); :func:`injected` installs it through
:func:`modelvault.remote.transport.wrapping`, under the ``Retrying`` and ``Metered``
wrappers push and pull put around every transport, exactly where a real backend fails.

The schedule is seeded and keyed by ``(verb, key, n)`` (the n-th call of that verb on
that key), not by call order, so the same seed injects the same faults whatever the
thread interleaving of a push's or pull's parallel transfers.

Fault kinds (``FaultPlan(kinds=...)``; all by default):

``error``
    raise a foreign exception before the call (a transient one such as
    ``ConnectionResetError`` or ``TimeoutError``, or a permanent one such as
    ``PermissionError`` or a backend's ``RuntimeError``).
``error-after``
    do the call, then raise ``ConnectionResetError``: the write landed but the client
    never heard (the case that makes a retried create-only write find its own object).
``truncate``
    reads (``get``, ``get_ranges``) return fewer bytes than the object holds.
``stall``
    reads sleep ``stall`` seconds, then raise ``TimeoutError`` as a read timeout would.
``slow``
    writes sleep ``slow`` seconds, then happen.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelvault.remote.transport import Range, Transport, is_transient, wrapping

__all__ = [
    "KINDS",
    "READS",
    "WRITES",
    "Fault",
    "FaultPlan",
    "FaultyTransport",
    "injected",
]

KINDS = ("error", "error-after", "truncate", "stall", "slow")
READS = frozenset({"get", "get_ranges", "get_versioned", "list"})
WRITES = frozenset({"put", "put_file", "put_if_absent", "put_if_match", "delete"})


def _transient_errors() -> list[Callable[[], BaseException]]:
    return [
        lambda: ConnectionResetError(104, "Connection reset by peer (injected)"),
        lambda: TimeoutError("timed out (injected)"),
        lambda: BrokenPipeError(32, "Broken pipe (injected)"),
    ]


def _permanent_errors() -> list[Callable[[], BaseException]]:
    return [
        lambda: PermissionError(13, "Access Denied (injected)"),
        lambda: RuntimeError("backend bug (injected)"),
        lambda: KeyError("Contents"),  # a backend tripping over an odd answer
    ]


@dataclass(frozen=True)
class Fault:
    """One fault to inject: its kind and, for ``error``, the exception to raise."""

    kind: str
    error: BaseException | None = None
    cut: float = 0.0  # truncate: keep this fraction of the bytes


class FaultPlan:
    """A seeded schedule of faults.

    Each call ``(verb, key)`` draws, from a hash of ``(seed, verb, key, n)``, whether a
    fault is injected (probability ``rate``) and which kind among those that apply to
    the verb. ``permanent`` is the share of ``error`` faults that are not transient.
    ``limit`` caps the faults injected in total (None: no cap). Thread-safe.
    """

    def __init__(
        self,
        seed: int,
        rate: float = 0.2,
        kinds: Sequence[str] = KINDS,
        *,
        permanent: float = 0.25,
        stall: float = 0.05,
        slow: float = 0.02,
        limit: int | None = None,
    ) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}: choose from {KINDS}")
        self.seed = seed
        self.rate = rate
        self.kinds = tuple(kinds)
        self.permanent = permanent
        self.stall = stall
        self.slow = slow
        self.limit = limit
        self.calls: Counter[tuple[str, str]] = Counter()
        self.injected: list[tuple[str, str, str]] = []  # (verb, key, kind)
        self._lock = threading.Lock()

    def _draw(self, verb: str, key: str, n: int, salt: str) -> float:
        h = hashlib.blake2b(f"{self.seed}/{verb}/{key}/{n}/{salt}".encode(), digest_size=8)
        return int.from_bytes(h.digest(), "big") / 2**64

    def decide(self, verb: str, key: str) -> Fault | None:
        """The fault for this call, or None (and record it)."""
        with self._lock:
            n = self.calls[(verb, key)]
            self.calls[(verb, key)] += 1
            if self.limit is not None and len(self.injected) >= self.limit:
                return None
            if self._draw(verb, key, n, "hit") >= self.rate:
                return None
            kinds = [k for k in self.kinds if _applies(k, verb)]
            if not kinds:
                return None
            kind = kinds[int(self._draw(verb, key, n, "kind") * len(kinds))]
            fault = Fault(kind)
            if kind == "error":
                permanent = self._draw(verb, key, n, "permanent") < self.permanent
                pool = _permanent_errors() if permanent else _transient_errors()
                fault = Fault(kind, pool[int(self._draw(verb, key, n, "which") * len(pool))]())
            elif kind == "truncate":
                fault = Fault(kind, cut=self._draw(verb, key, n, "cut"))
            self.injected.append((verb, key, kind))
            return fault

    def summary(self) -> dict[str, int]:
        """How many faults of each kind were injected."""
        with self._lock:
            return dict(Counter(kind for _, _, kind in self.injected))


def _applies(kind: str, verb: str) -> bool:
    if kind in ("truncate", "stall"):
        return verb in ("get", "get_ranges")
    if kind == "slow":
        return verb in WRITES
    return True


def _injected(exc: BaseException) -> BaseException:
    exc.modelvault_injected = True  # type: ignore[attr-defined]
    return exc


def _cut(data: bytes, fraction: float) -> bytes:
    return data[: min(len(data) - 1, int(len(data) * fraction))] if data else data


class FaultyTransport(Transport):
    """Wraps a transport and injects the faults ``plan`` schedules (see module docs).

    Injected exceptions count as transient exactly when :func:`is_transient` says so
    for their class; real ones are judged by the wrapped transport, as without faults.
    """

    def __init__(self, inner: Transport, plan: FaultPlan) -> None:
        self.inner = inner
        self.url = inner.url
        self.plan = plan

    @property
    def atomic_create(self) -> bool:
        return self.inner.atomic_create

    def is_transient(self, exc: BaseException) -> bool:
        if getattr(exc, "modelvault_injected", False):
            return is_transient(exc)
        return self.inner.is_transient(exc)

    def _before(self, verb: str, key: str) -> Fault | None:
        fault = self.plan.decide(verb, key)
        if fault is None:
            return None
        if fault.kind == "error":
            assert fault.error is not None
            raise _injected(fault.error)
        if fault.kind == "stall":
            time.sleep(self.plan.stall)
            raise _injected(TimeoutError(f"read of {key} stalled (injected)"))
        if fault.kind == "slow":
            time.sleep(self.plan.slow)
        return fault

    @staticmethod
    def _after(fault: Fault | None) -> None:
        if fault is not None and fault.kind == "error-after":
            raise _injected(ConnectionResetError(104, "Connection reset by peer (injected)"))

    def put(self, key: str, data: bytes) -> None:
        fault = self._before("put", key)
        self.inner.put(key, data)
        self._after(fault)

    def put_file(self, key: str, path: Path) -> None:
        fault = self._before("put_file", key)
        self.inner.put_file(key, path)
        self._after(fault)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        fault = self._before("put_if_absent", key)
        created = self.inner.put_if_absent(key, data)
        self._after(fault)
        return created

    def get(self, key: str) -> bytes:
        fault = self._before("get", key)
        data = self.inner.get(key)
        self._after(fault)
        return _cut(data, fault.cut) if fault is not None and fault.kind == "truncate" else data

    def get_ranges(self, key: str, ranges: Sequence[Range]) -> list[bytes]:
        fault = self._before("get_ranges", key)
        out = self.inner.get_ranges(key, ranges)
        self._after(fault)
        if fault is not None and fault.kind == "truncate":
            out = [_cut(b, fault.cut) for b in out]
        return out

    def list(self, prefix: str) -> list[str]:
        fault = self._before("list", prefix)
        keys = self.inner.list(prefix)
        self._after(fault)
        return keys

    def delete(self, key: str) -> None:
        fault = self._before("delete", key)
        self.inner.delete(key)
        self._after(fault)

    @property
    def atomic_swap(self) -> bool:
        return self.inner.atomic_swap

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        fault = self._before("get_versioned", key)
        data, token = self.inner.get_versioned(key)
        self._after(fault)
        return data, token

    def put_if_match(self, key: str, data: bytes, token: str | None) -> bool:
        fault = self._before("put_if_match", key)
        swapped = self.inner.put_if_match(key, data, token)
        self._after(fault)
        return swapped

    def list_times(self, prefix: str) -> dict[str, float | None]:
        fault = self._before("list", prefix)
        times = self.inner.list_times(prefix)
        self._after(fault)
        return times


@contextlib.contextmanager
def injected(plan: FaultPlan) -> Iterator[FaultPlan]:
    """Within the block, every transport opened in this thread (by push, pull,
    list_remote) is wrapped in a :class:`FaultyTransport` following ``plan``."""
    with wrapping(lambda t: FaultyTransport(t, plan)):
        yield plan
