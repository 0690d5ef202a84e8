"""Remote aliases on real backends (moto's S3 server on 127.0.0.1, file://, memory://):
push and pull of ``name@alias``, ``aliases_remote``, bad remotes, two machines moving one
alias at once, and the cost of a move (API.md "Aliases")."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault import IntegrityError, ModelExists, NotFound, Tag, remotes
from modelvault.aliases import AliasValue
from modelvault.remote.aliases import MOVE_ATTEMPTS, move_remote_alias
from modelvault.remote.transport import Metered, Retrying, open_transport
from modelvault.repo.layout import alias_key, ref_key
from modelvault.testing.faults import FaultPlan, FaultyTransport

BACKENDS = ["s3", "file", "memory"]


@pytest.fixture(params=BACKENDS)
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """A fresh remote: ``{"kind", "url", "options"}``."""
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        return {"kind": "s3", "url": bucket["url"] + "/models", "options": bucket["options"]}
    if request.param == "file":
        return {"kind": "file", "url": (tmp_path / "remote").as_uri(), "options": {}}
    return {"kind": "memory", "url": f"memory://mv-{uuid.uuid4().hex[:8]}", "options": {}}


def _store(tmp_path: Path, name: str, remote: dict[str, Any]) -> modelvault.Store:
    store = modelvault.Store(tmp_path / name)
    remotes.add("origin", remote["url"], store=store, **remote["options"])
    return store


def _save(store: modelvault.Store, tmp_path: Path, tag: str, body: bytes) -> modelvault.Model:
    src = tmp_path / f"src-{store.path.name}-{tag.replace(':', '-')}"
    src.mkdir()
    (src / "w.bin").write_bytes(body)
    (src / "config.json").write_text(json.dumps({"tag": tag}))
    return store.save(src, tag)


def _transport(remote: dict[str, Any]) -> Retrying:
    return Retrying(open_transport(remote["url"], remote["options"]))


def test_push_and_pull_an_alias(tmp_path: Path, remote: dict[str, Any]) -> None:
    a, b = _store(tmp_path, "a", remote), _store(tmp_path, "b", remote)
    v1 = _save(a, tmp_path, "iris:v1", os.urandom(50_000))
    v2 = _save(a, tmp_path, "iris:v2", os.urandom(50_000))
    assert a.aliases_remote() == {}
    a.set_alias("iris:v1", "prod")
    a.push("iris@prod")
    assert a.aliases_remote() == {"iris@prod": Tag("iris", "v1")}
    assert a.list_remote() == [Tag("iris", "v1")]  # list_remote: versions only
    doc = json.loads(_transport(remote).get(alias_key("iris", "prod")))
    assert doc == {"version": "v1", "model": v1.id}  # the same bytes as a local alias

    b.pull("iris@prod")
    assert b.aliases() == {"iris@prod": Tag("iris", "v1")}
    assert b.get("iris@prod").id == v1.id
    assert [str(m.tag) for m in b.list()] == ["iris:v1"]

    a.set_alias("iris:v2", "prod")  # promote: push moves the remote alias
    a.push("iris@prod")
    assert a.aliases_remote("origin", "iris") == {"iris@prod": Tag("iris", "v2")}
    b.pull("iris@prod")
    assert b.get("iris@prod").id == v2.id  # the local alias follows the remote's
    assert b.aliases() == {"iris@prod": Tag("iris", "v2")}

    a.set_alias("iris:v1", "prod")  # roll back: v1 is there already, only the alias moves
    result = a.push("iris@prod")
    assert result.objects == 0
    assert a.aliases_remote() == {"iris@prod": Tag("iris", "v1")}
    assert a.aliases_remote(name="other") == {}


def test_pull_errors(tmp_path: Path, remote: dict[str, Any]) -> None:
    a, b = _store(tmp_path, "a", remote), _store(tmp_path, "b", remote)
    _save(a, tmp_path, "iris:v1", b"x" * 5000)
    _save(a, tmp_path, "iris:v2", b"y" * 5000)
    with pytest.raises(NotFound, match="iris@prod"):  # an empty remote
        b.pull("iris@prod")
    a.push("iris:v1")
    with pytest.raises(NotFound, match="iris@prod"):
        b.pull("iris@prod")
    a.set_alias("iris:v2", "prod")
    a.push("iris@prod")
    t = _transport(remote)
    t.delete(ref_key(Tag("iris", "v2")))  # a damaged remote: the alias names a lost version
    with pytest.raises(NotFound, match=r"iris@prod.*iris:v2"):
        b.pull("iris@prod")
    assert b.list() == [] and b.aliases() == {}
    t.put(alias_key("iris", "prod"), b'{"version": 7}')  # a damaged alias document
    with pytest.raises(IntegrityError, match="iris@prod"):
        b.pull("iris@prod")
    assert a.aliases_remote() == {}  # skipped, with a warning
    t.put(alias_key("iris", "prod"), AliasValue("iris", "prod", "v1", b"\1" * 32).encode())
    with pytest.raises(IntegrityError, match="iris@prod"):  # names another model than v1's
        b.pull("iris@prod")
    assert b.list() == [] and b.aliases() == {}
    with pytest.raises(modelvault.InvalidTag):
        b.pull("iris@no:pe")


def test_a_damaged_remote_alias_is_replaced_by_a_push(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    """What the damaged alias's error advises works: ``mv alias set`` then a push of
    ``name@alias`` replaces the document, and the alias pulls again."""
    a, b = _store(tmp_path, "a", remote), _store(tmp_path, "b", remote)
    v1 = _save(a, tmp_path, "iris:v1", b"x" * 5000)
    a.set_alias("iris:v1", "prod")
    a.push("iris@prod")
    _transport(remote).put(alias_key("iris", "prod"), b"\x00 not json")
    with pytest.raises(IntegrityError, match=r"mv alias set iris@prod iris:VERSION.*mv push"):
        b.pull("iris@prod")
    a.push("iris@prod")  # the local alias says v1: the damaged document is replaced
    b.pull("iris@prod")
    assert b.get("iris@prod").id == v1.id
    assert a.aliases_remote() == {"iris@prod": Tag("iris", "v1")}


def test_pull_alias_onto_a_store_holding_another_model(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    a, b = _store(tmp_path, "a", remote), _store(tmp_path, "b", remote)
    _save(a, tmp_path, "iris:v1", b"a" * 5000)
    _save(b, tmp_path, "iris:v1", b"b" * 5000)
    a.set_alias("iris:v1", "prod")
    a.push("iris@prod")
    with pytest.raises(ModelExists):
        b.pull("iris@prod")
    assert b.aliases() == {}


def test_delete_keeps_a_pulled_alias_version(tmp_path: Path, remote: dict[str, Any]) -> None:
    a, b = _store(tmp_path, "a", remote), _store(tmp_path, "b", remote)
    _save(a, tmp_path, "iris:v1", b"a" * 5000)
    a.set_alias("iris:v1", "prod")
    a.push("iris@prod")
    b.pull("iris@prod")
    with pytest.raises(ModelExists, match="iris@prod"):
        b.delete("iris")


def test_a_move_is_one_conditional_write(tmp_path: Path, remote: dict[str, Any]) -> None:
    """The benchmark note of issue 19: moving an alias costs one read and one conditional
    write (two requests), whatever the remote holds; setting it to what it says, one read."""
    plan = FaultPlan(seed=0, rate=0.0)  # injects nothing: counts each verb's calls
    meter = Metered(FaultyTransport(open_transport(remote["url"], remote["options"]), plan))
    t = Retrying(meter)
    mid = bytes(32)
    move_remote_alias(t, AliasValue("iris", "prod", "v1", mid))  # create
    assert meter.requests == 2
    assert dict(plan.calls) == {
        ("get_versioned", "aliases/iris/prod"): 1,
        ("put_if_match", "aliases/iris/prod"): 1,
    }
    for i in range(2, 12):  # ten moves
        move_remote_alias(t, AliasValue("iris", "prod", f"v{i}", mid))
    assert meter.requests == 2 + 10 * 2
    assert plan.calls[("put_if_match", "aliases/iris/prod")] == 11
    before = meter.requests
    assert not move_remote_alias(t, AliasValue("iris", "prod", "v11", mid))  # already so
    assert meter.requests == before + 1
    assert t.atomic_swap


class _Rival(Metered):
    """A transport that lets another writer move the alias (a real conditional write on
    the same remote) just before each of its first ``wins`` conditional writes."""

    def __init__(self, inner: Any, wins: int) -> None:
        super().__init__(inner)
        self.wins = wins

    def put_if_match(self, key: str, data: bytes, token: str | None) -> bool:
        if self.wins:
            self.wins -= 1
            _, now = self.inner.get_versioned(key)
            rival = AliasValue("iris", "prod", f"r{self.wins}", bytes(32)).encode()
            assert self.inner.put_if_match(key, rival, now)
        return super().put_if_match(key, data, token)


@pytest.mark.parametrize("wins", [MOVE_ATTEMPTS - 1, MOVE_ATTEMPTS])
def test_a_move_outlasts_rivals_then_gives_up(
    remote: dict[str, Any], wins: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each refused move reads the alias again and retries after a jittered, doubling
    wait: a move that loses nine times in a row still lands; one that loses every one of
    its attempts raises RemoteError and leaves the rival's alias as it was."""
    from modelvault.remote import aliases

    waits: list[float] = []
    monkeypatch.setattr(aliases, "_sleep", waits.append)
    first = AliasValue("iris", "prod", "v0", bytes(32))
    _transport(remote).put(alias_key("iris", "prod"), first.encode())  # the rivals replace it
    t = _Rival(_transport(remote), wins)
    mine = AliasValue("iris", "prod", "v1", bytes([1]) * 32)
    if wins < MOVE_ATTEMPTS:
        assert move_remote_alias(t, mine)
        assert t.requests == 2 * MOVE_ATTEMPTS  # each attempt: one read, one conditional write
        assert AliasValue.decode("iris", "prod", t.get(alias_key("iris", "prod"))) == mine
    else:
        with pytest.raises(
            modelvault.errors.RemoteError, match=f"other writers moved it {MOVE_ATTEMPTS} times"
        ):
            move_remote_alias(t, mine)
        assert t.requests == 2 * MOVE_ATTEMPTS
        assert AliasValue.decode("iris", "prod", t.get(alias_key("iris", "prod"))).version == "r0"
    # a wait before every attempt but the first, each below its doubled bound, jittered
    assert len(waits) == MOVE_ATTEMPTS - 1
    assert all(0 <= w <= aliases.MOVE_BACKOFF * 2**i for i, w in enumerate(waits))
    assert len(set(waits)) == len(waits)


