"""gc frees what no tag reaches, never what a live tag reaches, and cleans crash leftovers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _helpers import write_files

from modelvault import IntegrityError, Store

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


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(proc.stdout)


def test_gc_removes_temporaries_of_dead_processes_only(store: Store, tmp_path: Path) -> None:
    src = write_files(tmp_path / "src", {"f": b"keep me"})
    store.save(src, "m:v")
    dead, live = _dead_pid(), os.getpid()
    root = store.path
    made = {}
    for pid in (dead, live):
        made[pid] = [
            root / "objects" / "tmp" / f".tmp-{pid}-aa.pack",
            root / "objects" / "tmp" / f".tmp-{pid}-bb.idx",
            root / "refs" / "m" / f".tmp-{pid}-cc.tmp",
            root / f".tmp-{pid}-dd.tmp",
            root / "cache" / f".tmp-{pid}-ee.cache",
            root / "tmp" / f".tmp-{pid}-ff.staging",
        ]
        for p in made[pid]:
            if p.suffix in (".cache", ".staging"):
                p.mkdir()
                (p / "file").write_bytes(b"partial")
            else:
                p.write_bytes(b"partial")
    orphan = root / "objects" / "packs" / ("ab" * 32 + ".pack")  # renamed, index never came
    orphan.write_bytes(b"MVPK")
    assert store.gc() > 0
    assert not any(p.exists() for p in made[dead])
    assert not orphan.exists()
    assert all(p.exists() for p in made[live])  # a live writer's files are never touched
    assert store.get("m:v").open("f").read() == b"keep me"
    assert store.verify().ok


def test_gc_refuses_when_a_live_tag_reaches_a_damaged_object(
    store: Store, two_sharing: tuple[Path, Path]
) -> None:
    """A damaged tree hides which chunks are live: gc must stop rather than free them."""
    a, b = two_sharing
    store.save(a, "m:a")
    mb = store.save(b, "m:b")
    store.delete("m:a")
    tree = mb._object.tree
    e = store._db.entry(tree)
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
