"""Remote lock files (modelvault/remote/locks.py) on real backends: a push and a remote gc
never run at once, stale and dead locks block no one, a broken lock stops its holder."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault import remotes
from modelvault.remote import locks
from modelvault.remote.locks import RemoteLock, list_locks, unlock
from modelvault.remote.transport import Transport, open_transport
from modelvault.repo.layout import LOCKS, lock_key


@pytest.fixture(params=["s3", "file", "memory"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        return {"url": bucket["url"] + "/m", "options": bucket["options"], "kind": "s3"}
    if request.param == "file":
        return {"url": (tmp_path / "remote").as_uri(), "options": {}, "kind": "file"}
    return {"url": f"memory://mv-{uuid.uuid4().hex[:8]}", "options": {}, "kind": "memory"}


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give up on a conflicting lock after 0.3 s instead of 10."""
    monkeypatch.setattr(locks, "WAIT", 0.3)


def _t(remote: dict[str, Any]) -> Transport:
    return open_transport(remote["url"], remote["options"])


def _store(tmp_path: Path, remote: dict[str, Any], name: str = "a") -> modelvault.Store:
    store = modelvault.Store(tmp_path / name)
    remotes.add("origin", remote["url"], store=store, **remote["options"])
    src = tmp_path / f"src-{name}"
    src.mkdir()
    (src / "w.bin").write_bytes(name.encode() * 50_000)
    store.save(src, f"{name}:v1")
    return store


def test_a_push_waits_for_remote_gc_and_gc_for_a_push(
    tmp_path: Path, remote: dict[str, Any], quick: None
) -> None:
    store = _store(tmp_path, remote)
    t = _t(remote)
    with RemoteLock(t, exclusive=True, operation="gc"):
        with pytest.raises(modelvault.RemoteError, match=r"locked by exclusive lock .* of gc"):
            store.push("a:v1")
        assert store.list_remote() == []
    assert not t.list(LOCKS)  # the push removed its own lock when it backed off
    with RemoteLock(t, exclusive=False, operation="push x:v1", name="x"):
        store.push("a:v1")  # shared locks do not conflict with each other
        store.delete_remote("a:v1")  # an exclusive lock on a: x is not a's
        with pytest.raises(modelvault.RemoteError, match=r"shared lock .* of push x:v1"):
            store.gc_remote()
    assert store.gc_remote() > 0
    assert not t.list(LOCKS)


@pytest.mark.slow  # (~6 s on S3: seven refusals, each after 0.3 s of waiting)
def test_a_delete_locks_its_name_only(tmp_path: Path, remote: dict[str, Any], quick: None) -> None:
    """delete_remote holds an exclusive lock on its model name: pushes and alias moves of
    that name (shared locks on it) and remote gc (the whole remote) keep it out and are
    kept out by it; pushes of other names and deletes of other names are not; a lock
    without a name (written before scopes existed) covers every name."""
    store = _store(tmp_path, remote)
    store.push("a:v1")
    store.set_alias("a:v1", "prod")
    t = _t(remote)
    refused = pytest.raises(modelvault.RemoteError, match=r"cannot delete a:v1 .* of push a:v2")
    with RemoteLock(t, exclusive=False, operation="push a:v2", name="a"), refused as exc:
        store.delete_remote("a:v1")
    assert "shared lock locks/" in str(exc.value) and " on 'a' of push a:v2" in str(exc.value)
    with (
        RemoteLock(t, exclusive=False, operation="push x:v1", name="x"),
        RemoteLock(t, exclusive=True, operation="delete b", name="b"),
    ):
        assert store.delete_remote("a:v1") == ["a:v1"]
    with RemoteLock(t, exclusive=True, operation="delete a", name="a"):
        with pytest.raises(modelvault.RemoteError, match=r"cannot push a:v1 .* on 'a' of delete"):
            store.push("a:v1")
        assert store.list_remote() == []
    store.push("a:v1")
    with RemoteLock(t, exclusive=True, operation="delete a:v0", name="a"):
        with pytest.raises(modelvault.RemoteError, match=r"cannot move a@prod"):
            store.push("a@prod")  # a:v1 is there: only the alias would move
        with pytest.raises(modelvault.RemoteError, match=r"cannot gc .*exclusive lock .* on 'a'"):
            store.gc_remote()
    assert store.aliases_remote() == {}
    unscoped = RemoteLock(t, exclusive=False, operation="push (an older modelvault)")
    with unscoped, pytest.raises(modelvault.RemoteError, match=r"cannot delete a:v1"):
        store.delete_remote("a:v1")
    gc = RemoteLock(t, exclusive=True, operation="gc")
    with gc, pytest.raises(modelvault.RemoteError, match=r"cannot delete a:v1 .* of gc"):
        store.delete_remote("a:v1")
    store.push("a@prod")
    assert store.aliases_remote() == {"a@prod": modelvault.Tag("a", "v1")}
    assert not t.list(LOCKS)


