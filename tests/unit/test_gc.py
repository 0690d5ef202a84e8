"""gc frees what no tag reaches, never what a live tag reaches, and cleans crash leftovers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _helpers import write_files

from modelvault import IntegrityError, Store, _fsutil

MiB = 1024 * 1024


@pytest.fixture
def two_sharing(tmp_path: Path) -> tuple[Path, Path]:
    """Two folders whose weights share their first 3 MiB (and a whole identical file)."""
    rng = np.random.default_rng(3)
    shared, config = rng.bytes(3 * MiB), b'{"dim": 512}\n'
    a = write_files(tmp_path / "a", {"w.bin": shared + rng.bytes(MiB), "config.json": config})
    b = write_files(tmp_path / "b", {"w.bin": shared + rng.bytes(MiB), "config.json": config})
    return a, b


def _read_all(store: Store, tag: str, src: Path) -> None:
    model = store.get(tag)
    for p in src.rglob("*"):
        if p.is_file():
            rel = p.relative_to(src).as_posix()
            with model.open(rel) as f:
                assert f.read() == p.read_bytes(), rel


def test_deleting_one_of_two_sharing_models_keeps_the_other_whole(
    store: Store, two_sharing: tuple[Path, Path]
) -> None:
    a, b = two_sharing
    store.save(a, "m:a")
    store.save(b, "m:b")  # its shared chunks live in m:a's pack
    before = store.stats().stored_bytes
    store.delete("m:a")
    freed = store.gc()
    after = store.stats().stored_bytes
    assert freed > 0
    assert after < before
    assert before - after <= freed  # freed also counts the rewritten pack it replaced
    assert after >= 4 * MiB  # m:b (4 MiB of random bytes) is all still there
    for s in (store, Store(store.path)):  # this process's index and a fresh one
        _read_all(s, "m:b", b)
        assert s.verify().ok
    assert (Path(store.get("m:b").path) / "w.bin").read_bytes() == (b / "w.bin").read_bytes()
    assert store.gc() == 0  # nothing left to free


def test_gc_frees_everything_once_no_tag_is_left(
    store: Store, two_sharing: tuple[Path, Path]
) -> None:
    a, b = two_sharing
    store.save(a, "m:a")
    store.save(b, "m:b")
    store.get("m:a").path  # a cache folder, freed too  # noqa: B018
    before = store.stats().stored_bytes
    store.delete("m")
    assert store.gc() >= before
    assert store.stats().stored_bytes == 0
    assert list((store.path / "cache").iterdir()) == []


def test_gc_with_every_tag_live_frees_nothing(store: Store, two_sharing: tuple[Path, Path]) -> None:
    a, b = two_sharing
    store.save(a, "m:a")
    store.save(b, "m:b")
    path = store.get("m:a").path
    before = store.stats()
    assert store.gc() == 0
    assert store.stats() == before
    assert Path(path).is_dir()  # the cache of a live model stays
    _read_all(store, "m:a", a)


def test_gc_drops_the_cache_of_a_deleted_model(
    store: Store, two_sharing: tuple[Path, Path]
) -> None:
    a, b = two_sharing
    store.save(a, "m:a")
    store.save(b, "m:b")
    cache_a, cache_b = Path(store.get("m:a").path), Path(store.get("m:b").path)
    store.delete("m:a")
    assert store.gc() > 0
    assert not cache_a.exists()
    assert (cache_b / "w.bin").read_bytes() == (b / "w.bin").read_bytes()


def test_deleting_latest_makes_the_next_newest_latest(store: Store, tmp_path: Path) -> None:
    src = write_files(tmp_path / "src", {"f": b"x"})
    v1, v2, v3 = (store.save(src, "m") for _ in range(3))
    assert store.get("m").tag == v3.tag
    store.delete("m:latest")
    assert store.get("m:latest").tag == v2.tag
    store.delete(str(v2.tag))
    assert store.get("m").tag == v1.tag
    assert [m.tag for m in store.list("m")] == [v1.tag]
    store.gc()
    assert store.get("m").open("f").read() == b"x"


_HOLDER = """
import contextlib, sys
from pathlib import Path
from modelvault import _fsutil

