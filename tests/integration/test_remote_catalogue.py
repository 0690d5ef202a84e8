"""The remote catalogue (index/<C>.cat, docs/format.md 11.11) on real backends: a fresh
machine reads a handful of files instead of one index per pack, pushes keep it short,
remote gc rewrites it, and a damaged or stale one only costs requests."""

from __future__ import annotations

import collections
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault import remotes
from modelvault.remote import repo as remote_repo
from modelvault.remote.base import Range, Transport
from modelvault.remote.catalogue import CatalogueError, decode_catalogue, encode_catalogue
from modelvault.remote.transport import open_transport, wrapping
from modelvault.repo.layout import CATALOGUE, CATALOGUE_KEY, PACK_INDEX_KEY, PACKS

pytestmark = pytest.mark.slow  # (about 5 s each on the S3 server: many pushes)


@pytest.fixture(params=["s3", "file", "memory"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        return {"url": bucket["url"] + "/m", "options": bucket["options"]}
    if request.param == "file":
        return {"url": (tmp_path / "remote").as_uri(), "options": {}}
    return {"url": f"memory://mv-{uuid.uuid4().hex[:8]}", "options": {}}


@pytest.fixture(autouse=True)
def _small(monkeypatch: pytest.MonkeyPatch) -> None:
    """A catalogue of 3 uncovered packs, a merge at 3 catalogues (8 and 8 by default)."""
    monkeypatch.setattr(remote_repo, "CATALOGUE_MIN", 3)
    monkeypatch.setattr(remote_repo, "CATALOGUE_MAX", 3)


class Counting(Transport):
    """Counts reads per kind of key ("idx", "cat", ...); everything else passes through."""

    def __init__(self, inner: Transport, seen: collections.Counter[str]) -> None:
        self.inner, self.url, self.seen = inner, inner.url, seen
        self._lock = threading.Lock()

    def _count(self, key: str) -> None:
        with self._lock:
            self.seen[key.rsplit(".", 1)[-1] if "." in key else key.split("/")[0]] += 1

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self.inner.put_if_absent(key, data)

    def get(self, key: str) -> bytes:
        self._count(key)
        return self.inner.get(key)

    def get_ranges(self, key: str, ranges: Sequence[Range]) -> list[bytes]:
        return self.inner.get_ranges(key, ranges)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def list_times(self, prefix: str) -> dict[str, float | None]:
        return self.inner.list_times(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def _counted() -> tuple[Any, collections.Counter[str]]:
    seen: collections.Counter[str] = collections.Counter()
    return (lambda: wrapping(lambda t: Counting(t, seen))), seen


def _store(tmp_path: Path, name: str, remote: dict[str, Any]) -> modelvault.Store:
    store = modelvault.Store(tmp_path / name)
    remotes.add("origin", remote["url"], store=store, **remote["options"])
    return store


def _push_versions(tmp_path: Path, store: modelvault.Store, n: int) -> None:
    """``n`` small versions, each pushed alone (one pack each)."""
    for i in range(n):
        src = tmp_path / f"src{i}"
        src.mkdir()
        (src / "w.bin").write_bytes(f"version {i} ".encode() * 3000)
        store.save(src, f"m:v{i:02d}")
        store.push(f"m:v{i:02d}")


def _keys(remote: dict[str, Any]) -> tuple[set[str], set[str]]:
    t = open_transport(remote["url"], remote["options"])
    packs = {m.group(1) for k in t.list(PACKS) if (m := PACK_INDEX_KEY.fullmatch(k))}
    cats = {m.group(1) for k in t.list(CATALOGUE) if (m := CATALOGUE_KEY.fullmatch(k))}
    return packs, cats


def _covered(remote: dict[str, Any], cats: set[str]) -> set[str]:
    t = open_transport(remote["url"], remote["options"])
    out: set[str] = set()
    for c in cats:
        out |= set(decode_catalogue(c, t.get(f"{CATALOGUE}/{c}.cat")))
    return out


def test_catalogue_round_trip_and_damage() -> None:
    name, data = encode_catalogue({})
    assert decode_catalogue(name, data) == {}
    with pytest.raises(CatalogueError):
        decode_catalogue(name, data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CatalogueError):
        decode_catalogue("0" * 64, data)


def test_a_fresh_machine_reads_catalogues_not_every_index(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    store = _store(tmp_path, "a", remote)
    _push_versions(tmp_path, store, 10)
    packs, cats = _keys(remote)
    assert len(packs) == 10
    assert 1 <= len(cats) <= 3  # pushes kept it short: merged at 3
    covered = _covered(remote, cats)
    assert covered <= packs and len(packs - covered) < 3
    fresh = _store(tmp_path, "fresh", remote)
    counting, seen = _counted()
    with counting():
        fresh.pull("m")
        fresh.pull("m:v00")
    assert seen["cat"] == len(cats)
    assert seen["idx"] == len(packs - covered) < 3
    assert fresh.verify().ok
    with counting():  # the second time every index is cached: nothing is read
        fresh.pull("m:v05")
    assert seen["cat"] == len(cats) and seen["idx"] == len(packs - covered)


def test_remote_gc_leaves_one_catalogue_of_what_is_left(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    store = _store(tmp_path, "a", remote)
    _push_versions(tmp_path, store, 7)
    for i in (0, 2, 4):
        store.delete_remote(f"m:v{i:02d}")
    store.gc_remote()
    packs, cats = _keys(remote)
    assert len(packs) == 4 and len(cats) == 1
    assert _covered(remote, cats) == packs
    fresh = _store(tmp_path, "fresh", remote)
    counting, seen = _counted()
    with counting():
        for tag in fresh.list_remote():
            fresh.pull(str(tag))
    assert seen["idx"] == 0 and seen["cat"] == 1
    assert store.verify_remote().ok


def test_a_damaged_or_stale_catalogue_costs_requests_only(
    tmp_path: Path, remote: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path, "a", remote)
    _push_versions(tmp_path, store, 4)
    t = open_transport(remote["url"], remote["options"])
    (old,) = _keys(remote)[1]
    old_data = t.get(f"{CATALOGUE}/{old}.cat")
    store.delete_remote("m:v00")
    store.gc_remote()
    t.put(f"{CATALOGUE}/{old}.cat", old_data)  # stale: it names a pack gc removed
    (cat,) = _keys(remote)[1] - {old}
    key = f"{CATALOGUE}/{cat}.cat"
    data = bytearray(t.get(key))
    data[40] ^= 0xFF
    t.put(key, bytes(data))  # damaged
    fresh = _store(tmp_path, "fresh", remote)
    for tag in fresh.list_remote():
        fresh.pull(str(tag))
    assert fresh.verify().ok
    assert any("is damaged" in r.message and cat in r.message for r in caplog.records)
    report = store.verify_remote()
    assert not report.ok and key in report.damaged_files
