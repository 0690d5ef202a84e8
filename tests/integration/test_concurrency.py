"""Several processes on one store: saves side by side, gc beside a save, two readers
materialising one model. Children (``_procs.py``) are released together through stdin;
where an exact interleaving matters one is held at a pause point of the real code."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _helpers import write_files
from _procs import Child, leftovers, waiting_for_lock

from modelvault import Store

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three 24 MiB models sharing a 12 MiB prefix, so their writers race on shared chunks."""
    rng = np.random.default_rng(5)
    shared = rng.bytes(12 * MiB)
    return [
        write_files(
            tmp_path_factory.mktemp(f"src{i}"),
            {"w.bin": shared + rng.bytes(12 * MiB), "config.json": f'{{"i": {i}}}'.encode()},
        )
        for i in range(3)
    ]


def _same_files(store: Store, tag: str, src: Path) -> bool:
    model = store.get(tag)
    for p in src.rglob("*"):
        if p.is_file():
            with model.open(p.relative_to(src).as_posix()) as f:
                if f.read() != p.read_bytes():
                    return False
    return True


def _said(out: str, word: str) -> list[str]:
    """The words after ``word`` on the child's line starting with it."""
    return next(line.split()[1:] for line in out.splitlines() if line.startswith(word + " "))


def _run_together(children: list[Child]) -> list[tuple[int, str, str]]:
    for c in children:
        c.expect("ready")
    for c in children:
        c.send()
    return [c.finish() for c in children]


@pytest.mark.slow
@pytest.mark.parametrize("tags", [("m", "m"), ("alpha", "beta")], ids=["same-name", "two-names"])
def test_two_processes_save_at_once(
    tmp_path: Path, sources: list[Path], tags: tuple[str, str]
) -> None:
    path = tmp_path / "store"
    # no Store(path) here: the children also race to create the store
    children = [
        Child("save", str(path), str(src), tag, "--wait")
        for src, tag in zip(sources[:2], tags, strict=True)
    ]
    results = _run_together(children)
    assert [code for code, _, _ in results] == [0, 0], results
    saved = [_said(out, "saved")[0] for _, out, _ in results]
    store = Store(path)
    assert sorted(str(m.tag) for m in store.list()) == sorted(saved)
    for tag, src in zip(saved, sources[:2], strict=True):
        assert _same_files(store, tag, src)
    assert store.verify().ok
    if tags[0] == tags[1]:
        assert len(store.list("m")) == 2  # two versions of one name


@pytest.mark.slow
def test_same_version_at_once_one_wins_whole(tmp_path: Path, sources: list[Path]) -> None:
    path = tmp_path / "store"
    Store(path)
    children = [Child("save", str(path), str(src), "m:v1", "--wait") for src in sources[:2]]
    results = _run_together(children)
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 3], results  # 3: ModelExists
    winner = next(i for i, (code, _, _) in enumerate(results) if code == 0)
    store = Store(path)
    assert store.get("m:v1").id == _said(results[winner][1], "saved")[1]
    assert _same_files(store, "m:v1", sources[winner])
    assert store.verify().ok
    store.gc()  # the loser's objects go
    assert leftovers(path) == []
    assert _same_files(store, "m:v1", sources[winner])


