"""The xz reader of BentoML imports (containers._XzReader) and the tar stream read
member by member: concatenated xz streams, a cut anywhere (inside a stream, between
streams, inside the tar), trailing data, and few large reads of the compressed file."""

from __future__ import annotations

import errno
import gc
import io
import itertools
import lzma
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import modelvault
from modelvault.archive.bentoml import containers, reader
from modelvault.errors import ArchiveError

GOLDEN = Path(__file__).parent.parent / "golden" / "bentoml"


def _tar_of(folder: Path) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.add(folder, arcname=".")
    return raw.getvalue()


def _xz_streams(data: bytes, cuts: list[int]) -> tuple[bytes, list[int]]:
    """``data`` as concatenated xz streams, one per piece between ``cuts``; also where
    each stream ends in the file."""
    out, ends = b"", []
    bounds = [0, *cuts, len(data)]
    for a, b in itertools.pairwise(bounds):
        out += lzma.compress(data[a:b], preset=0)
        ends.append(len(out))
    return out, ends


def _counting(data: bytes) -> containers._Counting:
    return containers._Counting(io.BytesIO(data), None)


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(GOLDEN / "bento_pick.folder", folder)
    (folder / "weights.bin").write_bytes(os.urandom(3 << 20) + bytes(1 << 20))
    return folder


def test_the_reader_reads_concatenated_streams_whole() -> None:
    data = os.urandom(3 << 20) + bytes(5 << 20) + os.urandom(100_000)
    xz, _ = _xz_streams(data, [1, 512, 3 << 20, (3 << 20) + 7, len(data) - 10])
    for size in (1, 4096, 1 << 20, 3 << 20):
        got = []
        with containers._XzReader(_counting(xz)) as f:
            while block := f.read(size):
                assert len(block) <= size
                got.append(block)
        assert b"".join(got) == data


def test_the_reader_reads_the_compressed_file_in_large_blocks() -> None:
    """~1 read of the compressed file per _BLOCK (LZMAFile: one per 8 KiB)."""
    data = os.urandom(6 << 20)
    xz, _ = _xz_streams(data, [2 << 20])
    source = _counting(xz)
    reads = 0
    real = source.read

    def read(size: int | None = -1) -> bytes:
        nonlocal reads
        reads += 1
        return real(size)

    source.read = read  # type: ignore[method-assign]
    with containers._XzReader(source) as f:
        assert f.readall() == data
    assert source.count == len(xz)
    assert reads <= len(xz) // containers._BLOCK + 4


