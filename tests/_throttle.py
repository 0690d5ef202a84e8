"""A TCP proxy on 127.0.0.1 that caps the bytes per second going each way: a slow link
to a real server (the moto S3 server of tests/conftest.py), so that tests can watch a
transfer's progress as a user on a slow network would."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

_BLOCK = 16 * 1024  # bytes relayed between two looks at the budget


class _Budget:
    """A token bucket shared by every connection of one direction (fair: each relay
    takes a small block at a time)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()  # when the link is free again

    def take(self, n: int) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + n / self.rate
            wait = self._next - now
        if wait > 0:
            time.sleep(wait)


def _relay(src: socket.socket, dst: socket.socket, budget: _Budget | None) -> None:
    try:
        while data := src.recv(_BLOCK):
            if budget is not None:
                budget.take(len(data))
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def throttled(endpoint: str, up: float | None, down: float | None) -> Iterator[str]:
    """Yield the URL of a proxy to ``endpoint`` (``http://127.0.0.1:PORT``) sending at most
    ``up`` bytes a second to it and ``down`` back (None: no cap)."""
    host, port = endpoint.removeprefix("http://").split(":")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    upstream, downstream = (_Budget(r) if r else None for r in (up, down))
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection((host, int(port)))
            conns.extend((client, server))
            for a, b, budget in ((client, server, upstream), (server, client, downstream)):
                threading.Thread(target=_relay, args=(a, b, budget), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)
        for c in conns:
            with contextlib.suppress(OSError):
                c.close()
