"""Many machines, one remote: concurrent pushes from several processes, and a push killed
with SIGKILL half-way (S3 on moto at 127.0.0.1, and file://)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from _helpers import write_files

import modelvault
from modelvault import remotes

pytestmark = pytest.mark.slow

# A child process: wait for the go file, then save FOLDER as TAG in its own STORE and push.
_PUSHER = textwrap.dedent(
    """
    import os, sys, time
    import modelvault
    store_path, folder, tag, go = sys.argv[1:5]
    store = modelvault.Store(store_path)
    if not store.list(tag.split(":")[0]):
        store.save(folder, tag)
    while not os.path.exists(go):
        time.sleep(0.01)
    try:
        result = store.push(tag)
    except modelvault.ModelExists:
        print("exists")
    else:
        print("pushed", result.objects)
    """
)

# A child that pushes one pack at a time and SIGKILLs itself once the first pack landed.
_KILLED = textwrap.dedent(
    """
    import os, signal, sys
    import modelvault
    store = modelvault.Store(sys.argv[1])
    def progress(p):
        if p.objects:  # the first pack has landed (the first report, totals only, has none)
            print("landed", p.objects, p.bytes, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    store.push(sys.argv[2], jobs=1, progress=progress)
    print("finished", flush=True)
    """
)


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


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _run_all(args: list[list[str]], go: Path) -> list[str]:
    procs = [
        subprocess.Popen([sys.executable, "-c", _PUSHER, *a, str(go)], stdout=subprocess.PIPE)
        for a in args
    ]
    time.sleep(0.5)
    go.touch()
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        outs.append(out.decode().strip())
    return outs


def test_concurrent_pushes_of_one_name_all_land(tmp_path: Path, remote: dict[str, Any]) -> None:
    rng = random.Random(7)
    base = rng.randbytes(2 << 20)  # shared by every version: the processes upload it at once
    args, sources = [], {}
    for i in range(4):
        src = write_files(
            tmp_path / f"src{i}", {"base.bin": base, "own.bin": rng.randbytes(1 << 20)}
        )
        store = _store(tmp_path / f"store{i}", remote)
        args.append([str(store.path), str(src), f"family:v{i}"])
        sources[f"v{i}"] = src
    outs = _run_all(args, tmp_path / "go")
    assert all(o.startswith("pushed") for o in outs), outs

    reader = _store(tmp_path / "reader", remote)
    assert sorted(t.version or "" for t in reader.list_remote(name="family")) == sorted(sources)
    for version, src in sources.items():
        reader.pull(f"family:{version}")
        assert _files(Path(reader.get(f"family:{version}").path)) == _files(src)
    assert reader.verify().ok


def test_concurrent_pushes_of_one_tag_have_one_winner(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    args = []
    for i in range(3):
        src = write_files(tmp_path / f"src{i}", {"w.bin": os.urandom(300_000)})
        store = _store(tmp_path / f"store{i}", remote)
        args.append([str(store.path), str(src), "race:v1"])
    outs = _run_all(args, tmp_path / "go")
    assert sorted(o.split()[0] for o in outs) == ["exists", "exists", "pushed"], outs
    winner = next(a for a, o in zip(args, outs, strict=True) if o.startswith("pushed"))
    reader = _store(tmp_path / "reader", remote)
    reader.pull("race:v1")
    assert reader.get("race:v1").id == modelvault.Store(winner[0]).get("race:v1").id


def test_killed_push_leaves_no_tag_and_resumes(tmp_path: Path, remote: dict[str, Any]) -> None:
    store = _store(tmp_path / "store", remote)
    shared = os.urandom(3 << 20)
    store.save(write_files(tmp_path / "base", {"a.bin": shared}), "base:v1")
    src = write_files(tmp_path / "m", {"a.bin": shared, "b.bin": os.urandom(3 << 20)})
    store.save(src, "m:v1")  # its objects now sit in two local packs: two packs to send

    child = subprocess.run(
        [sys.executable, "-c", _KILLED, str(store.path), "m:v1"],
        capture_output=True,
        timeout=300,
    )
    assert child.returncode == -9, child.stderr.decode()
    assert child.stdout.decode().startswith("landed") and "finished" not in child.stdout.decode()
    assert store.list_remote() == []

    full = store.push("m:v1", (tmp_path / "elsewhere").as_uri())  # the same push, from scratch
    resumed = store.push("m:v1")
    assert 0 < resumed.sent < 0.7 * full.sent
    assert store.list_remote() == [modelvault.Tag("m", "v1")]
    reader = _store(tmp_path / "reader", remote)
    reader.pull("m:v1")
    assert _files(Path(reader.get("m:v1").path)) == _files(src)