def test_the_second_to_create_backs_off(tmp_path: Path, remote: dict[str, Any]) -> None:
    """Whichever creates its lock second sees the first: two exclusive locks taken at
    once from threads never both succeed."""
    from concurrent.futures import ThreadPoolExecutor

    t = _t(remote)
    held: list[int] = []

    def take(i: int) -> str:
        lock = RemoteLock(t, exclusive=True, operation=f"gc {i}", wait=0.0)
        try:
            lock.acquire()
        except modelvault.RemoteError:
            return "refused"
        held.append(i)
        time.sleep(0.3)
        assert len(held) == 1
        held.remove(i)
        lock.release()
        return "held"

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(take, range(4)))  # (take asserts no two hold it at once)
    assert set(outcomes) <= {"held", "refused"}
    assert not t.list(LOCKS)


def test_stale_locks_block_no_one_and_gc_removes_them(
    tmp_path: Path, remote: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locks, "STALE_AFTER", 1.5)
    monkeypatch.setattr(locks, "REFRESH_EVERY", 0.2)
    store = _store(tmp_path, remote)
    t = _t(remote)
    abandoned = RemoteLock(t, exclusive=True, operation="gc", refresh_every=3600)
    abandoned.acquire()  # held, never refreshed: stale after 1.5 s
    time.sleep(2.5)
    store.push("a:v1")  # not blocked
    store.delete_remote("a:v1")
    assert store.gc_remote() > 0  # not blocked, and it removes the stale lock
    assert [k for k in t.list(LOCKS)] == []
    with pytest.raises(modelvault.RemoteError, match="may be lost"):
        abandoned.check(on_remote=True)  # its holder learns it lost the lock
    abandoned.release()


