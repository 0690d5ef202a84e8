"""A conformance suite for remote transports, shipped the way zarr ships ``StoreTests``,
and an in-memory twin of a transport for tests that need a remote and nothing more.

Subclass :class:`TransportTests` in a pytest module and give it a ``transport`` fixture::

    class TestMyBackend(TransportTests):
        @pytest.fixture
        def transport(self, tmp_path):
            return Retrying(open_transport(my_url))

Every transport modelvault ships (file://, memory://, S3) passes it in tests/. Needs
pytest (a test dependency, not a runtime one).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from modelvault.errors import NotFound
from modelvault.remote.base import content_token
from modelvault.remote.transport import Range, Transport

__all__ = ["InMemoryTransport", "TransportTests"]


class InMemoryTransport(Transport):
    """A transport over a dict in this process: every verb, create-only writes atomic.

    Unlike ``memory://`` (fsspec's, one store shared by the whole process), each instance
    is its own remote, so tests need no unique names and leave nothing behind.
    """

    def __init__(self, url: str = "inmemory://") -> None:
        self.url = url
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self.objects[key] = bytes(data)

    def put_file(self, key: str, path: Path) -> None:
        self.put(key, path.read_bytes())

    def put_if_absent(self, key: str, data: bytes) -> bool:
        with self._lock:
            if key in self.objects:
                return False
            self.objects[key] = bytes(data)
            return True

    def get(self, key: str) -> bytes:
        with self._lock:
            try:
                return self.objects[key]
            except KeyError:
                raise NotFound(f"{self.url}{key} does not exist") from None

    def get_ranges(self, key: str, ranges: Sequence[Range]) -> list[bytes]:
        data = self.get(key)
        return [data[offset : offset + length] for offset, length in ranges]

    def list(self, prefix: str) -> list[str]:
        top = prefix.rstrip("/") + "/"
        with self._lock:
            return sorted(k for k in self.objects if k.startswith(top))

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(key, None)

    @property
    def atomic_swap(self) -> bool:
        return True

    def put_if_match(self, key: str, data: bytes, token: str | None) -> bool:
        with self._lock:
            now = self.objects.get(key)
            if (None if now is None else content_token(now)) != token:
                return False
            self.objects[key] = bytes(data)
            return True


class TransportTests:
    """What every transport must do; subclasses provide the ``transport`` fixture."""

    @pytest.fixture
    def transport(self) -> Transport:
        raise NotImplementedError("give the subclass a `transport` fixture")

    def test_put_get_list_delete(self, transport: Transport) -> None:
        assert transport.list("packs") == []
        transport.put("packs/a.pack", b"0123456789")
        transport.put("packs/sub/b", b"x")
        transport.put("refs/n/v", b"{}")
        assert transport.get("packs/a.pack") == b"0123456789"
        assert transport.list("packs") == ["packs/a.pack", "packs/sub/b"]
        assert transport.exists("packs/a.pack") and not transport.exists("packs/zz")
        transport.put("packs/a.pack", b"new")
        assert transport.get("packs/a.pack") == b"new"
        transport.delete("packs/a.pack")
        transport.delete("packs/a.pack")  # absent: no error
        assert transport.list("packs") == ["packs/sub/b"]

    def test_missing_key_is_not_found(self, transport: Transport) -> None:
        with pytest.raises(NotFound):
            transport.get("nope")
        with pytest.raises(NotFound):
            transport.get_ranges("nope", [(0, 1)])

    def test_get_ranges(self, transport: Transport, tmp_path: Path) -> None:
        src = tmp_path / "src"
        src.write_bytes(bytes(range(256)) * 16)
        transport.put_file("p", src)
        got = transport.get_ranges("p", [(0, 4), (250, 10), (4090, 100)])
        assert got == [
            bytes([0, 1, 2, 3]),
            bytes(range(250, 256)) + bytes(range(4)),
            bytes(range(250, 256)),
        ]

    def test_upload_and_read_range_tell_their_bytes(
        self, transport: Transport, tmp_path: Path
    ) -> None:
        """``upload`` (bytes or a file; over S3's 5 MiB: a multipart upload) and
        ``read_range`` tell every byte they move, each count positive, once each."""
        data = bytes(range(256)) * (45 * 1024)  # 11.25 MiB
        src = tmp_path / "pack"
        src.write_bytes(data[::-1])
        for key, source, want in (("a", data, data), ("b", src, data[::-1])):
            told: list[int] = []
            transport.upload(f"packs/{key}", source, told.append)
            assert sum(told) == len(want) and min(told) > 0
            assert transport.get(f"packs/{key}") == want
            told.clear()
            got = transport.read_range(f"packs/{key}", 1000, len(want), told.append)
            assert got == want[1000:] and sum(told) == len(want) - 1000 and min(told) > 0

    def test_put_if_absent_is_create_only(self, transport: Transport) -> None:
        assert transport.put_if_absent("refs/n/v", b"first")
        assert not transport.put_if_absent("refs/n/v", b"second")
        assert transport.get("refs/n/v") == b"first"

    def test_put_if_absent_race_has_one_winner(self, transport: Transport) -> None:
        wins: list[int] = []
        barrier = threading.Barrier(6)

        def attempt(i: int) -> None:
            barrier.wait()
            if transport.put_if_absent("refs/race/v", str(i).encode()):
                wins.append(i)

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if transport.atomic_create:
            assert len(wins) == 1
        assert transport.get("refs/race/v") in {str(i).encode() for i in wins}

    def test_get_versioned_and_put_if_match_swap(self, transport: Transport) -> None:
        with pytest.raises(NotFound):
            transport.get_versioned("aliases/n/prod")
        assert transport.put_if_match("aliases/n/prod", b"v1", None)  # create
        assert not transport.put_if_match("aliases/n/prod", b"v1-again", None)  # exists
        data, token = transport.get_versioned("aliases/n/prod")
        assert data == b"v1"
        assert transport.put_if_match("aliases/n/prod", b"v2", token)
        assert transport.get("aliases/n/prod") == b"v2"
        assert not transport.put_if_match("aliases/n/prod", b"v3", token)  # stale token
        assert transport.get("aliases/n/prod") == b"v2"
        data, fresh = transport.get_versioned("aliases/n/prod")
        assert data == b"v2" and fresh != token
        transport.delete("aliases/n/prod")
        assert not transport.put_if_match("aliases/n/prod", b"v4", fresh)  # gone meanwhile
        with pytest.raises(NotFound):
            transport.get("aliases/n/prod")
        assert transport.list("aliases") == []

    def test_put_if_match_race_has_one_winner(self, transport: Transport) -> None:
        transport.put_if_match("aliases/race/a", b"start", None)
        _, token = transport.get_versioned("aliases/race/a")
        wins: list[int] = []
        barrier = threading.Barrier(6)

        def attempt(i: int) -> None:
            barrier.wait()
            if transport.put_if_match("aliases/race/a", str(i).encode(), token):
                wins.append(i)

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if transport.atomic_swap:
            assert len(wins) == 1
        assert wins
        assert transport.get("aliases/race/a") in {str(i).encode() for i in wins}
