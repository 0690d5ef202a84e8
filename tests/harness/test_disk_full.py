"""Disk full: the store lives on a small tmpfs (mounted here; CI runs as root) that a
ballast file fills to several levels of free space, then save, import, pull and gc run.

Each either succeeds or fails with ``DiskFull`` (a modelvault error and an ``OSError``
with ENOSPC) naming the store's disk (an export onto the full disk: the destination's);
a push to a full remote fails with a modelvault error saying there is no space; either
way the store (and the remote) are left sound: ``verify`` ok, the tags it held intact,
nothing half-published. Once the ballast is gone the same operation succeeds, and gc
leaves no temporary behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from _figures import record
from _procs import leftovers
from _world import check_remote, check_store, make_source
from test_crash import Source

import modelvault
from modelvault import Store

KIB = 1024
MIB = 1024 * KIB
TMPFS = 24 * MIB
# free bytes left by the ballast; the operations below need ~1-3 MiB each
LEVELS = (0, KIB, 4 * KIB, 16 * KIB, 64 * KIB, 128 * KIB, 256 * KIB, 512 * KIB, 768 * KIB)
LEVELS += (MIB, 1280 * KIB, 1536 * KIB, 2 * MIB, 5 * MIB // 2, 3 * MIB, 6 * MIB)


@dataclass
class Small:
    """Small sources and templates (kept off the tmpfs) for the disk-full runs."""

    a: Source
    b: Source
    c: Source
    plain: Path  # base:v0 = A
    gcstore: Path  # base:v0 = A, keep:v1 = B, dead:v1 = C deleted (its cache too)
    archive: str  # m:v1 = B
    remote: str  # file:// remote holding m:v1 = B


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Small:
    root = tmp_path_factory.mktemp("disk-full-world")
    rng = np.random.default_rng(28)
    shared = rng.bytes(1 * MIB)
    a, b, c = (make_source(root / f"src-{n}", shared, rng, own=MIB) for n in "abc")
    Store(root / "plain").save(a.root, "base:v0")
    other = Store(root / "other")
    other.save(b.root, "m:v1")
    archive = other.export_model("m:v1", str(root / "m.bentomodel"))
    other.push("m:v1", f"file://{root / 'remote'}")
    g = Store(root / "gcstore")
    g.save(c.root, "dead:v1")
    g.save(a.root, "base:v0")
    g.save(b.root, "keep:v1")
    _ = g.get("dead:v1").path
    g.delete("dead:v1")
    return Small(a, b, c, root / "plain", root / "gcstore", archive, f"file://{root / 'remote'}")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A fresh tmpfs of ``TMPFS`` bytes, unmounted at the end."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS}", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def fill(mnt: Path, free: int) -> Path:
    """A ballast file leaving about ``free`` bytes free on the file system of ``mnt``."""
    st = os.statvfs(mnt)
    ballast = mnt / "ballast"
    size = max(0, st.f_bavail * st.f_frsize - free)
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if size:
            os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    return ballast


def says_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc).lower()
    return isinstance(exc, modelvault.ModelVaultError) and ("space" in text or "full" in text)


@dataclass
class Op:
    template: Callable[[Small], Path]
    whole: Callable[[Small], dict[str, Source]]  # tags held before, intact throughout
    after: Callable[[Small], dict[str, Source]]  # tags once the operation succeeded
    run: Callable[[Store, Small], object]


OPS = {
    "save": Op(
        lambda w: w.plain,
        lambda w: {"base:v0": w.a},
        lambda w: {"base:v0": w.a, "m:v1": w.b},
        lambda s, w: s.save(w.b.root, "m:v1"),
    ),
    "import": Op(
        lambda w: w.plain,
        lambda w: {"base:v0": w.a},
        lambda w: {"base:v0": w.a, "m:v1": w.b},
        lambda s, w: s.import_model(w.archive),
    ),
    "pull": Op(
        lambda w: w.plain,
        lambda w: {"base:v0": w.a},
        lambda w: {"base:v0": w.a, "m:v1": w.b},
        lambda s, w: s.pull("m:v1", w.remote),
    ),
    "gc": Op(
        lambda w: w.gcstore,
        lambda w: {"base:v0": w.a, "keep:v1": w.b},
        lambda w: {"base:v0": w.a, "keep:v1": w.b},
        lambda s, w: s.gc(),
    ),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_disk_full_fails_cleanly_and_leaves_the_store_sound(
    op: str, small: Small, tmpfs: Path
) -> None:
    case = OPS[op]
    failed = 0
    for level in LEVELS:
        path = tmpfs / f"store-{level}"
        shutil.copytree(case.template(small), path)
        ballast = fill(tmpfs, level)
        try:
            case.run(Store(path), small)
        except Exception as exc:
            # DiskFull: a ModelVaultError and an OSError (ENOSPC) naming the store's disk
            assert isinstance(exc, modelvault.DiskFull), f"{op} at {level} free: {exc!r}"
            assert exc.errno == errno.ENOSPC and says_disk_full(exc), repr(exc)
            assert str(path) in str(exc), f"the error must say where: {exc}"
            failed += 1
            check_store(path, case.whole(small), {})  # sound while still full
            ballast.unlink()
            case.run(Store(path), small)  # the retry, with space again
        else:
            ballast.unlink()
        check_store(path, case.after(small), {})
        Store(path).gc()
        assert leftovers(path) == []
        check_store(path, case.after(small), {})
        shutil.rmtree(path)
    assert failed, f"{op} never ran out of space: the levels are too generous"
    record(
        f"disk full: {op}: {len(LEVELS)} fill levels, {failed} failed with ENOSPC and left "
        "the store sound, every retry succeeded"
    )


def test_push_to_a_full_remote_publishes_no_tag_with_missing_objects(
    small: Small, tmpfs: Path, tmp_path: Path
) -> None:
    """The remote (file://) is on the full tmpfs: push fails saying so, every tag the
    remote lists still pulls whole, and the push succeeds once there is space."""
    store = Store(shutil.copytree(small.plain, tmp_path / "local"))
    failed = 0
    for level in LEVELS:
        remote = tmpfs / f"remote-{level}"
        shutil.copytree(small.remote.removeprefix("file://"), remote)
        ballast = fill(tmpfs, level)
        url = f"file://{remote}"
        try:
            store.push("base:v0", url)
        except Exception as exc:
            assert isinstance(exc, modelvault.ModelVaultError), repr(exc)
            assert says_disk_full(exc), f"push at {level} bytes free: {exc!r}"
            failed += 1
            check_remote(url, tmp_path / f"full-{level}", {"m:v1": small.b}, {"base:v0": small.a})
            ballast.unlink()
            store.push("base:v0", url)
        else:
            ballast.unlink()
        check_remote(url, tmp_path / f"after-{level}", {"m:v1": small.b, "base:v0": small.a}, {})
        shutil.rmtree(remote)
    assert failed, "push never ran out of space: the levels are too generous"
    record(
        f"disk full: push to a full file:// remote: {len(LEVELS)} fill levels, {failed} "
        "failed with ENOSPC, every remote tag still pulled whole, every retry succeeded"
    )


@pytest.mark.parametrize("output_format", ["modelvault", "bentoml"])
def test_export_onto_a_full_disk_leaves_no_partial_archive(
    output_format: str, small: Small, tmpfs: Path, tmp_path: Path
) -> None:
    """Export to the full tmpfs fails saying so, naming the destination's disk (not the
    store's, nor `mv gc`: harness bug B5), and leaves nothing there (no archive under its
    final name, no temporary); with space again it succeeds. Whatever export returns
    imports whole."""
    store = Store(shutil.copytree(small.plain, tmp_path / "local"))
    failed = 0
    for level in LEVELS:
        out = tmpfs / f"out-{level}"
        out.mkdir()
        ballast = fill(tmpfs, level)
        dest = out / "base.bentomodel"
        try:
            store.export_model("base:v0", str(dest), output_format=output_format)
        except Exception as exc:
            assert isinstance(exc, modelvault.DiskFull), repr(exc)
            assert says_disk_full(exc), f"export at {level} bytes free: {exc!r}"
            assert str(out) in str(exc) and str(store.path) not in str(exc), exc
            assert "mv gc" not in str(exc), exc
            failed += 1
            assert sorted(p.name for p in out.iterdir()) == [], "a failed export leaves nothing"
            ballast.unlink()
            store.export_model("base:v0", str(dest), output_format=output_format)
        else:
            ballast.unlink()
        check = Store(out / "check")
        check.import_model(str(dest))
        check_store(out / "check", {"base:v0": small.a}, {})
        shutil.rmtree(out)
    assert failed, "export never ran out of space: the levels are too generous"
    record(
        f"disk full: export ({output_format}) onto a full disk: {len(LEVELS)} fill levels, "
        f"{failed} failed "
        "with ENOSPC leaving no file behind, every retry succeeded"
    )
