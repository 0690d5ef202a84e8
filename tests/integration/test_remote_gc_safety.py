"""Remote gc against the worst: SIGKILLed at several points, and run beside pushes from
other processes (moto's S3 server on 127.0.0.1, and file://). Every tag still pulls."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault import remotes
from modelvault.remote.transport import open_transport
from modelvault.repo.layout import LOCKS, PACK_INDEX_KEY, PACKS

pytestmark = pytest.mark.slow


@pytest.fixture(params=["s3", "file"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        return {"url": bucket["url"] + "/shared", "options": bucket["options"]}
    return {"url": (tmp_path / "remote").as_uri(), "options": {}}


def _store(path: Path, remote: dict[str, Any]) -> modelvault.Store:
    store = modelvault.Store(path)
    remotes.add("origin", remote["url"], store=store, **remote["options"])
    return store


def _model(folder: Path, shared: bytes, seed: int, size: int = 512 << 10) -> Path:
    folder.mkdir(parents=True)
    (folder / "w.bin").write_bytes(shared + random.Random(seed).randbytes(size))
    return folder


def _all_pull(tmp_path: Path, remote: dict[str, Any], name: str) -> list[str]:
    """Pull every tag the remote lists into a fresh store and verify it; the tags."""
    fresh = _store(tmp_path / name, remote)
    tags = [str(t) for t in fresh.list_remote()]
    for tag in tags:
        fresh.pull(tag)
    assert fresh.verify().ok
    return tags


# A child that runs remote gc and SIGKILLs itself right after the N-th call of one verb
# on keys of one kind (the transport of this process only is wrapped; the gc is real).
_KILLED_GC = textwrap.dedent(
    """
    import json, os, signal, sys
    import modelvault
    from modelvault.remote.base import Transport
    from modelvault.remote.transport import wrapping

    store_path, verb, suffix, nth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    class Killing(Transport):
        def __init__(self, inner):
            self.inner, self.url, self.seen = inner, inner.url, 0
        def _hit(self, name, key):
            if name == verb and key.endswith(suffix) and "/locks/" not in "/" + key:
                self.seen += 1
                if self.seen == nth:
                    os.kill(os.getpid(), signal.SIGKILL)
        def put(self, key, data):
            self.inner.put(key, data); self._hit("put", key)
        def put_if_absent(self, key, data):
            return self.inner.put_if_absent(key, data)
        def get(self, key):
            return self.inner.get(key)
        def get_ranges(self, key, ranges):
            out = self.inner.get_ranges(key, ranges); self._hit("get_ranges", key); return out
        def list(self, prefix):
            return self.inner.list(prefix)
        def list_times(self, prefix):
            return self.inner.list_times(prefix)
        def delete(self, key):
            self.inner.delete(key); self._hit("delete", key)

    with wrapping(Killing):
        freed = modelvault.Store(store_path).gc_remote(jobs=1)
    print("finished", freed, flush=True)
    """
)

KILL_POINTS = [
    ("get_ranges", ".pack", 1),  # repacking: the first live objects read
    ("put", ".pack", 1),  # a repacked pack is up, its index not yet
    ("put", ".idx", 1),  # the repacked pack is visible, the old ones still are
    ("delete", ".idx", 1),  # the first old index is gone, its pack not yet
    ("delete", ".pack", 1),  # the first old pack is gone
    ("delete", ".idx", 2),  # half-way through the deletes
]


@pytest.mark.parametrize(("verb", "suffix", "nth"), KILL_POINTS)
def test_gc_killed_anywhere_leaves_every_tag_pullable(
    tmp_path: Path, remote: dict[str, Any], verb: str, suffix: str, nth: int
) -> None:
    store = _store(tmp_path / "a", remote)
    shared = random.Random(0).randbytes(128 << 10)
    for i in range(1, 5):
        store.save(_model(tmp_path / f"m{i}", shared, i), f"clf:v{i}")
        store.push(f"clf:v{i}")
    store.delete_remote("clf:v1")  # its pack holds the shared bytes: repacked
    store.delete_remote("clf:v3")  # its own pack: deleted whole
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_GC, str(store.path), verb, suffix, str(nth)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert _all_pull(tmp_path, remote, "after-kill") == ["clf:v4", "clf:v2"]
    # the dead gc's lock blocks no one on this machine; a new gc finishes the work
    freed = store.gc_remote()
    assert freed >= 0
    assert store.gc_remote() == 0
    report = store.verify_remote()
    assert report.ok, report
    t = open_transport(remote["url"], remote["options"])
    assert not t.list(LOCKS)
    indexed = {m.group(1) for k in t.list(PACKS) if (m := PACK_INDEX_KEY.fullmatch(k))}
    assert {k.rsplit("/", 1)[1].split(".")[0] for k in t.list(PACKS)} == indexed  # no orphans
    assert _all_pull(tmp_path, remote, "after-second-gc") == ["clf:v4", "clf:v2"]


# A pusher: wait for the go file, then save its model (shared bytes + its own) and push;
# prints "pushed" or "remote-error <message>". With a fifth argument (a file), it stops
# once its first pack is sent (it has decided what the remote holds, its tag is not
# published) until that file exists, so a gc can run in between.
_PUSHER = textwrap.dedent(
    """
    import os, sys, time
    import modelvault
    store_path, folder, tag, go = sys.argv[1:5]
    pause = sys.argv[5] if len(sys.argv) > 5 else None
    store = modelvault.Store(store_path)
    store.save(folder, tag)
    while not os.path.exists(go):
        time.sleep(0.005)

    def progress(p):
        global pause
        if pause is not None:  # at the first report (the totals, within the push's lock)
            print("paused", flush=True)
            deadline = time.monotonic() + 60
            while not os.path.exists(pause) and time.monotonic() < deadline:
                time.sleep(0.01)
            pause = None

    try:
        store.push(tag, progress=progress, jobs=1)
    except modelvault.RemoteError as exc:
        print("remote-error", exc, flush=True)
    else:
        print("pushed", flush=True)
    """
)

# The gc side: wait for the go file, then delete the round's base version and gc; with a
# fourth argument (a file), create it when done, and wait for a live lock only 1 s.
_GC = textwrap.dedent(
    """
    import os, sys, time
    import modelvault
    from modelvault.remote import locks
    store_path, tag, go = sys.argv[1:4]
    done = sys.argv[4] if len(sys.argv) > 4 else None
    if done is not None:
        locks.WAIT = 1.0
    store = modelvault.Store(store_path)
    while not os.path.exists(go):
        time.sleep(0.005)
    store.delete_remote(tag)
    try:
        print("freed", store.gc_remote(), flush=True)
    except modelvault.RemoteError as exc:
        print("remote-error", exc, flush=True)
    if done is not None:
        open(done, "w").close()
    """
)


def test_gc_in_the_middle_of_a_push_cannot_free_what_it_counts_on(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    """The classic race, forced: a push has read the remote's indexes (the base version
    holds the shared bytes, so it sends only its own) and stops before publishing; the
    base version is deleted and gc runs; then the push publishes. The push's shared lock
    makes gc give up (RemoteError naming the push), so the tag pulls whole."""
    admin = _store(tmp_path / "admin", remote)
    shared = random.Random(7).randbytes(1 << 20)
    admin.save(_model(tmp_path / "base", shared, 1), "base:v1")
    admin.push("base:v1")
    folder = _model(tmp_path / "p", shared, 2, size=256 << 10)
    path = tmp_path / "pusher"
    _store(path, remote)
    go, gc_done = tmp_path / "go", tmp_path / "gc-done"
    pusher = subprocess.Popen(
        [sys.executable, "-c", _PUSHER, str(path), str(folder), "p:v1", str(go), str(gc_done)],
        stdout=subprocess.PIPE,
        text=True,
    )
    go.touch()
    assert pusher.stdout is not None and pusher.stdout.readline().strip() == "paused"
    gc = subprocess.run(
        [sys.executable, "-c", _GC, str(admin.path), "base:v1", str(tmp_path / "go"), str(gc_done)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gc.stdout.startswith("remote-error"), gc.stdout + gc.stderr
    assert "push p:v1" in gc.stdout
    assert pusher.communicate(timeout=120)[0].strip() == "pushed"
    assert _all_pull(tmp_path, remote, "check") == ["p:v1"]
    assert admin.gc_remote(repack_unused=0.1) > 256 << 10  # nothing in flight: base:v1 goes
    assert _all_pull(tmp_path, remote, "check2") == ["p:v1"]


def test_pushes_beside_remote_gc_publish_whole_tags_or_fail(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    """Each round: a base version holding bytes S is on the remote; one process deletes
    it and runs gc while three others push models that hold S too (so each push may
    decide the remote already has S, exactly what gc is freeing). Every push either
    publishes a tag that pulls whole, or raises RemoteError."""
    admin = _store(tmp_path / "admin", remote)
    outcomes: list[str] = []
    for rnd in range(3):
        shared = random.Random(100 + rnd).randbytes(1 << 20)
        admin.save(_model(tmp_path / f"base{rnd}", shared, 1000 + rnd), f"base:r{rnd}")
        admin.push(f"base:r{rnd}")
        go = tmp_path / f"go{rnd}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _GC, str(admin.path), f"base:r{rnd}", str(go)],
                stdout=subprocess.PIPE,
                text=True,
            )
        ]
        for i in range(3):
            folder = _model(tmp_path / f"p{rnd}-{i}", shared, 10 * rnd + i, size=256 << 10)
            path = tmp_path / f"pusher{rnd}-{i}"
            _store(path, remote)
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        _PUSHER,
                        str(path),
                        str(folder),
                        f"p{i}:r{rnd}",
                        str(go),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        go.touch()
        outs = [p.communicate(timeout=180)[0].strip() for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        outcomes += outs
        listed = set(_all_pull(tmp_path, remote, f"check{rnd}"))
        for i, out in enumerate(outs[1:]):
            assert out.startswith(("pushed", "remote-error")), out
            assert (f"p{i}:r{rnd}" in listed) == out.startswith("pushed"), (out, listed)
        assert f"base:r{rnd}" not in listed
    assert sum(o.startswith("pushed") for o in outcomes) >= 1
    assert open_transport(remote["url"], remote["options"]).list(LOCKS) == []
    assert admin.verify_remote().ok
    json.dumps(outcomes)  # (kept for the failure message)