made = []
with contextlib.ExitStack() as stack:
    for folder, suffix in zip(sys.argv[1::2], sys.argv[2::2]):
        tmp = stack.enter_context(_fsutil.in_flight(Path(folder), suffix))
        if suffix in (".cache", ".staging"):
            tmp.mkdir()
            (tmp / "file").write_bytes(b"partial")
        else:
            tmp.write_bytes(b"partial")
        made.append(str(tmp))
    print("\\n".join(made), flush=True)
    sys.stdin.readline()  # hold the locks until told (or killed)
"""


def _hold_temps(places: list[tuple[Path, str]]) -> tuple[subprocess.Popen[str], list[Path]]:
    """A process that makes in-flight temporaries in ``places`` and holds their locks."""
    args = [str(a) for place in places for a in place]
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, *args], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    made = [Path(proc.stdout.readline().strip()) for _ in places]
    return proc, made


def test_gc_removes_temporaries_nobody_holds_and_keeps_held_ones(
    store: Store, tmp_path: Path
) -> None:
    """In-flight temporaries are told by their flock, not by a pid: one whose lock a
    live process holds is never touched, one whose process was killed (lock released
    by the kernel) or that has no lock file (a crash, an older modelvault) is removed."""
    src = write_files(tmp_path / "src", {"f": b"keep me"})
    store.save(src, "m:v")
    root = store.path
    places = [
        (root / "refs" / "m", ".tmp"),
        (root, ".tmp"),
        (root / "cache", ".cache"),
        (root / "tmp", ".staging"),
    ]
    held, held_paths = _hold_temps(places)
    killed, killed_paths = _hold_temps(places)
    killed.kill()
    killed.wait()
    unlocked = [folder / f".tmp-{os.getpid()}-{'ab' * 8}{suffix}" for folder, suffix in places]
    for p in unlocked:
        p.write_bytes(b"no lock file")
    pack_tmps = [root / "objects" / "tmp" / ".tmp-1-aa.pack", root / "objects" / "tmp" / "x.idx"]
    for p in pack_tmps:  # no writer runs while gc holds its lock: all of objects/tmp is dead
        p.write_bytes(b"partial")
    orphan = root / "objects" / "packs" / ("ab" * 32 + ".pack")  # renamed, index never came
    orphan.write_bytes(b"MVPK")
    try:
        assert store.gc() > 0
        assert [p for p in killed_paths + unlocked + pack_tmps + [orphan] if p.exists()] == []
        assert all(p.exists() for p in held_paths)
        assert all(_fsutil.lock_of(p).exists() for p in held_paths)
        assert not any(_fsutil.lock_of(p).exists() for p in killed_paths)  # dead locks go too
    finally:
        held.kill()
        held.wait()
    store.gc()
    assert [p for p in held_paths if p.exists() or _fsutil.lock_of(p).exists()] == []
    assert store.get("m:v").open("f").read() == b"keep me"
    assert store.verify().ok


def test_in_flight_lock_survives_a_sweep_racing_its_creation(tmp_path: Path) -> None:
    """A sweep that removes a lock file between its creation and its flock makes the
    owner take a fresh name, so an owner never holds a lock on a removed file."""
    folder = tmp_path / "f"
    folder.mkdir()
    real_flock = _fsutil.fcntl.flock
    swept = []

    def flock_after_sweep(fd: int, op: int) -> None:
        if not swept and op == _fsutil.fcntl.LOCK_EX:
            for lock in folder.glob("*.lock"):
                lock.unlink()  # what a sweep does to a lock file nobody held yet
                swept.append(lock)
        real_flock(fd, op)

    _fsutil.fcntl.flock = flock_after_sweep  # type: ignore[assignment]
    try:
        with _fsutil.in_flight(folder) as tmp:
            tmp.write_bytes(b"x")
            assert _fsutil.lock_of(tmp).exists()
            assert _fsutil.lock_of(tmp) != swept[0]
            assert _fsutil.temp_in_use(tmp)
    finally:
        _fsutil.fcntl.flock = real_flock
    assert not _fsutil.temp_in_use(tmp)


def test_gc_refuses_when_a_live_tag_reaches_a_damaged_object(
    store: Store, two_sharing: tuple[Path, Path]
) -> None:
    """A damaged tree hides which chunks are live: gc must stop rather than free them."""
    a, b = two_sharing
    store.save(a, "m:a")
    mb = store.save(b, "m:b")
    store.delete("m:a")
    tree = mb.object.tree
    e = store.repo.objects.entry(tree)
    assert e is not None
    pack = store.path / "objects" / "packs" / f"{e.pack}.pack"
    pack.chmod(0o644)
    with open(pack, "r+b") as f:
        f.seek(e.offset)
        byte = f.read(1)
        f.seek(e.offset)
        f.write(bytes([byte[0] ^ 0x01]))
    before = store.stats().stored_bytes
    with pytest.raises(IntegrityError, match="m:b") as exc:
        store.gc()
    assert "verify" in str(exc.value)
    assert store.stats().stored_bytes == before  # nothing was freed
    # once the broken tag is deleted, gc works again
    store.delete("m:b")
    assert store.gc() > 0
    assert store.stats().stored_bytes == 0


def test_gc_copies_the_live_objects_of_many_packs_into_one(store: Store, tmp_path: Path) -> None:
    """Each save writes its own pack. Eight packs each hold a file that lives on (another
    model shares it) and one that dies: gc moves what lives on into one new pack, not
    one per old pack."""
    rng = np.random.default_rng(9)
    packs_dir = store.path / "objects" / "packs"
    keepers = []
    for i in range(8):
        kept = rng.bytes(MiB)
        store.save(
            write_files(tmp_path / f"a{i}", {"k.bin": kept, "d.bin": rng.bytes(MiB)}), f"a:v{i}"
        )
        keepers.append(write_files(tmp_path / f"b{i}", {"k.bin": kept}))
        store.save(keepers[-1], f"b:v{i}")  # shares k.bin: only its tree and model are new
    assert len(list(packs_dir.glob("*.pack"))) == 16
    for i in range(8):
        store.delete(f"a:v{i}")
    store.gc()
    assert len(list(packs_dir.glob("*.pack"))) == 8 + 1  # b's own packs + one new pack
    for s in (store, Store(store.path)):
        for i in range(8):
            _read_all(s, f"b:v{i}", keepers[i])
        assert s.verify().ok


def test_gc_sweeps_dead_temporaries_in_local_copies_of_remote_indexes(
    store: Store, tmp_path: Path
) -> None:
    """A push or pull killed while caching a remote index leaves a temporary there."""
    folder = store.path / "remotes" / "0123abcd" / "packs"
    folder.mkdir(parents=True)
    dead = folder / f".tmp-{os.getpid()}-{'cd' * 8}.tmp"
    dead.write_bytes(b"half an index")
    dead_lock = _fsutil.lock_of(dead)
    dead_lock.write_bytes(b"")  # its process was killed: nobody holds it
    held, [held_path] = _hold_temps([(folder, ".tmp")])
    try:
        store.gc()
        assert not dead.exists() and not dead_lock.exists()
        assert held_path.exists()
    finally:
        held.kill()
        held.wait()


def test_create_only_that_published_reports_success_even_if_its_temporary_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error removing the temporary after the link published the file must not
    report the write as failed: a retry would find the path taken (harness bug B6)."""
    import errno

    real_unlink = Path.unlink

    def failing_unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name.startswith(".tmp-") and not self.name.endswith(".lock"):
            raise OSError(errno.EIO, "Input/output error", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", failing_unlink)
    target = tmp_path / "ref"
    assert _fsutil.create_only(target, b"published")
    assert target.read_bytes() == b"published"
    assert not _fsutil.create_only(target, b"second")  # the path is taken, as it should be