def test_push_of_an_alias_counts_its_requests(tmp_path: Path, remote: dict[str, Any]) -> None:
    """push("name@alias") of a version the remote holds: the name's shared lock (create,
    list ``locks/``, delete: no other lock to read), the ref check, the read and the
    conditional write of the alias, beside the session's own requests."""
    a = _store(tmp_path, "a", remote)
    _save(a, tmp_path, "iris:v1", b"a" * 5000)
    _save(a, tmp_path, "iris:v2", b"b" * 5000)
    a.push("iris:v1")
    a.push("iris:v2")
    plain = a.push("iris:v1").requests  # nothing to send: the session's fixed cost
    a.set_alias("iris:v2", "prod")
    moved = a.push("iris@prod").requests
    # lock: put_if_absent, list_times, delete; then get(ref) (read again under the lock),
    # get_versioned(alias), put_if_match(alias)
    assert moved == plain + 3 + 3


def _remote_mover(url: str, options: dict[str, Any], version: str, rounds: int) -> None:
    t = Retrying(open_transport(url, options))
    value = AliasValue("iris", "prod", version, bytes([int(version[1:])]) * 32)
    for _ in range(rounds):
        move_remote_alias(t, value)
        move_remote_alias(t, AliasValue("iris", "prod", "v9", bytes(32)))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["s3", "file"])
