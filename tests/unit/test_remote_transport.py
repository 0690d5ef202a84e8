"""One suite for every transport (S3 on moto at 127.0.0.1, file://, memory://), plus the
retry wrapper, remote configuration and error translation."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault import remotes
from modelvault.remote.transport import (
    Range,
    Retrying,
    Transport,
    is_transient,
    open_transport,
    public_url,
)
from modelvault.testing.transport import InMemoryTransport, TransportTests


class TestS3(TransportTests):
    @pytest.fixture
    def transport(self, s3_bucket: dict[str, Any]) -> Transport:
        return Retrying(open_transport(s3_bucket["url"] + "/root", s3_bucket["options"]))


class TestFile(TransportTests):
    @pytest.fixture
    def transport(self, tmp_path: Path) -> Transport:
        return Retrying(open_transport((tmp_path / "r").as_uri()))


class TestMemory(TransportTests):
    @pytest.fixture
    def transport(self) -> Transport:
        return Retrying(open_transport(f"memory://t-{uuid.uuid4().hex[:8]}"))


class TestGenericFsspec(TransportTests):
    """A backend with no conditional write and no swap of its own: the check-then-write
    fallbacks of FsspecTransport and Transport (atomic_create and atomic_swap False)."""

    @pytest.fixture
    def transport(self, tmp_path: Path) -> Transport:
        from fsspec.implementations.local import LocalFileSystem

        from modelvault.remote.transport import FsspecTransport

        root = tmp_path / "generic"
        root.mkdir()
        bare = FsspecTransport(LocalFileSystem(auto_mkdir=True), str(root), "generic://test")
        assert not bare.atomic_create and not bare.atomic_swap
        return Retrying(bare)


class TestInMemoryTwin(TransportTests):
    @pytest.fixture
    def transport(self) -> Transport:
        return InMemoryTransport()


def test_a_store_pushes_and_pulls_through_the_in_memory_twin(tmp_path: Path) -> None:
    """The twin is a whole remote: push and pull round-trip through it."""
    from modelvault.remote.transport import wrapping

    twin = InMemoryTransport("inmemory://twin/")
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(bytes(range(256)) * 4000)
    a, b = modelvault.Store(tmp_path / "a"), modelvault.Store(tmp_path / "b")
    a.save(src, "m:v1")
    with wrapping(lambda t: twin):
        assert a.push("m:v1", "memory://unused").objects > 0
        b.pull("m:v1", "memory://unused")
    with b.get("m:v1").open("w.bin") as f:
        assert f.read() == (src / "w.bin").read_bytes()
    assert any(k.startswith("packs/") for k in twin.objects)


class _Flaky(Transport):
    """Fails the first ``failures`` calls with ``error``, then reads an inner transport."""

    def __init__(self, inner: Transport, failures: int, error: Exception) -> None:
        self.inner, self.url, self.failures, self.error, self.calls = (
            inner,
            inner.url,
            failures,
            error,
            0,
        )

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error

    def put(self, key: str, data: bytes) -> None:
        self._maybe_fail()
        self.inner.put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self._maybe_fail()
        return self.inner.put_if_absent(key, data)

    def get(self, key: str) -> bytes:
        self._maybe_fail()
        return self.inner.get(key)

    def get_ranges(self, key: str, ranges: Sequence[Range]) -> list[bytes]:
        self._maybe_fail()
        return self.inner.get_ranges(key, ranges)

    def list(self, prefix: str) -> list[str]:
        self._maybe_fail()
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._maybe_fail()
        self.inner.delete(key)


def test_transient_failures_are_retried(tmp_path: Path) -> None:
    inner = open_transport(str(tmp_path / "r"))
    inner.put("k", b"v")
    flaky = _Flaky(inner, 2, ConnectionResetError("reset by peer"))
    assert Retrying(flaky, attempts=3, delay=0.001).get("k") == b"v"
    assert flaky.calls == 3


def test_retries_are_bounded_and_end_in_remote_error(tmp_path: Path) -> None:
    flaky = _Flaky(open_transport(str(tmp_path / "r")), 99, TimeoutError("slow"))
    with pytest.raises(modelvault.RemoteError, match=r"after 3 attempts.*TimeoutError") as info:
        Retrying(flaky, attempts=3, delay=0.001).get("k")
    assert str(tmp_path / "r") in str(info.value)
    assert isinstance(info.value.__cause__, TimeoutError)
    assert flaky.calls == 3


def test_permanent_failures_are_not_retried(tmp_path: Path) -> None:
    flaky = _Flaky(open_transport(str(tmp_path / "r")), 99, PermissionError("denied"))
    with pytest.raises(modelvault.RemoteError, match="denied"):
        Retrying(flaky, attempts=5, delay=0.001).put("k", b"v")
    assert flaky.calls == 1
    assert not is_transient(FileNotFoundError()) and is_transient(ConnectionRefusedError())


def test_unreachable_s3_is_a_remote_error_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options: dict[str, Any] = {
        "endpoint_url": f"http://127.0.0.1:{port}",
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    t = Retrying(open_transport("s3://bucket/prefix", options), attempts=2, delay=0.01)
    with pytest.raises(modelvault.RemoteError, match="s3://bucket/prefix/refs/x") as info:
        t.get("refs/x")
    assert "EndpointConnectionError" in str(info.value)
    assert "testing" not in str(info.value)  # the access key of the test environment


def test_public_url_drops_credentials() -> None:
    assert public_url("s3://AKIA:s3cr3t@bucket/p") == "s3://bucket/p"
    assert public_url("memory://x") == "memory://x"


def test_remotes_config(store: modelvault.Store) -> None:
    remotes.add("origin", "s3://bucket/models", store=store, endpoint_url="http://h:1")
    remotes.add("backup", "file:///srv/models", store=store)
    assert [r.name for r in remotes.list(store=store)] == ["backup", "origin"]
    assert remotes.get("origin", store=store).options == {"endpoint_url": "http://h:1"}
    assert remotes.resolve(store=store) == ("s3://bucket/models", {"endpoint_url": "http://h:1"})
    assert remotes.resolve("backup", store=store) == ("file:///srv/models", {})
    assert remotes.resolve("memory://x", store=store) == ("memory://x", {})
    remotes.remove("origin", store=store)
    with pytest.raises(modelvault.NotFound, match="mv remote add origin"):
        remotes.resolve(store=store)
    with pytest.raises(modelvault.NotFound):
        remotes.remove("origin", store=store)


def test_remote_env_var_is_the_default(
    store: modelvault.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    remotes.add("origin", "memory://o", store=store)
    remotes.add("team", "memory://t", store=store)
    monkeypatch.setenv("MODELVAULT_REMOTE", "team")
    assert remotes.resolve(store=store)[0] == "memory://t"
    monkeypatch.setenv("MODELVAULT_REMOTE", "memory://elsewhere")
    assert remotes.resolve(store=store)[0] == "memory://elsewhere"
    assert remotes.resolve("origin", store=store)[0] == "memory://o"


def test_credentials_are_refused_in_the_config(store: modelvault.Store) -> None:
    for key in ("secret", "key", "token", "aws_secret_access_key", "password"):
        with pytest.raises(modelvault.InvalidInput, match="credentials"):
            remotes.add("origin", "s3://b", store=store, **{key: "hunter2"})
    assert remotes.list(store=store) == []
    assert "hunter2" not in (store.path / "config.json").read_text()


def test_parse_options() -> None:
    got = remotes.parse_options(["endpoint_url=http://h:9000", "anon=true", "n=3", "x=a=b"])
    assert got == {"endpoint_url": "http://h:9000", "anon": True, "n": 3, "x": "a=b"}
    with pytest.raises(modelvault.InvalidInput):
        remotes.parse_options(["novalue"])
