"""kill -9 at any moment leaves a store that verify passes, each tag whole or absent.

A child process (``_procs.py``) saves, gcs or materialises and is killed with SIGKILL,
either at a precise point of the write path or after a delay. Then this process checks
the store: ``verify().ok``, the tag fully readable (same bytes) or not listed at all,
``gc`` removes every temporary the dead process left, and saving again works.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest
from _procs import Child, leftovers
from blake3 import blake3

from modelvault import Model, Store

BIG = 70 * 1024 * 1024  # more than one pack (64 MiB), so packs are sealed mid-save


def _digest_file(path: Path) -> str:
    h = blake3()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _digest_stream(model: Model, rel: str) -> str:
    h = blake3()
    with model.open(rel) as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class Source:
    """A folder to save and the digest of each of its files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.digests = {
            p.relative_to(root).as_posix(): _digest_file(p)
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    def matches(self, model: Model) -> bool:
        return {rel: _digest_stream(model, rel) for rel in self.digests} == self.digests


@pytest.fixture(scope="session")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """70 MiB of random weights plus small files, written once per session."""
    root = tmp_path_factory.mktemp("big-source")
    rng = np.random.default_rng(42)
    (root / "weights.bin").write_bytes(rng.bytes(BIG))
    (root / "config.json").write_text('{"hidden": 768, "layers": 12}\n' * 50)
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.txt").write_text("\n".join(f"tok{i}" for i in range(20000)))
    return Source(root)


@pytest.fixture(scope="session")
def small_sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Source, Source]:
    """Two 6 MiB models sharing their first 4 MiB."""
    rng = np.random.default_rng(7)
    shared = rng.bytes(4 * 1024 * 1024)
    out = []
    for name in ("a", "b"):
        root = tmp_path_factory.mktemp(f"small-{name}")
        (root / "weights.bin").write_bytes(shared + rng.bytes(2 * 1024 * 1024))
        out.append(Source(root))
    return out[0], out[1]


def check_after_crash(path: Path, src: Source, tag: str) -> bool:
    """Assert the crash invariants; returns whether the tag survived."""
    store = Store(path)
    report = store.verify()
    assert report.ok, report
    listed = [str(m.tag) for m in store.list()]
    present = tag in listed
    if present:
        assert listed == [tag]
        assert src.matches(store.get(tag)), "a listed tag must read back byte-identical"
    else:
        assert listed == []
    store.gc()
    assert leftovers(path) == [], "gc must remove what the killed process left"
    if not present:
        assert store.stats().stored_bytes == 0, "no tag: gc frees every object"
    assert store.verify().ok
    return present


def run_killed(*args: str) -> None:
    """Run a child that must die by SIGKILL at its ``--kill-at`` point."""
    code, _, err = Child(*args).finish()
    assert code == -signal.SIGKILL, f"the child was not killed at its point ({code}): {err}"


SAVE_POINTS = [
    ("pack-half", False),
    ("pack-renamed", False),
    ("index-renamed", False),
    ("before-ref", False),
    ("ref-temp", False),
    ("after-ref", True),
]


@pytest.mark.slow
@pytest.mark.parametrize(("point", "survives"), SAVE_POINTS)
def test_kill_during_save_at_each_point(
    tmp_path: Path, big_source: Source, point: str, survives: bool
) -> None:
    path = tmp_path / "store"
    run_killed("save", str(path), str(big_source.root), "big:v1", "--kill-at", point)
    assert check_after_crash(path, big_source, "big:v1") is survives
    again = Store(path).save(big_source.root, "big")  # a fresh save of the same content
    assert big_source.matches(again)
    assert Store(path).verify().ok


@pytest.mark.slow
def test_kill_during_create_removes_staging_on_gc(tmp_path: Path, big_source: Source) -> None:
    path = tmp_path / "store"
    run_killed("create", str(path), str(big_source.root), "big:v1", "--kill-at", "before-ref")
    assert any(p.name.startswith(".tmp-") for p in (path / "tmp").iterdir())
    assert check_after_crash(path, big_source, "big:v1") is False


def _kill_after(path: Path, src: Source, delay: float) -> None:
    child = Child("save", str(path), str(src.root), "big:v1")
    child.expect("ready")
    time.sleep(delay)  # the kill point; any outcome must pass the checks below
    child.kill()


@pytest.mark.slow
def test_kill_during_save_after_delays(tmp_path: Path, big_source: Source) -> None:
    outcomes = []
    for i, delay in enumerate([0.0, 0.05, 0.15, 0.3, 0.5, 0.8]):
        path = tmp_path / f"store{i}"
        _kill_after(path, big_source, delay)
        outcomes.append(check_after_crash(path, big_source, "big:v1"))
    assert False in outcomes  # at least one kill landed mid-save


@pytest.mark.slow
@pytest.mark.parametrize("point", ["gc-repacked", "gc-idx-gone"])
def test_kill_during_gc_never_loses_a_live_tag(
    tmp_path: Path, small_sources: tuple[Source, Source], point: str
) -> None:
    a, b = small_sources
    path = tmp_path / "store"
    store = Store(path)
    store.save(a.root, "m:a")
    store.save(b.root, "m:b")  # shares 4 MiB of chunks with m:a, in another pack
    store.delete("m:a")
    run_killed("gc", str(path), "--kill-at", point)
    assert check_after_crash(path, b, "m:b") is True


@pytest.mark.slow
def test_kill_during_materialisation(tmp_path: Path, small_sources: tuple[Source, Source]) -> None:
    a, _ = small_sources
    path = tmp_path / "store"
    Store(path).save(a.root, "m:a")
    run_killed("path", str(path), "m:a", "--kill-at", "cache-rename")
    assert leftovers(path)  # the half-made cache folder
    assert check_after_crash(path, a, "m:a") is True
    model = Store(path).get("m:a")
    assert _digest_file(Path(model.path) / "weights.bin") == a.digests["weights.bin"]


@pytest.mark.slow
def test_kill_during_gc_of_a_cache_never_leaves_a_partial_model_folder(
    tmp_path: Path, small_sources: tuple[Source, Source]
) -> None:
    """The same model id can come back (import of its archive): its cache folder must
    then be whole, so gc must never leave a half-removed one under the final name."""
    a, _ = small_sources
    path = tmp_path / "store"
    store = Store(path)
    model = store.save(a.root, "m:v1")
    store.get("m:v1").path  # noqa: B018
    archive = store.export_model("m:v1", str(tmp_path / "m.bentomodel"))
    store.delete("m:v1")
    run_killed("gc", str(path), "--kill-at", "gc-cache-half")
    again = Store(path).import_model(archive)
    assert again.id == model.id
    folder = Path(again.path)
    assert sorted(p.name for p in folder.iterdir()) == ["weights.bin"]
    assert _digest_file(folder / "weights.bin") == a.digests["weights.bin"]
    assert check_after_crash(path, a, "m:v1") is True
