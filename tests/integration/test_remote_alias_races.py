"""A remote alias move racing ``delete_remote`` of the version it moves to, and remote
gc (docs/remotes.md, "Why a delete never strands an alias"). The interleavings are
forced: each party runs in its own thread on its own store (a machine), through the
real transport of a real backend (moto's S3 server on 127.0.0.1, file://, memory://),
with a hook that stops it at one call until another party has reached a given point.

Whatever the order, the remote ends with every alias naming a version it holds whose
objects are all there (``verify_remote`` finds nothing), and a party that could not do
its part says so (``ModelExists``, ``NotFound``) instead of stranding the alias.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault import ModelExists, Tag, remotes
from modelvault.remote import locks
from modelvault.remote.base import Range, Transport
from modelvault.remote.transport import open_transport, wrapping
from modelvault.repo.layout import LOCKS

PAUSE = 60.0  # the longest a hook waits for the other party (a bug, never a slow run)

Hook = Callable[[str, str, str], None]  # (when: "before"|"after", verb, key)


class Hooked(Transport):
    """One thread's real transport, calling ``hook`` before and after each call."""

    def __init__(self, inner: Transport, hook: Hook) -> None:
        self.inner = inner
        self.url = inner.url
        self.hook = hook

    @property
    def atomic_create(self) -> bool:
        return self.inner.atomic_create

    @property
    def atomic_swap(self) -> bool:
        return self.inner.atomic_swap

    def is_transient(self, exc: BaseException) -> bool:
        return self.inner.is_transient(exc)

    def _call(self, verb: str, key: str, fn: Callable[[], Any]) -> Any:
        self.hook("before", verb, key)
        out = fn()
        self.hook("after", verb, key)
        return out

    def put(self, key: str, data: bytes) -> None:
        self._call("put", key, lambda: self.inner.put(key, data))

    def put_file(self, key: str, path: Path) -> None:
        self._call("put_file", key, lambda: self.inner.put_file(key, path))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return bool(self._call("put_if_absent", key, lambda: self.inner.put_if_absent(key, data)))

    def get(self, key: str) -> bytes:
        return bytes(self._call("get", key, lambda: self.inner.get(key)))

    def get_ranges(self, key: str, ranges: Sequence[Range]) -> list[bytes]:
        return list(self._call("get_ranges", key, lambda: self.inner.get_ranges(key, ranges)))

    def list(self, prefix: str) -> list[str]:
        return list(self._call("list", prefix, lambda: self.inner.list(prefix)))

    def list_times(self, prefix: str) -> dict[str, float | None]:
        return dict(self._call("list_times", prefix, lambda: self.inner.list_times(prefix)))

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.inner.delete(key))

    def exists(self, key: str) -> bool:
        return bool(self._call("exists", key, lambda: self.inner.exists(key)))

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data, token = self._call("get_versioned", key, lambda: self.inner.get_versioned(key))
        return data, token

    def put_if_match(self, key: str, data: bytes, token: str | None) -> bool:
        return bool(
            self._call("put_if_match", key, lambda: self.inner.put_if_match(key, data, token))
        )


class Party(threading.Thread):
    """A machine doing one thing in a thread, its transports hooked; keeps the outcome."""

    def __init__(self, name: str, work: Callable[[], object], hook: Hook) -> None:
        super().__init__(name=f"party-{name}", daemon=True)
        self.work, self.hook = work, hook
        self.done = threading.Event()
        self.outcome: str = "unfinished"
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with wrapping(lambda t: Hooked(t, self.hook)):
                self.work()
            self.outcome = "ok"
        except BaseException as exc:  # recorded, then asserted on
            self.outcome, self.error = type(exc).__name__, exc
        finally:
            self.done.set()


def _wait(event: threading.Event, what: str) -> None:
    assert event.wait(PAUSE), f"the other party never {what}"


