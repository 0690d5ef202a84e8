"""How many threads a save and a read use (``_parallel.cpu_threads``): one a CPU this
process may run on, 2 to 8, or ``MODELVAULT_THREADS``; more threads store exactly the
same objects and read back the same bytes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _helpers import bf16_weights, safetensors

import modelvault
from modelvault import _parallel, checkout, ingest
from modelvault.odb.records import PackReads

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("cpus", "threads"), [(1, 2), (2, 2), (3, 3), (6, 6), (8, 8), (16, 8), (96, 8)]
)
def test_one_thread_a_cpu_from_2_to_8(
    monkeypatch: pytest.MonkeyPatch, cpus: int, threads: int
) -> None:
    monkeypatch.delenv("MODELVAULT_THREADS", raising=False)
    monkeypatch.setattr(_parallel.os, "sched_getaffinity", lambda _pid: set(range(cpus)))
    assert _parallel.cpu_threads() == threads
    assert checkout.reader_threads() == min(threads, 7)  # one fewer than its window


@pytest.mark.parametrize(("setting", "threads"), [("1", 1), ("5", 5), (" 12 ", 12), ("64", 64)])
def test_the_setting_overrides_the_cpus(
    monkeypatch: pytest.MonkeyPatch, setting: str, threads: int
) -> None:
    monkeypatch.setenv("MODELVAULT_THREADS", setting)
    monkeypatch.setattr(_parallel.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert _parallel.cpu_threads() == threads


@pytest.mark.parametrize("setting", ["0", "65", "-3", "two", "2.5"])
def test_a_setting_out_of_range_warns_and_the_cpus_decide(
    monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    monkeypatch.setenv("MODELVAULT_THREADS", setting)
    monkeypatch.setattr(_parallel.os, "sched_getaffinity", lambda _pid: set(range(4)))
    with pytest.warns(UserWarning, match="MODELVAULT_THREADS"):
        assert _parallel.cpu_threads() == 4


class _Overlap:
    """Counts how many calls of a function run at once; :meth:`wrapped` holds each call a
    little, so that calls which can overlap do (a plain function: as a class attribute it
    binds like the method it replaces)."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self.lock = threading.Lock()

    def wrapped(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            try:
                time.sleep(0.02)
                return fn(*args, **kwargs)
            finally:
                with self.lock:
                    self.now -= 1

        return counted


@pytest.fixture
def model(tmp_path: Path) -> Iterator[Path]:
    """A 100 MiB bf16 safetensors file (7 segments) and a small config."""
    folder = tmp_path / "model"
    folder.mkdir()
    weights = bytearray(bf16_weights(50 * MiB))  # 100 MiB
    weights[30 * MiB : 31 * MiB] = weights[5 * MiB : 6 * MiB]  # a repeat, deduplicated
    (folder / "model.safetensors").write_bytes(safetensors("BF16", bytes(weights)))
    (folder / "config.json").write_text('{"hidden": 384}')
    yield folder


def _save_twice(
    store: modelvault.Store, folder: Path, after: Callable[[], None] = lambda: None
) -> tuple[str, str]:
    """Save ``folder`` as v0, change 1 MiB of its weights, save it as v1 (``after`` runs
    after each save): the trees."""
    first = store.save(folder, "m:v0").object.tree
    after()
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[70 * MiB : 71 * MiB] = bytes(reversed(data[70 * MiB : 71 * MiB]))
    path.write_bytes(bytes(data))
    second = store.save(folder, "m:v1").object.tree
    after()
    data[70 * MiB : 71 * MiB] = bytes(reversed(data[70 * MiB : 71 * MiB]))
    path.write_bytes(bytes(data))  # (as it was, for the next store)
    return first, second


def test_more_threads_save_and_read_the_same_objects_at_once(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With MODELVAULT_THREADS=6 a new save and a version save work on 6 of the file's 7
    segments at a time, and Model.path reads 6 batches at a time; the trees
    and the objects stored are those of 2 threads, and the files read back are the
    files saved."""
    monkeypatch.setenv("MODELVAULT_THREADS", "2")
    two = modelvault.Store(tmp_path / "two")
    trees_two = _save_twice(two, model)

    monkeypatch.setenv("MODELVAULT_THREADS", "6")
    cuts, reads = _Overlap(), _Overlap()
    monkeypatch.setattr(ingest, "cut_piece", cuts.wrapped(ingest.cut_piece))
    monkeypatch.setattr(PackReads, "read_many", reads.wrapped(PackReads.read_many))
    six = modelvault.Store(tmp_path / "six")
    most = []

    def after() -> None:
        most.append(cuts.most)
        cuts.most = 0

    assert _save_twice(six, model, after) == trees_two
    assert most == [6, 6]  # the new save, the version (2 threads: 2; a window of 3: 5)

    def stored(store: modelvault.Store) -> set[bytes]:  # not the model documents (times)
        models = {bytes.fromhex(store.get(f"m:{v}").id) for v in ("v0", "v1")}
        return set(store.repo.objects.ids()) - models

    assert stored(six) == stored(two)

    reads.most = 0
    folder = Path(six.get("m:v0").path)
    assert reads.most == 6
    for name in ("model.safetensors", "config.json"):
        assert (folder / name).read_bytes() == (model / name).read_bytes()
    assert six.verify().ok


def test_one_thread_saves_and_reads_too(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELVAULT_THREADS", "1")
    store = modelvault.Store(tmp_path / "one")
    store.save(model, "m:v0")
    folder = Path(store.get("m:v0").path)
    assert (folder / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()


class _Calls:
    """A pool function that counts the calls running; item 0 (or ``fail``) raises."""

    def __init__(self, fail: int | None = 0) -> None:
        self.running = 0
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, item: int) -> int:
        with self.lock:
            self.running += 1
        try:
            if item == self.fail:
                raise OSError(28, "No space left on device")
            time.sleep(0.05)
            return item
        finally:
            with self.lock:
                self.running -= 1


def test_a_failed_pipeline_returns_once_every_started_call_has_finished() -> None:
    """A save whose first segment fails must not unmap the parent's packs under segments
    still being compared: ordered_pipeline raises only after the calls it started end."""
    calls = _Calls()
    with ThreadPoolExecutor(6) as pool:
        with pytest.raises(OSError, match="No space"):
            _parallel.ordered_pipeline(pool, calls, range(40), lambda _r: None, window=5)
        assert calls.running == 0


def test_a_pipeline_whose_items_fail_waits_for_the_calls_it_started() -> None:
    def items() -> Iterator[int]:
        yield from range(1, 8)
        raise ValueError("the folder changed")

    calls = _Calls(fail=None)
    with ThreadPoolExecutor(6) as pool:
        with pytest.raises(ValueError, match="changed"):
            _parallel.ordered_pipeline(pool, calls, items(), lambda _r: None, window=5)
        assert calls.running == 0


def test_an_ordered_map_left_early_waits_for_the_calls_it_started() -> None:
    calls = _Calls(fail=None)
    with ThreadPoolExecutor(6) as pool:
        results = _parallel.ordered_map(pool, calls, range(1, 40), window=6)
        assert next(results) == (1, 1)
        results.close()  # (the reader's writer failed)
        assert calls.running == 0
