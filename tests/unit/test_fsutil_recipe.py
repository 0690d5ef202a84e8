"""The one atomic-write recipe (_fsutil) and its users: files appear whole, read-only,
durable, and no temporary (nor its lock) is left behind."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from modelvault import _fsutil
from modelvault.remote.transport import open_transport


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_takes_bytes_or_a_stream(tmp_path: Path) -> None:
    data = os.urandom(_fsutil.COPY_BLOCK + 12345)  # more than one block from a stream
    _fsutil.atomic_write(tmp_path / "a", data)
    _fsutil.atomic_write(tmp_path / "b", io.BytesIO(data))
    _fsutil.atomic_write(tmp_path / "b", io.BytesIO(b"replaced"))
    assert (tmp_path / "a").read_bytes() == data
    assert (tmp_path / "b").read_bytes() == b"replaced"
    assert _mode(tmp_path / "a") == _mode(tmp_path / "b") == 0o444
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_write_new_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        _fsutil.write_new(tmp_path / "f", b"new")
    assert (tmp_path / "f").read_bytes() == b"old"


def test_rename_into_removes_the_temporary_when_the_rename_fails(tmp_path: Path) -> None:
    tmp = tmp_path / "t"
    _fsutil.write_new(tmp, b"x")
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "inside").write_bytes(b"")  # a folder: the rename fails
    with pytest.raises(OSError):
        _fsutil.rename_into(tmp, tmp_path / "final")
    assert not tmp.exists()


def test_seal_finishes_a_file_written_through_its_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "p"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    _fsutil.write_all(fd, [b"abc", memoryview(b"def")])
    _fsutil.seal(fd, path)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed
    assert path.read_bytes() == b"abcdef"
    assert _mode(path) == 0o444


def test_file_remote_put_file_is_the_same_recipe_as_put(tmp_path: Path) -> None:
    """A whole local pack sent to a file:// remote lands like every other key: whole,
    read-only, with no temporary or lock file left beside it."""
    src = tmp_path / "src.pack"
    src.write_bytes(os.urandom(_fsutil.COPY_BLOCK * 2 + 7))
    root = tmp_path / "remote"
    t = open_transport(root.as_uri(), {})
    t.put_file("packs/a.pack", src)
    t.put("packs/a.idx", b"index")
    assert t.get("packs/a.pack") == src.read_bytes()
    assert sorted(p.name for p in (root / "packs").iterdir()) == ["a.idx", "a.pack"]
    assert _mode(root / "packs" / "a.pack") == _mode(root / "packs" / "a.idx") == 0o444


def test_replacing_puts_the_file_in_place_only_when_the_block_ends_normally(
    tmp_path: Path,
) -> None:
    target = tmp_path / "model.bentomodel"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), _fsutil.replacing(target, ".bentomodel") as f:
        f.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bentomodel"]
    with _fsutil.replacing(target, ".bentomodel") as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bentomodel"]


def test_preallocate_reserves_blocks_without_changing_the_size(tmp_path: Path) -> None:
    """``preallocate`` (Linux ``fallocate``, KEEP_SIZE) gives the file its blocks ahead of
    the writes, its size unchanged: a file written short of them reads back as written.
    (Linux only, where the file system has ``fallocate``: the ext4 of this project's
    machines and CI.)"""
    assert _fsutil._fallocate() is not None, "Linux's fallocate(2) is missing here"
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _fsutil.preallocate(fd, 0, 8 << 20, path)
        st = os.fstat(fd)
        assert st.st_size == 0 and st.st_blocks * 512 >= 8 << 20
        _fsutil.write_all(fd, [b"x" * 300_000])
        assert os.fstat(fd).st_size == 300_000
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x" * 300_000


def test_preallocate_raises_a_full_disk_and_ignores_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC / EDQUOT from fallocate is an OSError naming the file (the store's handler
    makes it DiskFull); a file system that cannot reserve (EOPNOTSUPP, ENOSYS, EINVAL)
    only means no reservation."""
    import ctypes
    import errno

    from modelvault.errors import DiskFull

    failing = {"errno": 0}

    def fake(fd: int, mode: int, offset: int, nbytes: int) -> int:
        ctypes.set_errno(failing["errno"])
        return -1

    monkeypatch.setattr(_fsutil, "_fallocate", lambda: fake)
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            failing["errno"] = code
            _fsutil.preallocate(fd, 0, 1 << 20, path)  # no exception
        for code in (errno.ENOSPC, errno.EDQUOT):
            failing["errno"] = code
            with pytest.raises(OSError) as err:
                _fsutil.preallocate(fd, 0, 1 << 20, path)
            assert err.value.errno == code and err.value.filename == str(path)
        failing["errno"] = errno.ENOSPC
        with (
            pytest.raises(DiskFull, match=str(path)),
            _fsutil.reports_disk_full("writing out the model folder", tmp_path),
        ):
            _fsutil.preallocate(fd, 0, 1 << 20, path)
    finally:
        os.close(fd)
