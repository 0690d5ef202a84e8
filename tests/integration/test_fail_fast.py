"""Failing fast (API.md "Remotes"; issue 16, point 7): errors no retry can fix raise
RemoteError at once; an endpoint that refuses connections raises RemoteError within 15 s
by default; a stalled read is noticed (botocore's read timeout), not waited on forever.

Attempts are counted with botocore's own event hooks on the client push/pull really
use (reached through :func:`modelvault.remote.transport.wrapping`), and with a real
TCP server counting the connections it accepts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault import remotes
from modelvault.remote.transport import S3_CONFIG, S3Transport, Transport, wrapping

LIMIT = 15.0  # the contract: RemoteError within 15 s by default


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _innermost(t: Transport) -> Transport:
    while hasattr(t, "inner"):
        t = t.inner
    return t


class Events:
    """Counts botocore events (per HTTP attempt: ``before-send``; per API call:
    ``before-call``) on every S3 client a push or pull opens."""

    def __init__(self) -> None:
        self.counts = {"before-send": 0, "before-call": 0}
        self.clients: list[Any] = []

    def wrap(self, t: Transport) -> Transport:
        bare = _innermost(t)
        if isinstance(bare, S3Transport):
            client = bare.fs.s3  # the client s3fs will use (created here, not connected)
            self.clients.append(client)
            for event in self.counts:
                client.meta.events.register(f"{event}.s3", self._counter(event))
        return t

    def _counter(self, event: str) -> Callable[..., None]:
        def count(**_: Any) -> None:
            self.counts[event] += 1

        return count


@pytest.fixture
def events() -> Iterator[Events]:
    ev = Events()
    with wrapping(ev.wrap):
        yield ev


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials in the environment, as a user has them (the endpoint is the problem)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def saved(store: modelvault.Store, tmp_path: Path) -> modelvault.Store:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"w" * 10_000)
    store.save(tmp_path / "m", "m:v1")
    return store


def _timed(fn: Callable[[], object]) -> tuple[BaseException, float]:
    start = time.monotonic()
    with pytest.raises(modelvault.RemoteError) as info:
        fn()
    return info.value, time.monotonic() - start


def test_s3_defaults_reach_botocore(
    saved: modelvault.Store, events: Events, credentials: None
) -> None:
    port = _closed_port()
    remotes.add("origin", "s3://bucket/p", store=saved, endpoint_url=f"http://127.0.0.1:{port}")
    _timed(lambda: saved.push("m:v1"))
    (client,) = events.clients
    config = client.meta.config
    assert config.connect_timeout == S3_CONFIG["connect_timeout"] == 3
    assert config.read_timeout == S3_CONFIG["read_timeout"] == 15
    assert config.retries == {"total_max_attempts": 3, "mode": "standard"}


@pytest.mark.slow
def test_refused_s3_endpoint_fails_within_15_s(
    saved: modelvault.Store, events: Events, credentials: None
) -> None:
    port = _closed_port()
    remotes.add("origin", "s3://bucket/p", store=saved, endpoint_url=f"http://127.0.0.1:{port}")
    for op in (lambda: saved.push("m:v1"), lambda: saved.pull("m:v1"), lambda: saved.list_remote()):
        before = events.counts["before-send"]
        err, elapsed = _timed(op)
        assert elapsed < 10.0, elapsed  # 3 attempts, backoff <= 1 s + 2 s
        assert "s3://bucket/p" in str(err) and "unreachable" in str(err)
        assert events.counts["before-send"] - before == 3  # botocore's 3, nothing on top


def test_user_config_kwargs_override_the_defaults(
    saved: modelvault.Store, events: Events, credentials: None
) -> None:
    port = _closed_port()
    remotes.add(
        "origin",
        "s3://bucket/p",
        store=saved,
        endpoint_url=f"http://127.0.0.1:{port}",
        config_kwargs={"retries": {"total_max_attempts": 1, "mode": "standard"}},
    )
    _, elapsed = _timed(lambda: saved.push("m:v1"))
    assert events.counts["before-send"] == 1
    assert elapsed < 3.0
    assert events.clients[0].meta.config.read_timeout == 15  # the other defaults stay


def test_refusing_ftp_endpoint_is_a_remote_error(saved: modelvault.Store) -> None:
    url = f"ftp://127.0.0.1:{_closed_port()}/models"
    err, elapsed = _timed(lambda: saved.push("m:v1", url))
    assert elapsed < LIMIT
    assert "ftp://127.0.0.1" in str(err) and "ConnectionRefusedError" in str(err)
    assert isinstance(err.__cause__, ConnectionRefusedError)


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_missing_credentials_fail_at_once(
    saved: modelvault.Store, s3_bucket: dict[str, Any], events: Events, no_credentials: None
) -> None:
    remotes.add("origin", s3_bucket["url"] + "/p", store=saved, **s3_bucket["options"])
    for op in (lambda: saved.push("m:v1"), lambda: saved.pull("m:v1"), lambda: saved.list_remote()):
        before = events.counts["before-call"]
        err, elapsed = _timed(op)
        assert elapsed < 3.0, elapsed
        assert "no credentials found" in str(err) and "AWS_ACCESS_KEY_ID" in str(err)
        assert "attempts" not in str(err)
        assert events.counts["before-call"] - before == 1  # one call, never retried
    assert events.counts["before-send"] == 0  # nothing unsigned left the machine


def test_missing_bucket_fails_at_once(
    saved: modelvault.Store, s3_bucket: dict[str, Any], events: Events
) -> None:
    url = s3_bucket["url"] + "-missing/p"  # a bucket nobody created
    remotes.add("origin", url, store=saved, **s3_bucket["options"])
    for op in (lambda: saved.push("m:v1"), lambda: saved.pull("m:v1"), lambda: saved.list_remote()):
        calls, sends = events.counts["before-call"], events.counts["before-send"]
        err, elapsed = _timed(op)
        assert elapsed < 3.0, elapsed
        assert "bucket" in str(err) and "does not exist" in str(err), str(err)
        assert "attempts" not in str(err)
        calls, sends = events.counts["before-call"] - calls, events.counts["before-send"] - sends
        assert 1 <= calls <= 2 and sends == calls  # each request sent once: never retried


class _Stalling:
    """A TCP server on 127.0.0.1 that accepts connections and, when given ``head``,
    answers a HEAD with it and a GET with it and ``body_part``, then sends nothing more
    on that connection (a stalled transfer); without ``head`` it never answers."""

    def __init__(self, head: bytes = b"", body_part: bytes = b"") -> None:
        self.head, self.body_part = head, body_part
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.requests: list[bytes] = []
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        while not self.stop.is_set():
            try:
                request = conn.recv(65536)  # headers only: no body for GET or HEAD
            except TimeoutError:
                continue
            except OSError:
                return
            if not request:
                return
            self.requests.append(request.split(b" ", 1)[0])
            if not self.head:
                continue
            try:
                conn.sendall(
                    self.head if request.startswith(b"HEAD") else self.head + self.body_part
                )
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def stalling() -> Iterator[Callable[..., _Stalling]]:
    servers: list[_Stalling] = []

    def make(head: bytes = b"", body_part: bytes = b"") -> _Stalling:
        servers.append(_Stalling(head, body_part))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.mark.slow
def test_a_server_that_never_answers_is_noticed(
    saved: modelvault.Store, stalling: Callable[..., _Stalling], credentials: None
) -> None:
    server = stalling()  # accepts, reads the request, never answers
    remotes.add(
        "origin",
        "s3://bucket/p",
        store=saved,
        endpoint_url=f"http://127.0.0.1:{server.port}",
        config_kwargs={"read_timeout": 1},
    )
    err, elapsed = _timed(lambda: saved.pull("m:v1"))
    assert "timeout" in str(err).lower() and "stalled" in str(err)
    assert server.accepted == 3  # botocore's 3 attempts, each given up after 1 s
    assert elapsed < 3 * 1 + 3 + 3  # attempts + backoff + slack


@pytest.mark.slow
def test_a_body_that_stops_midway_is_noticed(
    saved: modelvault.Store, stalling: Callable[..., _Stalling], credentials: None
) -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Length: 100000\r\nETag: "x"\r\n\r\n'
    )
    server = stalling(head, b"{" * 1000)  # 1000 of 100000 bytes, then silence
    remotes.add(
        "origin",
        "s3://bucket/p",
        store=saved,
        endpoint_url=f"http://127.0.0.1:{server.port}",
        config_kwargs={"read_timeout": 1},
    )
    err, elapsed = _timed(lambda: saved.pull("m:v1"))
    assert "Timeout" in str(err) and "stalled" in str(err)
    # the body read timed out: retried by modelvault (a stream error botocore cannot
    # retry), a bounded number of times
    assert 2 <= server.accepted <= 4, server.accepted
    assert elapsed < 4 * 1 + 2 + 4


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port on 127.0.0.1 whose listen queue is full: the kernel drops further
    connection attempts (no refusal), as a firewall that drops packets would."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = int(server.getsockname()[1])
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    time.sleep(0.2)
    with socket.socket() as probe:  # the queue is full: a connect now hangs
        probe.settimeout(0.5)
        with pytest.raises(TimeoutError):
            probe.connect(("127.0.0.1", port))
    yield port
    for c in fillers:
        c.close()
    server.close()


@pytest.mark.slow
def test_an_endpoint_dropping_connections_fails_within_15_s(
    saved: modelvault.Store, events: Events, credentials: None, blackhole: int
) -> None:
    remotes.add(
        "origin", "s3://bucket/p", store=saved, endpoint_url=f"http://127.0.0.1:{blackhole}"
    )
    err, elapsed = _timed(lambda: saved.push("m:v1"))
    assert elapsed < LIMIT, elapsed  # 3 attempts x 3 s connect timeout + backoff
    assert "ConnectTimeoutError" in str(err) and "unreachable" in str(err)
    assert events.counts["before-send"] == 3


@pytest.fixture
def s3_with_auth(tmp_path: Path) -> Iterator[str]:
    """A moto S3 server of its own that checks credentials (INITIAL_NO_AUTH_ACTION_COUNT
    = 0: every request must be signed by a known key); yields its endpoint URL."""
    port = _closed_port()
    code = (
        "import time; from moto.server import ThreadedMotoServer as S; "
        f"S(ip_address='127.0.0.1', port={port}, verbose=False).start(); time.sleep(600)"
    )
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline and proc.poll() is None, "moto did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def test_access_denied_fails_at_once(
    saved: modelvault.Store,
    events: Events,
    s3_with_auth: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY")  # a key the server does not know
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-known-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    remotes.add("origin", "s3://bucket/p", store=saved, endpoint_url=s3_with_auth)
    for op in (lambda: saved.push("m:v1"), lambda: saved.pull("m:v1"), lambda: saved.list_remote()):
        calls, sends = events.counts["before-call"], events.counts["before-send"]
        err, elapsed = _timed(op)
        assert elapsed < 3.0, elapsed
        assert "access denied" in str(err) and "attempts" not in str(err), str(err)
        assert "not-a-known-secret" not in str(err)
        calls, sends = events.counts["before-call"] - calls, events.counts["before-send"] - sends
        assert calls == sends == 1  # one request, never repeated
