"""Crash sweep: every writing operation is killed (SIGKILL) at many moments, and made to
fail or die at every rename, link, unlink and fsync it makes; the store must stay sound.

Two sweeps, both on copies of the same templates (tests/harness/_world.py):

- **random moments**: each operation of ``_ops.OPS`` runs in a child forked from a
  server that has imported modelvault; its duration is measured first, then it is
  killed at ``KILLS`` seeded moments spread over that duration (one per slice, at a
  random point of the slice), of which at least ``MIN_LANDED`` must land mid-operation;
- **every call** (strace's fault injection, ``-e inject=CALL:error=EIO:when=N`` and
  ``-e inject=CALL:signal=SIGKILL:when=N``): the calls of save, import, pull, push and gc
  are counted first, then N sweeps over all of them. strace counts per call and per
  thread, so N runs to the largest count of any one thread: each call is the Nth of
  its thread for one of the N.

After each fault: ``verify().ok``; every tag whole (reads back byte-exact) or absent;
for push, every tag the remote lists pulls into an empty store byte-exact; the
operation re-run succeeds; gc then removes every temporary and keeps every tag.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import _ops
import pytest
from _figures import record
from _ops import OPS, ForkServer
from _procs import leftovers
from _world import World, cases, check_clean, fresh_dirs

from modelvault import Store

KILLS = 25  # attempted per operation; at least MIN_LANDED must land mid-operation
MIN_LANDED = 20
SEED = 16


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    fs = ForkServer(tmp_path_factory.mktemp("fork-server") / "children.log")
    try:
        yield fs
    finally:
        fs.close()


def kill_delays(op: str, duration: float, kills: int = KILLS) -> list[float]:
    """``kills`` seeded moments spread over ``duration`` (its first 90%: the measure
    includes the child's exit): one in each equal slice."""
    rng = random.Random(f"{SEED}-{op}")
    return [0.9 * duration * (i + rng.random()) / kills for i in range(kills)]


@pytest.mark.slow
@pytest.mark.parametrize("op", OPS)
def test_kill_at_random_moments(op: str, world: World, server: ForkServer, tmp_path: Path) -> None:
    case = cases(world)[op]
    times = []
    for i in range(3):  # measure the operation's duration, and check a complete run
        d = fresh_dirs(tmp_path, f"measure{i}")
        code, sig, elapsed = server.run(op, d["store"], case.setup(d))
        assert (code, sig) == (0, None), server.errors()
        assert case.check(d), f"a complete {op} must show its effect"
        times.append(elapsed)
        shutil.rmtree(d["store"].parent)
    duration = min(times)  # a busy machine only ever makes a run slower
    delays = kill_delays(op, duration)
    extra = random.Random(f"{SEED}-{op}-extra")
    landed = tried = 0
    while tried < len(delays) or (landed < MIN_LANDED and tried < 3 * KILLS):
        # a loaded machine may finish some runs before their kill: then kill earlier
        delay = delays[tried] if tried < len(delays) else 0.5 * duration * extra.random()
        d = fresh_dirs(tmp_path, f"kill{tried}")
        tried += 1
        code, sig, _ = server.run(op, d["store"], case.setup(d), kill_after=delay)
        assert sig == signal.SIGKILL or code == 0, (code, sig, server.errors()[-3000:])
        landed += sig == signal.SIGKILL
        present = case.check(d)
        case.rerun(d, present)
        check_clean(d["store"], case.known)
        shutil.rmtree(d["store"].parent)
    record(
        f"kill -9 at random moments: {op}: {landed} of {tried} kills landed mid-operation "
        f"(operation {duration * 1000:.0f} ms), every one survived"
    )
    assert landed >= MIN_LANDED, f"only {landed} of {tried} kills landed while {op} ran"


# -- strace: a fault at every rename / link / unlink / fsync --------------------------

CALLS = (
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "unlink",
    "unlinkat",
    "fsync",
    "fdatasync",
)
STRACE_OPS = ("save", "import", "pull", "push", "gc")
_LINE = re.compile(r"^(\d+)\s+([a-z0-9_]+)\(")


def _strace(
    d: dict[str, Path], op: str, args: dict[str, object], options: list[str]
) -> subprocess.CompletedProcess[str]:
    cmd = [
        "strace", "-f", "-qq", *options,
        sys.executable, _ops.__file__, "once", op, str(d["store"]), json.dumps(args),
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def count_calls(op: str, world: World, root: Path) -> dict[str, int]:
    """For each call of :data:`CALLS` the operation makes: the most any thread makes."""
    case = cases(world)[op]
    d = fresh_dirs(root, "count")
    trace = root / "trace.txt"
    done = _strace(d, op, case.setup(d), ["-o", str(trace), "-e", f"trace={','.join(CALLS)}"])
    assert done.returncode == 0, done.stderr
    per_thread: Counter[tuple[str, str]] = Counter()
    for line in trace.read_text().splitlines():
        m = _LINE.match(line)
        if m:
            per_thread[(m.group(2), m.group(1))] += 1
    most: dict[str, int] = {}
    for (call, _), n in per_thread.items():
        most[call] = max(most.get(call, 0), n)
    shutil.rmtree(d["store"].parent)
    return most


@pytest.mark.slow
@pytest.mark.parametrize("op", STRACE_OPS)
def test_fault_at_every_call(op: str, world: World, tmp_path: Path) -> None:
    case = cases(world)[op]
    most = count_calls(op, world, tmp_path)
    assert most, f"{op} made none of {CALLS}"
    outcomes: Counter[str] = Counter()
    runs = 0
    for call, n in sorted(most.items()):
        for nth in range(1, n + 1):
            for how in ("error=EIO", "signal=SIGKILL"):
                runs += 1
                d = fresh_dirs(tmp_path, f"{call}-{nth}-{how[:5]}")
                inject = ["-o", os.devnull, "-e", f"trace={call}"]
                inject += ["-e", f"inject={call}:{how}:when={nth}"]
                done = _strace(d, op, case.setup(d), inject)
                where = f"{op} with {call} #{nth} {how}: exit {done.returncode}\n{done.stderr}"
                # 0: the fault was harmless; 4: a modelvault error; 5: an OSError (EIO);
                # -9: killed at the call. 6 (any other exception) is a bug.
                assert done.returncode in (0, 4, 5, -signal.SIGKILL), where
                outcomes[{0: "ok", 4: "error", 5: "oserror"}.get(done.returncode, "killed")] += 1
                present = case.check(d)
                case.rerun(d, present)
                check_clean(d["store"], case.known)
                shutil.rmtree(d["store"].parent)
    calls = ", ".join(f"{c} x{n}" for c, n in sorted(most.items()))
    record(
        f"strace faults: {op}: {runs} runs ({calls}; EIO and SIGKILL at each) survived "
        f"(outcomes: {dict(outcomes)})"
    )


@pytest.mark.slow
def test_gc_removes_temporaries_in_remote_caches(world: World, tmp_path: Path) -> None:
    """A push killed at any rename leaves temporaries in the store's cache of the remote
    (``remotes/<key>/``): gc must remove them as it does elsewhere in the store."""
    case = cases(world)["push"]
    most = count_calls("push", world, tmp_path)
    left = {}
    for nth in range(1, most["rename"] + 1):
        d = fresh_dirs(tmp_path, f"rename-{nth}")
        options = ["-o", os.devnull, "-e", "trace=rename"]
        done = _strace(
            d, "push", case.setup(d), [*options, "-e", f"inject=rename:signal=SIGKILL:when={nth}"]
        )
        assert done.returncode == -signal.SIGKILL, done.stderr
        Store(d["store"]).gc()
        left[nth] = leftovers(d["store"])
    assert all(not files for files in left.values()), left


# An I/O error (EIO) at any rename, link, unlink or fsync of a save is a ModelVaultError
# (StorageError; it was a raw OSError), and a save that fails publishes nothing (a save
# whose only failure was removing a temporary's lock file after publishing used to report
# failure although the tag was published)
@pytest.mark.slow
def test_io_errors_are_modelvault_errors_and_a_failed_save_publishes_nothing(
    world: World, tmp_path: Path
) -> None:
    case = cases(world)["save"]
    most = count_calls("save", world, tmp_path)
    wrong = []
    for call, n in sorted(most.items()):
        for nth in range(1, n + 1):
            d = fresh_dirs(tmp_path, f"{call}-{nth}")
            options = ["-o", os.devnull, "-e", f"trace={call}"]
            done = _strace(
                d, "save", case.setup(d), [*options, "-e", f"inject={call}:error=EIO:when={nth}"]
            )
            published = "m:v1" in {str(m.tag) for m in Store(d["store"]).list()}
            if done.returncode not in (0, 4) or (done.returncode and published):
                last = done.stderr.strip().splitlines()[-1:]
                wrong.append((call, nth, done.returncode, published, last))
    assert not wrong, "\n".join(map(str, wrong))