def test_the_reader_raises_on_a_cut_and_ignores_trailing_data_as_lzmafile() -> None:
    data = os.urandom(1 << 20)
    xz, ends = _xz_streams(data, [300_000])
    with pytest.raises(EOFError), containers._XzReader(_counting(xz[:-1])) as f:
        f.readall()
    with pytest.raises(EOFError), containers._XzReader(_counting(xz[: ends[0] // 2])) as f:
        f.readall()
    trailing = xz + b"not xz at all"
    with containers._XzReader(_counting(trailing)) as f, lzma.LZMAFile(io.BytesIO(trailing)) as g:
        assert f.readall() == data == g.read()  # ignored, as LZMAFile does
    bad = xz[:200] + bytes([xz[200] ^ 0x55]) + xz[201:]
    with pytest.raises(lzma.LZMAError), containers._XzReader(_counting(bad)) as f:
        f.readall()


def test_a_model_in_many_xz_streams_imports_as_its_folder(
    model_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stream boundaries inside tar headers, inside the large member (saved while it
    is unpacked) and at its end."""
    monkeypatch.setattr(reader, "OVERLAP_MIN", 1 << 20)
    tar = _tar_of(model_folder)
    xz, _ = _xz_streams(tar, [100, 512, 1000, 700_000, 2_000_003, len(tar) - 1024])
    archive = tmp_path / "many.bentomodel"
    archive.write_bytes(xz)
    model = modelvault.Store(tmp_path / "store").import_model(str(archive))
    want = modelvault.Store(tmp_path / "other").import_model(str(model_folder))
    assert model.id == want.id
    weights = (model_folder / "weights.bin").read_bytes()
    assert (Path(model.path) / "weights.bin").read_bytes() == weights


@pytest.mark.parametrize("overlap", [False, True], ids=["staged", "overlapped"])
def test_an_archive_cut_between_streams_or_tar_blocks_is_refused(
    overlap: bool, model_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut where an xz stream ends (a valid .xz file, but not the whole tar): inside the
    large member, just after the last member (before the tar's end-of-archive blocks) or
    inside the first end block; and the same cuts of a plain tar. ArchiveError, the store
    left as it was. After the first end block, nothing is missing (tarfile stops there)."""
    if overlap:
        monkeypatch.setattr(reader, "OVERLAP_MIN", 1)
    tar = _tar_of(model_folder)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        last = t.getmembers()[-1]
        end = last.offset_data + -(-last.size // 512) * 512  # where the end blocks begin
    cuts = [1_000_000, end, end + 100, end + 512]
    xz, ends = _xz_streams(tar, cuts)
    store = modelvault.Store(tmp_path / "store")
    store.import_model(str(GOLDEN / "bento_sk.bentomodel"))
    before = sorted(p.name for p in (tmp_path / "store").rglob("*"))
    for i, cut in enumerate(cuts[:-1]):
        for kind, data in (("xz", xz[: ends[i]]), ("tar", tar[:cut])):
            archive = tmp_path / f"cut-{i}.{kind}"
            archive.write_bytes(data)
            with pytest.raises(ArchiveError, match=r"truncated or corrupt|cut short"):
                store.import_model(str(archive))
    assert sorted(p.name for p in (tmp_path / "store").rglob("*")) == before
    want = modelvault.Store(tmp_path / "other").import_model(str(model_folder)).id
    for name, data in (("one-end-block.xz", xz[: ends[-2]]), ("whole.xz", xz)):
        (tmp_path / name).write_bytes(data)
        assert store.import_model(str(tmp_path / name)).id == want


def test_a_bomb_in_a_later_stream_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget holds across streams: zeros after a stream of the model's files."""
    monkeypatch.setattr(containers, "EXPANSION_SLACK", 4 << 20)
    raw = io.BytesIO()
    zeros = bytes(64 << 20)  # ~10 KB of xz: far more than 1024 times the archive
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.add(GOLDEN / "bento_pick.folder", arcname=".")
        info = tarfile.TarInfo("./zeros.bin")
        info.size = len(zeros)
        tar.addfile(info, io.BytesIO(zeros))
    data = raw.getvalue()
    xz, _ = _xz_streams(data, [len(data) - len(zeros) - 2048])
    archive = tmp_path / "bomb.bentomodel"
    archive.write_bytes(xz)
    store = modelvault.Store(tmp_path / "store")
    with pytest.raises(ArchiveError, match="decompression bomb"):
        store.import_model(str(archive))
    assert not store.list()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs (needs root, as tests/harness/test_disk_full.py), unmounted after."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs (not root?)")
    try:
        yield mnt
    finally:
        gc.collect()  # a failed test's store may still hold files open
        if subprocess.run(["umount", str(mnt)]).returncode:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.parametrize("free_mib", [6.5, 8])
def test_a_disk_full_while_a_large_member_is_unpacked_and_saved(
    free_mib: float, tmpfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The staging file's writes (a thread of their own) or the save run out of space
    mid-member: the import fails saying so, without hanging, and the store is as it
    was; with the space back it succeeds."""
    monkeypatch.setattr(reader, "OVERLAP_MIN", 1 << 20)
    folder = tmp_path / "model"
    shutil.copytree(GOLDEN / "bento_pick.folder", folder)
    weights = os.urandom(6 << 20)
    (folder / "weights.bin").write_bytes(weights)
    archive = tmp_path / "m.bentomodel"
    archive.write_bytes(lzma.compress(_tar_of(folder), preset=0))
    store = modelvault.Store(tmpfs / "store")
    store.import_model(str(GOLDEN / "bento_sk.bentomodel"))
    before = sorted(str(p) for p in (tmpfs / "store").rglob("*"))
    st = os.statvfs(tmpfs)
    ballast = tmpfs / "ballast"
    with open(ballast, "wb") as f:  # the member (6 MiB) fits, not twice
        os.posix_fallocate(f.fileno(), 0, st.f_bavail * st.f_frsize - int(free_mib * (1 << 20)))
    with pytest.raises((OSError, modelvault.ModelVaultError)) as failed:
        store.import_model(str(archive))
    err = failed.value
    assert (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "space" in str(err)
    del failed, err
    assert sorted(str(p) for p in (tmpfs / "store").rglob("*")) == before
    ballast.unlink()
    model = store.import_model(str(archive))
    assert (Path(model.path) / "weights.bin").read_bytes() == weights
    assert store.verify().ok


def test_a_staging_write_that_fails_is_the_error_reported_not_the_saves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the staging file's writes stop (ENOSPC), the save waiting on its bytes stops
    too, with an ArchiveError of its own; the import reports the cause, ENOSPC, even when
    it sees the save's failure first (a slow unpacking: both have failed by its check)."""
    import time

    monkeypatch.setattr(reader, "OVERLAP_MIN", 1 << 20)
    real_stage = reader._stage

    class FullAfterTwo:
        def __init__(self, blocks: object) -> None:
            self.blocks, self.got = blocks, 0

        def get(self) -> bytes | None:
            self.got += 1
            if self.got > 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.blocks.get()  # type: ignore[attr-defined, no-any-return]

    monkeypatch.setattr(
        reader, "_stage", lambda out, blocks, source: real_stage(out, FullAfterTwo(blocks), source)
    )
    real_take = containers._Budget.take

    def slow_take(self: containers._Budget, name: str, n: int) -> None:
        time.sleep(0.05)
        real_take(self, name, n)

    monkeypatch.setattr(containers._Budget, "take", slow_take)
    folder = tmp_path / "model"
    shutil.copytree(GOLDEN / "bento_pick.folder", folder)
    (folder / "weights.bin").write_bytes(os.urandom(6 << 20))
    archive = tmp_path / "m.bentomodel"
    archive.write_bytes(lzma.compress(_tar_of(folder), preset=0))
    store = modelvault.Store(tmp_path / "store")
    with pytest.raises(OSError) as failed:
        store.import_model(str(archive))
    assert failed.value.errno == errno.ENOSPC
    assert not store.list()