@pytest.fixture(params=["s3", "file", "memory"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        return {"url": bucket["url"] + "/race", "options": bucket["options"]}
    if request.param == "file":
        return {"url": (tmp_path / "remote").as_uri(), "options": {}}
    return {"url": f"memory://mv-{uuid.uuid4().hex[:8]}", "options": {}}


@pytest.fixture(autouse=True)
def _patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """A party that meets a lock waits up to 60 s (not 10): long enough, on a loaded
    machine, for the holder the test stopped to go on and finish."""
    monkeypatch.setattr(locks, "WAIT", PAUSE)


def _machine(tmp_path: Path, name: str, remote: dict[str, Any]) -> modelvault.Store:
    store = modelvault.Store(tmp_path / name)
    remotes.add("origin", remote["url"], store=store, **remote["options"])
    return store


def _setup(tmp_path: Path, remote: dict[str, Any]) -> tuple[modelvault.Store, modelvault.Store]:
    """iris:v1 and iris:v2 (each with bytes of its own) on the remote, iris@prod -> v1;
    the mover's local iris@prod -> v2 (its push will move the remote alias there)."""
    mover = _machine(tmp_path, "mover", remote)
    for version in ("v1", "v2"):
        src = tmp_path / f"src-{version}"
        src.mkdir()
        (src / "w.bin").write_bytes(os.urandom(300_000))
        mover.save(src, f"iris:{version}")
        mover.push(f"iris:{version}")
    mover.set_alias("iris:v1", "prod")
    mover.push("iris@prod")
    mover.set_alias("iris:v2", "prod")
    return mover, _machine(tmp_path, "admin", remote)


def _assert_sound(tmp_path: Path, remote: dict[str, Any]) -> dict[str, Tag]:
    """Every remote alias names a version the remote lists, verify_remote finds nothing,
    and a fresh machine pulls every alias whole. Returns the aliases."""
    check = _machine(tmp_path, f"check-{uuid.uuid4().hex[:6]}", remote)
    aliases = check.aliases_remote()
    listed = set(check.list_remote())
    stranded = {a: t for a, t in aliases.items() if t not in listed}
    assert not stranded, f"aliases naming deleted versions: {stranded}"
    report = check.verify_remote()
    assert report.ok and not report.broken_aliases, report
    for alias in aliases:
        check.pull(alias)
    assert check.verify().ok
    return aliases


def _is_lock_listing(when: str, verb: str, key: str) -> bool:
    return when == "after" and verb == "list_times" and key == LOCKS


def test_an_alias_moved_while_its_version_is_deleted(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    """delete_remote has found no alias on iris:v2 and is about to delete its ref; only
    then does a push move iris@prod to v2. The delete's lock keeps the move out until the
    ref is gone, and the move then finds v2 missing (NotFound): the alias stays on v1."""
    mover, admin = _setup(tmp_path, remote)
    deleting, mover_on = threading.Event(), threading.Event()

    def admin_hook(when: str, verb: str, key: str) -> None:
        if when == "before" and verb == "delete" and key == "refs/iris/v2":
            deleting.set()
            _wait(mover_on, "moved the alias or met the delete's lock")

    def mover_hook(when: str, verb: str, key: str) -> None:
        if _is_lock_listing(when, verb, key):
            mover_on.set()  # it has looked at the locks (and seen the delete's)

    d = Party("delete", lambda: admin.delete_remote("iris:v2"), admin_hook)
    m = Party("move", lambda: mover.push("iris@prod"), mover_hook)
    d.start()
    _wait(deleting, "reached its delete")
    m.start()
    m.done.wait(PAUSE)
    mover_on.set()  # (without a lock the move finished here)
    d.join(PAUSE)
    m.join(PAUSE)
    aliases = _assert_sound(tmp_path, remote)
    assert (d.outcome, m.outcome) == ("ok", "NotFound"), (d.error, m.error)
    assert "iris:v2" in str(m.error)
    assert aliases == {"iris@prod": Tag("iris", "v1")}
    assert admin.list_remote() == [Tag("iris", "v1")]


def test_a_version_deleted_while_an_alias_moves_to_it(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    """A push has checked that iris:v2 is on the remote and is about to move iris@prod
    there; only then does delete_remote("iris:v2") look at the aliases. The move's lock
    keeps the delete waiting until the alias has moved, and the delete then refuses
    (ModelExists naming iris@prod): v2 stays, and the alias pulls."""
    mover, admin = _setup(tmp_path, remote)
    moving, admin_on = threading.Event(), threading.Event()

    def mover_hook(when: str, verb: str, key: str) -> None:
        if when == "before" and verb == "put_if_match" and key == "aliases/iris/prod":
            moving.set()
            _wait(admin_on, "deleted the version or met the move's lock")

    def admin_hook(when: str, verb: str, key: str) -> None:
        if _is_lock_listing(when, verb, key) or (verb == "delete" and key == "refs/iris/v2"):
            admin_on.set()

    m = Party("move", lambda: mover.push("iris@prod"), mover_hook)
    d = Party("delete", lambda: admin.delete_remote("iris:v2"), admin_hook)
    m.start()
    _wait(moving, "reached its move")
    d.start()
    d.join(PAUSE)
    m.join(PAUSE)
    aliases = _assert_sound(tmp_path, remote)
    assert (m.outcome, d.outcome) == ("ok", "ModelExists"), (m.error, d.error)
    assert isinstance(d.error, ModelExists) and "iris@prod" in str(d.error)
    assert aliases == {"iris@prod": Tag("iris", "v2")}
    assert set(admin.list_remote()) == {Tag("iris", "v1"), Tag("iris", "v2")}


def test_remote_gc_while_an_alias_moves_and_its_version_is_deleted(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    """Remote gc has read the aliases (iris@prod -> v1) and stops before listing the
    refs; meanwhile delete_remote("iris:v2") checks the aliases, a push moves iris@prod to
    v2, the delete removes v2's ref, and gc goes on. Without locks gc would free v2's
    bytes under the moved alias. With them, delete and move wait for gc (exclusive), then
    one of them wins and the other refuses; gc freed nothing an alias reaches."""
    mover, admin = _setup(tmp_path, remote)
    gc_read_aliases, admin_step = threading.Event(), threading.Event()
    admin_on, mover_on = threading.Event(), threading.Event()  # done, or met a lock

    def gc_hook(when: str, verb: str, key: str) -> None:
        if when == "after" and verb == "list" and key == "aliases":
            gc_read_aliases.set()
            _wait(admin_on, "deleted or met gc's lock")
            _wait(mover_on, "moved or met gc's lock")

    def admin_hook(when: str, verb: str, key: str) -> None:
        if _is_lock_listing(when, verb, key):
            admin_on.set()
            admin_step.set()
        if when == "before" and verb == "delete" and key == "refs/iris/v2":
            admin_step.set()  # the aliases are checked; the move may come now
            _wait(mover_on, "moved or met a lock")

    def mover_hook(when: str, verb: str, key: str) -> None:
        if _is_lock_listing(when, verb, key):
            mover_on.set()

    def then(work: Callable[[], object], event: threading.Event) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            finally:
                event.set()

        return run

    gc_machine = _machine(tmp_path, "gc", remote)
    g = Party("gc", lambda: gc_machine.gc_remote(), gc_hook)
    d = Party("delete", then(lambda: admin.delete_remote("iris:v2"), admin_on), admin_hook)
    m = Party("move", then(lambda: mover.push("iris@prod"), mover_on), mover_hook)
    g.start()
    _wait(gc_read_aliases, "read the aliases")
    d.start()
    _wait(admin_step, "checked the aliases or met gc's lock")
    m.start()
    for party in (g, d, m):
        party.join(PAUSE)
    assert g.outcome == "ok", g.error
    aliases = _assert_sound(tmp_path, remote)
    outcomes = (d.outcome, m.outcome)
    assert outcomes in {("ok", "NotFound"), ("ModelExists", "ok")}, (d.error, m.error)
    if outcomes == ("ok", "NotFound"):
        assert aliases == {"iris@prod": Tag("iris", "v1")}
    else:
        assert aliases == {"iris@prod": Tag("iris", "v2")}


def test_parties_leave_no_lock_behind(tmp_path: Path, remote: dict[str, Any]) -> None:
    """A move of a version the remote holds and a delete each take and give back a lock."""
    mover, admin = _setup(tmp_path, remote)
    seen: list[str] = []

    def hook(when: str, verb: str, key: str) -> None:
        if when == "before" and verb == "put_if_absent" and key.startswith(LOCKS + "/"):
            seen.append(threading.current_thread().name)

    for work in (lambda: mover.push("iris@prod"), lambda: admin.delete_remote("iris:v1")):
        party = Party("one", work, hook)
        party.start()
        party.join(PAUSE)
        assert party.outcome == "ok", party.error
    assert seen == ["party-one", "party-one"]
    assert open_transport(remote["url"], remote["options"]).list(LOCKS) == []


def test_a_version_replaced_before_the_move_takes_its_lock(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    """A push of iris@prod has seen iris:v2 on the remote (model A); before it takes its
    lock, iris:v2 is deleted and another machine pushes a different model under iris:v2.
    The move checks the version's ref again under its lock, finds model B, and refuses
    (ModelExists): the alias is not pointed at a version whose model is not the one it
    names."""
    mover, admin = _setup(tmp_path, remote)
    other = _machine(tmp_path, "other", remote)
    src = tmp_path / "src-other"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(100_000))
    other.save(src, "iris:v2")
    replaced: list[bool] = []

    def mover_hook(when: str, verb: str, key: str) -> None:
        locking = when == "before" and verb == "put_if_absent" and key.startswith(LOCKS + "/")
        if locking and not replaced:
            replaced.append(True)
            admin.delete_remote("iris:v2")  # (hooked too: the guard stops recursion)
            other.push("iris:v2")

    m = Party("move", lambda: mover.push("iris@prod"), mover_hook)
    m.start()
    m.join(PAUSE)
    assert replaced and m.outcome == "ModelExists", m.error
    assert "iris:v2" in str(m.error)
    aliases = _assert_sound(tmp_path, remote)
    assert aliases == {"iris@prod": Tag("iris", "v1")}
