"""Transports wrapping another: :class:`Metered` counts requests and bytes,
:class:`Retrying` retries what the transport calls transient and turns every foreign
exception into RemoteError (one line, the public URL, advice)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from modelvault.errors import ModelVaultError
from modelvault.remote.base import Bytes, Range, Transport
from modelvault.remote.urls import remote_error

T = TypeVar("T")


class Metered(Transport):
    """Counts requests (one per range) and bytes in each direction; thread-safe."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.url = inner.url
        self.requests = 0
        self.sent = 0
        self.received = 0
        self._lock = threading.Lock()

    @property
    def atomic_create(self) -> bool:
        return self.inner.atomic_create

    def is_transient(self, exc: BaseException) -> bool:
        return self.inner.is_transient(exc)

    def _count(self, requests: int, sent: int = 0, received: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.sent += sent
            self.received += received

    def put(self, key: str, data: bytes) -> None:
        self._count(1, sent=len(data))
        self.inner.put(key, data)

    def put_file(self, key: str, path: Path) -> None:
        self._count(1, sent=path.stat().st_size)
        self.inner.put_file(key, path)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self._count(1, sent=len(data))
        return self.inner.put_if_absent(key, data)

    def upload(self, key: str, source: bytes | Path, progress: Bytes) -> None:
        size = source.stat().st_size if isinstance(source, Path) else len(source)
        self._count(1, sent=size)
        self.inner.upload(key, source, progress)

    def read_range(self, key: str, offset: int, length: int, progress: Bytes) -> bytes:
        self._count(1)
        data = self.inner.read_range(key, offset, length, progress)
        self._count(0, received=len(data))
        return data

    def get(self, key: str) -> bytes:
        self._count(1)
        data = self.inner.get(key)
        self._count(0, received=len(data))
        return data

    def get_ranges(self, key: str, ranges: Sequence[Range]) -> list[bytes]:
        self._count(len(ranges))
        out = self.inner.get_ranges(key, ranges)
        self._count(0, received=sum(len(b) for b in out))
        return out

    def list(self, prefix: str) -> list[str]:
        self._count(1)
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._count(1)
        self.inner.delete(key)

    @property
    def atomic_swap(self) -> bool:
        return self.inner.atomic_swap

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        self._count(1)
        data, token = self.inner.get_versioned(key)
        self._count(0, received=len(data))
        return data, token

    def put_if_match(self, key: str, data: bytes, token: str | None) -> bool:
        self._count(1, sent=len(data))
        return self.inner.put_if_match(key, data, token)

    def list_times(self, prefix: str) -> dict[str, float | None]:
        self._count(1)
        return self.inner.list_times(prefix)


class _Tally:
    """Passes byte counts on to ``progress`` and takes them back when an attempt fails
    (the retry reports them again)."""

    def __init__(self, progress: Bytes) -> None:
        self._progress = progress
        self._told = 0

    def __call__(self, n: int) -> None:
        self._told += n
        self._progress(n)

    def take_back(self) -> None:
        if self._told:
            self._progress(-self._told)
            self._told = 0


class Retrying(Transport):
    """Retries transient failures (bounded, exponential backoff with jitter) and turns
    every foreign exception into RemoteError naming the URL and the cause.

    ``attempts`` and ``delay`` (the first backoff, doubled each time) default to the
    class attributes :attr:`ATTEMPTS` and :attr:`DELAY`.
    """

    ATTEMPTS = 4
    DELAY = 0.2

    def __init__(
        self, inner: Transport, attempts: int | None = None, delay: float | None = None
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.attempts = self.ATTEMPTS if attempts is None else attempts
        self.delay = self.DELAY if delay is None else delay

    @property
    def atomic_create(self) -> bool:
        return self.inner.atomic_create

    def is_transient(self, exc: BaseException) -> bool:
        return self.inner.is_transient(exc)

    def _call(
        self, verb: str, key: str, fn: Callable[[], T], undo: Callable[[], None] | None = None
    ) -> T:
        """``fn()``, retried; ``undo`` runs after each failed attempt (a transfer takes back
        the bytes it reported)."""
        for attempt in range(self.attempts):
            try:
                return fn()
            except ModelVaultError:
                if undo is not None:
                    undo()
                raise
            except Exception as exc:
                if undo is not None:
                    undo()
                if not self.inner.is_transient(exc) or attempt == self.attempts - 1:
                    raise remote_error(f"{verb} {self.url}/{key}", exc, attempt + 1) from exc
                time.sleep(self.delay * 2**attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def put(self, key: str, data: bytes) -> None:
        self._call("put", key, lambda: self.inner.put(key, data))

    def put_file(self, key: str, path: Path) -> None:
        self._call("put", key, lambda: self.inner.put_file(key, path))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._call("create", key, lambda: self.inner.put_if_absent(key, data))

    def upload(self, key: str, source: bytes | Path, progress: Bytes) -> None:
        told = _Tally(progress)
        self._call("put", key, lambda: self.inner.upload(key, source, told), told.take_back)

    def read_range(self, key: str, offset: int, length: int, progress: Bytes) -> bytes:
        told = _Tally(progress)
        return self._call(
            "get", key, lambda: self.inner.read_range(key, offset, length, told), told.take_back
        )

    def get(self, key: str) -> bytes:
        return self._call("get", key, lambda: self.inner.get(key))

    def get_ranges(self, key: str, ranges: Sequence[Range]) -> list[bytes]:
        return self._call("get", key, lambda: self.inner.get_ranges(key, ranges))

    def list(self, prefix: str) -> list[str]:
        return self._call("list", prefix, lambda: self.inner.list(prefix))

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.inner.delete(key))

    @property
    def atomic_swap(self) -> bool:
        return self.inner.atomic_swap

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        return self._call("get", key, lambda: self.inner.get_versioned(key))

    def put_if_match(self, key: str, data: bytes, token: str | None) -> bool:
        # a retried swap whose first try landed unheard finds its own content and returns
        # False: callers re-read (modelvault.remote.aliases does) and see they are done
        return self._call("swap", key, lambda: self.inner.put_if_match(key, data, token))

    def list_times(self, prefix: str) -> dict[str, float | None]:
        return self._call("list", prefix, lambda: self.inner.list_times(prefix))