def test_two_processes_moving_one_remote_alias(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    """Two processes move one remote alias back and forth at once: every move is a
    conditional write, so the alias is always readable and ends on one of their values."""
    if kind == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        url, options = bucket["url"] + "/race", bucket["options"]
    else:
        url, options = (tmp_path / "race").as_uri(), {}
    t = Retrying(open_transport(url, options))
    move_remote_alias(t, AliasValue("iris", "prod", "v9", bytes(32)))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_remote_mover, args=(url, options, v, 15)) for v in ("v1", "v2")]
    for p in procs:
        p.start()
    seen = set()
    while any(p.is_alive() for p in procs):
        data, _ = t.get_versioned(alias_key("iris", "prod"))  # never absent, never torn
        seen.add(AliasValue.decode("iris", "prod", data).version)
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert seen <= {"v1", "v2", "v9"}
    final = AliasValue.decode("iris", "prod", t.get(alias_key("iris", "prod")))
    assert final.version == "v9" and final.model_id == bytes(32)


def _store_pusher(store_path: str, rounds: int) -> None:
    store = modelvault.Store(store_path)
    for _ in range(rounds):
        store.push("iris@prod")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["s3", "file"])
def test_two_machines_pushing_one_alias_at_once(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    """Two stores (machines) push ``iris@prod`` at once, each naming its own version: the
    remote alias ends on one of the two, and that version pulls."""
    if kind == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        remote = {"url": bucket["url"] + "/two", "options": bucket["options"]}
    else:
        remote = {"url": (tmp_path / "two").as_uri(), "options": {}}
    a, b = _store(tmp_path, "a", remote), _store(tmp_path, "b", remote)
    va = _save(a, tmp_path, "iris:va", b"a" * 20000)
    vb = _save(b, tmp_path, "iris:vb", b"b" * 20000)
    a.set_alias("iris:va", "prod")
    b.set_alias("iris:vb", "prod")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_store_pusher, args=(str(s.path), 4)) for s in (a, b)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    final = a.aliases_remote()["iris@prod"]
    assert final in (va.tag, vb.tag)
    c = _store(tmp_path, "c", remote)
    c.pull("iris@prod")
    assert c.get("iris@prod").tag == final


