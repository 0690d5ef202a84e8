"""A full disk surfaces as DiskFull (an OSError with ENOSPC and a modelvault error) that
says which operation failed, where, and what to free; the store stays sound.

The store lives on a small tmpfs mounted here (CI runs as root)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import modelvault
from modelvault import DiskFull, Store

MIB = 1 << 20


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "--lazy", str(mnt)], check=True)  # maps may outlive the test


def _source(root: Path, size: int) -> Path:
    root.mkdir()
    (root / "w.bin").write_bytes(os.urandom(size))
    (root / "config.json").write_bytes(b"{}")
    return root


def _says_full(exc: DiskFull, op: str) -> None:
    assert isinstance(exc, OSError) and isinstance(exc, modelvault.ModelVaultError)
    assert exc.errno == errno.ENOSPC
    text = str(exc)
    assert op in text and "no space left" in text and "mv gc" in text and "MiB free" in text


def test_saving_onto_a_full_disk_names_the_operation(tmpfs: Path, tmp_path: Path) -> None:
    store = Store(tmpfs / "store")
    small = store.save(_source(tmp_path / "small", MIB), "small")
    with pytest.raises(DiskFull) as exc:
        store.save(_source(tmp_path / "big", 12 * MIB), "big:v1")
    _says_full(exc.value, "saving big:v1")
    assert [m.tag for m in store.list()] == [small.tag]
    assert store.verify().ok
    store.gc()  # gives back what the failed save wrote
    assert store.verify().ok


def test_model_path_onto_a_full_disk_names_the_operation(tmpfs: Path, tmp_path: Path) -> None:
    store = Store(tmpfs / "store")
    model = store.save(_source(tmp_path / "src", 3 * MIB), "m")
    ballast = tmpfs / "ballast"
    with open(ballast, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, os.statvfs(tmpfs).f_bavail * 4096 - 512 * 1024)
    with pytest.raises(DiskFull) as exc:
        _ = model.path
    _says_full(exc.value, "Model.path")
    ballast.unlink()
    assert (Path(store.get("m").path) / "w.bin").read_bytes() == (
        tmp_path / "src" / "w.bin"
    ).read_bytes()
    assert store.verify().ok


def test_exporting_onto_a_full_disk_names_the_destination(tmp_path: Path, tmpfs: Path) -> None:
    """Not the store's disk, and not `mv gc` (which frees nothing there)."""
    store = Store(tmp_path / "store")
    store.save(_source(tmp_path / "src", 3 * MIB), "m:v1")
    with open(tmpfs / "ballast", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, os.statvfs(tmpfs).f_bavail * 4096 - 256 * 1024)
    with pytest.raises(DiskFull) as exc:
        store.export_model("m:v1", str(tmpfs / "m.bentomodel"))
    text = str(exc.value)
    assert str(tmpfs) in text and str(store.path) not in text and "mv gc" not in text
    assert "exporting m:v1" in text
    assert [p.name for p in tmpfs.iterdir()] == ["ballast"]  # no partial archive left