def test_a_held_lock_is_refreshed_on_the_backend_clock(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    t = _t(remote)
    with RemoteLock(t, exclusive=False, operation="push", refresh_every=0.3) as lock:
        first = t.list_times(LOCKS)[lock.key]
        time.sleep(1.6)
        later = t.list_times(LOCKS)[lock.key]
        assert first is not None and later is not None and later > first
        lock.check(on_remote=True)


@pytest.fixture(params=["s3", "file"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """A remote other processes can reach (memory:// is one process's)."""
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        return {"url": bucket["url"] + "/m", "options": bucket["options"]}
    return {"url": (tmp_path / "remote").as_uri(), "options": {}}


def test_a_dead_process_lock_blocks_no_one(
    tmp_path: Path, shared: dict[str, Any], quick: None
) -> None:
    """A lock left by a killed process of this machine (same PID namespace) is dead at
    once: the next push and gc go on, and gc removes it."""
    remote = shared
    store = _store(tmp_path, remote)
    child = textwrap.dedent(
        """
        import json, os, sys
        from modelvault.remote.locks import RemoteLock
        from modelvault.remote.transport import open_transport
        t = open_transport(sys.argv[1], json.loads(sys.argv[2]))
        lock = RemoteLock(t, exclusive=True, operation="gc").acquire()
        print(lock.key, flush=True)
        os._exit(0)  # dies holding it
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", child, remote["url"], json.dumps(remote["options"])],
        capture_output=True,
        text=True,
        check=True,
    )
    key = out.stdout.strip()
    t = _t(remote)
    assert t.exists(key)
    (info,) = list_locks(t)[0]
    assert info.exclusive and info.dead()
    store.push("a:v1")
    store.gc_remote()
    assert not t.exists(key)


def test_unlock_breaks_a_dead_machines_lock(
    tmp_path: Path, remote: dict[str, Any], quick: None
) -> None:
    """A lock of another machine that is fresh cannot be judged dead from here: unlock
    leaves it, unlock(everything=True) removes it, and its holder then stops."""
    store = _store(tmp_path, remote)
    t = _t(remote)
    other = {
        "version": 1,
        "exclusive": True,
        "operation": "gc",
        "host": "elsewhere",
        "pid": 1,
        "namespace": "another-machine",
        "created": time.time(),
        "time": time.time(),
    }
    t.put_if_absent(lock_key("f" * 32), json.dumps(other).encode())
    with pytest.raises(modelvault.RemoteError, match="elsewhere") as exc:
        store.push("a:v1")
    assert "mv remote unlock" in str(exc.value)
    assert store.unlock_remote() == 0
    assert store.unlock_remote(everything=True) == 1
    store.push("a:v1")
    with RemoteLock(t, exclusive=False, operation="push") as mine:
        assert len(unlock(t, everything=True)) == 1
        with pytest.raises(modelvault.RemoteError, match="removed from the remote"):
            mine.check(on_remote=True)


def test_a_damaged_lock_counts_as_exclusive_until_unlocked(
    tmp_path: Path, remote: dict[str, Any], quick: None
) -> None:
    store = _store(tmp_path, remote)
    t = _t(remote)
    t.put_if_absent(lock_key("e" * 32), b"\x00garbage")
    with pytest.raises(modelvault.RemoteError, match="locked"):
        store.push("a:v1")
    assert store.unlock_remote(everything=True) == 1
    store.push("a:v1")


def test_the_lock_document_of_format_md_and_how_its_age_is_judged() -> None:
    """docs/format.md 11.9's example reads as written; age is the backend's stamps'
    difference when both exist (the holder's clock is then irrelevant), else this
    machine's clock against the holder's ``time``."""
    doc = (
        b'{"version": 1, "exclusive": false, "operation": "push clf:v3", "name": "clf",'
        b' "host": "ci-7",'
        b' "pid": 4242, "namespace": "<boot id>:<pid namespace inode>",'
        b' "created": 1796500000.1, "time": 1796500300.4, "future": "ignored"}'
    )
    info = locks._parse("locks/" + "a" * 32, doc, modified=1000.0)
    assert (info.exclusive, info.operation, info.host, info.pid) == (
        False,
        "push clf:v3",
        "ci-7",
        4242,
    )
    assert info.name == "clf"
    assert not info.damaged and not info.dead()  # another namespace: never judged by PID
    assert info.age(1000.0 + 60) == 60  # the holder's clock (year 2026) plays no part
    assert not info.stale(1000.0 + locks.STALE_AFTER - 1)
    assert info.stale(1000.0 + locks.STALE_AFTER + 1)
    no_times = locks._parse(
        "locks/" + "b" * 32, doc.replace(b"1796500300.4", str(time.time() - 5).encode()), None
    )
    assert no_times.age(None) is not None and 4 < no_times.age(None) < 60  # type: ignore[operator]
    damaged = locks._parse("locks/" + "c" * 32, b"[1, 2]", modified=None)
    assert damaged.damaged and damaged.exclusive and not damaged.stale(None)
    assert damaged.name is None  # the whole remote
    unscoped = locks._parse("locks/" + "d" * 32, doc.replace(b' "name": "clf",', b""), None)
    assert unscoped.name is None and not unscoped.damaged  # (written before scopes)
    odd = locks._parse("locks/" + "e" * 32, doc.replace(b'"clf"', b"7"), None)
    assert odd.name is None and not odd.damaged  # a name that is no string: everything