def test_threads_moving_one_alias_on_memory(tmp_path: Path) -> None:
    """memory:// lives in one process: threads stand for the machines."""
    t = Retrying(open_transport(f"memory://race-{uuid.uuid4().hex[:8]}"))
    move_remote_alias(t, AliasValue("iris", "prod", "v9", bytes(32)))
    errors: list[BaseException] = []

    def mover(version: str) -> None:
        try:
            for _ in range(50):
                move_remote_alias(t, AliasValue("iris", "prod", version, bytes(32)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=mover, args=(v,)) for v in ("v1", "v2")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    final = AliasValue.decode("iris", "prod", t.get(alias_key("iris", "prod")))
    assert final.version in ("v1", "v2")


def test_a_lost_swap_is_retried_from_the_fresh_state(tmp_path: Path) -> None:
    """A move whose conditional write loses (another writer moved the alias between its
    read and its write) reads again and writes again: it is not silently dropped."""
    t = Retrying(open_transport((tmp_path / "r").as_uri()))
    key = alias_key("iris", "prod")
    rival = AliasValue("iris", "prod", "v2", bytes(32)).encode()
    inner = t.inner
    real = inner.get_versioned
    calls = {"n": 0}

    def racing_read(k: str) -> tuple[bytes, str]:
        got = real(k)
        calls["n"] += 1
        if calls["n"] == 1:  # another machine moves the alias right after our first read
            inner.put(key, rival)
        return got

    move_remote_alias(t, AliasValue("iris", "prod", "v9", bytes(32)))
    inner.get_versioned = racing_read  # type: ignore[method-assign]
    assert move_remote_alias(t, AliasValue("iris", "prod", "v1", bytes(32)))
    assert calls["n"] == 2  # refused once, then read again
    assert AliasValue.decode("iris", "prod", t.get(key)).version == "v1"


@pytest.mark.parametrize("seed", range(6))
def test_alias_push_under_faults_never_names_a_missing_version(tmp_path: Path, seed: int) -> None:
    """Errors, lost answers and slow writes injected under push("name@alias"): it either
    fails with RemoteError or succeeds, and the remote alias, whenever it exists, names a
    version the remote holds, which then pulls."""
    from modelvault.errors import RemoteError
    from modelvault.testing.faults import injected

    remote = {"url": (tmp_path / "remote").as_uri(), "options": {}}
    a = _store(tmp_path, "a", remote)
    for v in ("v1", "v2", "v3"):
        _save(a, tmp_path, f"iris:{v}", os.urandom(30_000))
    t = _transport(remote)
    outcomes = []
    for v in ("v1", "v2", "v3", "v1"):
        a.set_alias(f"iris:{v}", "prod")
        with injected(FaultPlan(seed=seed, rate=0.3, kinds=("error", "error-after", "slow"))):
            try:
                a.push("iris@prod")
                outcomes.append("ok")
            except RemoteError:
                outcomes.append("failed")
        with contextlib.suppress(NotFound):
            data, _ = t.get_versioned(alias_key("iris", "prod"))
            named = AliasValue.decode("iris", "prod", data)
            assert t.exists(ref_key(named.tag)), (seed, outcomes)
    a.push("iris@prod")  # without faults: lands
    b = _store(tmp_path, "b", remote)
    b.pull("iris@prod")
    assert b.get("iris@prod").id == a.get("iris:v1").id
