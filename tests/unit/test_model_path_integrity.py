"""``Model.path`` never hands out a folder whose files changed after it was written.

The tests run as root in CI, for whom read-only modes do not hold: exactly the case the
stat manifest (modelvault.repo.cache) is there for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _helpers import write_files

from modelvault import Store

FILES = {
    "config.json": b'{"a": 1}',
    "weights.bin": os.urandom(300_000),
    "sub/tokenizer.json": b"tok" * 1000,
}


def _force_write(path: Path, data: bytes) -> None:
    """Write into a read-only file the way root can (or anyone after a chmod)."""
    mode = path.stat().st_mode
    path.chmod(0o644)
    path.write_bytes(data)
    path.chmod(mode)


def _writable(folder: Path) -> None:
    folder.chmod(0o755)


def _edit_same_size(root: Path) -> None:
    p = root / "weights.bin"
    data = bytearray(p.read_bytes())
    data[1000] ^= 0xFF
    _force_write(p, bytes(data))


def _edit_and_restore_times(root: Path) -> None:
    """Change bytes and put mtime back, as `touch -r` would: only ctime tells."""
    p = root / "weights.bin"
    st = p.stat()
    data = bytearray(p.read_bytes())
    data[7] ^= 0x01
    _force_write(p, bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def _truncate(root: Path) -> None:
    _force_write(root / "sub" / "tokenizer.json", b"")


def _add_file(root: Path) -> None:
    _writable(root)
    (root / "extra.txt").write_bytes(b"not saved")


def _add_file_in_subfolder(root: Path) -> None:
    _writable(root / "sub")
    (root / "sub" / "extra.txt").write_bytes(b"not saved")


def _remove_file(root: Path) -> None:
    _writable(root)
    (root / "config.json").unlink()


def _replace_file(root: Path) -> None:
    """Same name and bytes, another inode (a rename over it)."""
    _writable(root)
    tmp = root / "x"
    tmp.write_bytes(FILES["config.json"])
    os.replace(tmp, root / "config.json")


def _make_executable(root: Path) -> None:
    (root / "config.json").chmod(0o555)


EDITS: dict[str, Callable[[Path], None]] = {
    "same-size": _edit_same_size,
    "times-restored": _edit_and_restore_times,
    "truncate": _truncate,
    "add": _add_file,
    "add-in-subfolder": _add_file_in_subfolder,
    "remove": _remove_file,
    "replace": _replace_file,
    "chmod": _make_executable,
}


def _exact(root: Path) -> None:
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert found == sorted(FILES)
    for rel, data in FILES.items():
        assert (root / rel).read_bytes() == data
    assert not os.access(root / "config.json", os.X_OK) or os.geteuid() == 0
    assert (root / "config.json").stat().st_mode & 0o111 == 0


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_a_changed_folder_is_written_afresh(store: Store, tmp_path: Path, edit: str) -> None:
    model = store.save(write_files(tmp_path / "src", FILES), "m")
    root = Path(model.path)
    _exact(root)
    time.sleep(0.01)  # past the file system's timestamp granularity
    EDITS[edit](root)
    for fresh in (store.get("m"), Store(store.path).get("m")):  # this process and a new one
        again = Path(fresh.path)
        assert again == root
        _exact(again)
    assert store.verify().ok


def test_an_unchanged_folder_is_reused_not_rewritten(store: Store, tmp_path: Path) -> None:
    model = store.save(write_files(tmp_path / "src", FILES), "m")
    inode = (Path(model.path) / "weights.bin").stat().st_ino
    assert (Path(store.get("m").path) / "weights.bin").stat().st_ino == inode
    assert (Path(Store(store.path).get("m").path) / "weights.bin").stat().st_ino == inode


def test_a_folder_without_manifest_is_not_trusted(store: Store, tmp_path: Path) -> None:
    """A crash between manifest and rename, or a cache written by an older modelvault."""
    model = store.save(write_files(tmp_path / "src", FILES), "m")
    root = Path(model.path)
    (store.path / "cache" / f"{model.id}.stat").unlink()
    _edit_same_size(root)
    _exact(Path(store.get("m").path))


@pytest.mark.parametrize("edit", ["same-size", "add", "remove", "chmod"])
def test_verify_rehashes_and_drops_changed_folders(store: Store, tmp_path: Path, edit: str) -> None:
    model = store.save(write_files(tmp_path / "src", FILES), "m")
    other = store.save(write_files(tmp_path / "src2", {"f": b"fine"}), "n")
    root, untouched = Path(model.path), Path(other.path)
    EDITS[edit](root)
    report = store.verify()
    assert report.ok  # a cache, not the store: nothing stored is damaged
    assert list(report.dropped_caches) == [model.id]
    assert not root.exists()
    assert untouched.is_dir()  # a sound folder stays
    _exact(Path(store.get("m").path))
    assert store.verify().dropped_caches == {}