def _wait_until(condition: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


@pytest.mark.slow
def test_gc_beside_a_save_never_frees_what_the_save_reuses(
    tmp_path: Path, sources: list[Path]
) -> None:
    """The save reuses chunks of a deleted model, which gc would free: the save holds
    the gc lock shared from its first lookup to its ref, so gc waits for it."""
    path = tmp_path / "store"
    store = Store(path)
    store.save(sources[0], "old:v1")
    store.delete("old:v1")  # its chunks are dead now, and sources[1] shares half of them
    saver = Child("save", str(path), str(sources[1]), "new:v1", "--pause-at", "before-ref")
    saver.expect("ready")
    saver.expect("paused before-ref")  # objects written or found, ref not yet created
    gc = Child("gc", str(path))
    gc.expect("ready")
    lock = path / "locks" / "gc.lock"
    _wait_until(lambda: waiting_for_lock(lock, gc.pid), "gc waits for the save's lock")
    saver.send()
    assert saver.finish()[0] == 0
    code, out, err = gc.finish()
    assert code == 0, err
    assert int(_said(out, "freed")[0]) > 0  # old:v1's own chunks were freed
    store = Store(path)
    assert [str(m.tag) for m in store.list()] == ["new:v1"]
    assert _same_files(store, "new:v1", sources[1])
    assert store.verify().ok


@pytest.mark.slow
def test_saves_and_gcs_in_a_crowd(tmp_path: Path, sources: list[Path]) -> None:
    path = tmp_path / "store"
    store = Store(path)
    store.save(sources[2], "dead:v1")
    store.delete("dead")
    children = [Child("save", str(path), str(src), f"m{i}", "--wait") for i, src in
                enumerate(sources)]  # fmt: skip
    children += [Child("gc", str(path), "--wait") for _ in range(2)]
    results = _run_together(children)
    assert all(code == 0 for code, _, _ in results), results
    store = Store(path)
    assert sorted(m.tag.name for m in store.list()) == ["m0", "m1", "m2"]
    for i, src in enumerate(sources):
        assert _same_files(store, f"m{i}", src)
    assert store.verify().ok


@pytest.mark.slow
def test_two_processes_materialise_one_model(tmp_path: Path, sources: list[Path]) -> None:
    path = tmp_path / "store"
    Store(path).save(sources[0], "m:v1")
    # the first writes the whole folder, then waits just before publishing it...
    slow = Child("path", str(path), "m:v1", "--pause-at", "cache-rename")
    slow.expect("ready")
    slow.expect("paused cache-rename")
    # ...while the second asks for the same model: it waits for the first's folder
    # (one writer per model folder) instead of writing a second copy
    fast = Child("path", str(path), "m:v1")
    fast.expect("ready")
    model_id = Store(path).get("m:v1").id
    lock = path / "locks" / "cache" / model_id
    _wait_until(lambda: waiting_for_lock(lock, fast.pid), "the second waits for the first")
    slow.send()
    code, slow_out, err = slow.finish()
    assert code == 0, err
    code, fast_out, err = fast.finish()
    assert code == 0, err
    folder = Path(_said(fast_out, "path")[0])
    assert _said(slow_out, "path") == [str(folder)]
    assert (folder / "w.bin").read_bytes() == (sources[0] / "w.bin").read_bytes()
    assert sorted(p.name for p in (path / "cache").iterdir()) == [
        folder.name,
        f"{folder.name}.stat",
    ]
    # and once more with both released at the same moment, on a second model
    Store(path).save(sources[1], "m:v2")
    results = _run_together([Child("path", str(path), "m:v2", "--wait") for _ in range(2)])
    assert [code for code, _, _ in results] == [0, 0], results
    assert len({_said(out, "path")[0] for _, out, _ in results}) == 1
    folder = Path(_said(results[0][1], "path")[0])
    assert (folder / "w.bin").read_bytes() == (sources[1] / "w.bin").read_bytes()
    assert leftovers(path) == []


@pytest.mark.slow
def test_verify_beside_gc_reports_no_false_damage(tmp_path: Path, sources: list[Path]) -> None:
    """gc in another process starts while verify is between packs: it must not delete
    a pack verify is about to read (verify would report sound objects as damaged)."""
    path = tmp_path / "store"
    store = Store(path)
    store.save(sources[0], "old:v1")
    store.save(sources[1], "new:v1")  # shares old:v1's pack: gc will repack it
    store.delete("old:v1")
    gc = Child("gc", str(path), "--wait")
    gc.expect("ready")
    real = store.repo.objects.verify_pack
    started: list[str] = []
    lock = path / "locks" / "gc.lock"
    once = threading.Lock()  # (verify checks two packs at a time)

    def verify_pack_after_gc_starts(name: str, *rest: Any) -> list[bytes]:
        with once:
            if not started:
                started.append(name)
                gc.send()  # gc begins now, with verify under way...
                _wait_until(  # ...and either waits for verify or runs to its end
                    lambda: gc.proc.poll() is not None or waiting_for_lock(lock, gc.pid),
                    "gc finishes or waits",
                )
        return real(name, *rest)

    store.repo.objects.verify_pack = verify_pack_after_gc_starts  # type: ignore[method-assign]
    report = store.verify()
    assert report.ok, report
    code, _, err = gc.finish()
    assert code == 0, err
    assert Store(path).verify().ok
    assert _same_files(Store(path), "new:v1", sources[1])
