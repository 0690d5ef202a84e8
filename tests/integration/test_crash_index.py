"""kill -9 in the middle of an index merge (at a save's commit, and in gc's rebuild) and of
gc's repack: every tag still reads whole, verify passes, and the next save and gc put the
store back to one multi-pack index (docs/architecture.md, Crash safety)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _helpers import write_files
from _index_procs import GC_POINTS, MERGE_POINTS

from modelvault import Store
from modelvault.odb.packs import MERGE_AT

KiB = 1024
HERE = Path(__file__).parent


def _run_killed(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(HERE / "_index_procs.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, f"not killed at its point: {proc.stderr}"


def _sources(root: Path, n: int) -> dict[str, Path]:
    """``n`` models; model k holds blob k, blob k+1 (shared with model k+1) and a blob of
    its own, so each save writes one pack, and deleting every other model leaves packs
    about half dead."""
    rng = np.random.default_rng(18)
    blobs = [rng.bytes(96 * KiB) for _ in range(n + 1)]
    return {
        f"m:v{k}": write_files(
            root / f"s{k}",
            {"a.bin": blobs[k], "b.bin": blobs[k + 1], "own.bin": rng.bytes(96 * KiB)},
        )
        for k in range(n)
    }


def _reads_whole(path: Path, sources: dict[str, Path]) -> None:
    store = Store(path)
    assert sorted(str(m.tag) for m in store.list()) == sorted(sources)
    for tag, src in sources.items():
        model = store.get(tag)
        for f in src.iterdir():
            with model.open(f.name) as got:
                assert got.read() == f.read_bytes(), (tag, f.name)
    assert store.verify().ok


def _midx_count(path: Path) -> int:
    return len(list((path / "objects" / "packs").glob("multi-*.midx")))


@pytest.mark.slow
@pytest.mark.parametrize("point", MERGE_POINTS)
def test_kill_during_the_merge_at_commit_leaves_the_old_indexes_in_force(
    tmp_path: Path, point: str
) -> None:
    path = tmp_path / "store"
    sources = _sources(tmp_path, 2 * MERGE_AT)
    tags = list(sources)
    store = Store(path)
    for tag in tags[:-1]:  # one merge at MERGE_AT packs, then MERGE_AT - 1 uncovered
        store.save(sources[tag], tag)
    assert _midx_count(path) == 1
    last = tags[-1]
    _run_killed("save", str(path), str(sources[last]), last, "--kill-at", point)
    # the save itself was complete (the merge comes after the commit, before the ref):
    # the ref may be missing; every other tag reads whole
    listed = [str(m.tag) for m in Store(path).list()]
    done = dict(sources) if last in listed else {t: sources[t] for t in tags[:-1]}
    _reads_whole(path, done)
    Store(path).save(sources[last], last)
    _reads_whole(path, sources)
    Store(path).gc()
    assert _midx_count(path) == 1
    _reads_whole(path, sources)
    assert list((path / "objects" / "tmp").iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("point", GC_POINTS + MERGE_POINTS)
def test_kill_during_gc_sweep_repack_or_rebuild_never_loses_a_live_tag(
    tmp_path: Path, point: str
) -> None:
    path = tmp_path / "store"
    sources = _sources(tmp_path, 2 * MERGE_AT)
    store = Store(path)
    for tag, src in sources.items():
        store.save(src, tag)
    kept = {t: s for i, (t, s) in enumerate(sources.items()) if i % 2}
    for tag in sources:
        if tag not in kept:
            store.delete(tag)
    _run_killed("gc", str(path), "--kill-at", point)
    _reads_whole(path, kept)
    Store(path).gc()  # finishes the job
    assert _midx_count(path) == 1
    live = sum(f.stat().st_size for src in kept.values() for f in src.iterdir())
    assert Store(path).stats().stored_bytes < live * 1.1  # dead bytes left <= 5% of live
    _reads_whole(path, kept)
    assert list((path / "objects" / "tmp").iterdir()) == []
