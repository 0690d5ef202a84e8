"""The record of the pack folder (``objects/packs.state``, docs/format.md 5.2): a process
takes it instead of listing the folder while the folder's time is the recorded one;
writers keep it true; removing a pack drops it; a record that is missing, damaged, out of
date or names files that are gone is never trusted."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _helpers import chunk_records

from modelvault.odb import PackDB
from modelvault.odb.packs import MERGE_AT
from modelvault.odb.state import (
    COARSE_SETTLED_NS,
    SETTLED_NS,
    STATE_NAME,
    DirState,
    dir_key,
    read_state,
    removals,
    settled,
)


def _write(db: PackDB, seed: int, n: int = 20) -> list[bytes]:
    recs = chunk_records(n, seed)
    with db.writer() as w:
        w.add_prepared_many(recs)
    return [r[1] for r in recs]


class _Listings:
    """Counts the listings of one pack folder (the real ``os.listdir`` runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, pack_dir: Path) -> None:
        self.count = 0
        real = os.listdir

        def listdir(path: object = ".") -> list[str]:
            names = real(path)  # type: ignore[arg-type]
            if Path(str(path)) == pack_dir:
                self.count += 1
                self.after()
            return names

        self.after = lambda: None
        monkeypatch.setattr(os, "listdir", listdir)


def _settle() -> None:
    time.sleep(2 * SETTLED_NS / 1e9)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "objects"


def _recorded(root: Path) -> PackDB:
    """A store of two packs whose folder is recorded (a listing made it, once settled)."""
    db = PackDB(root)
    _write(db, 1)
    _write(db, 2)
    _settle()
    PackDB(root).refresh()
    state = read_state(root)
    assert state is not None and state.key == dir_key(db.pack_dir)
    assert len(state.loose) == 2 and state.midx == ()
    return db


def test_a_fresh_process_takes_the_record_instead_of_listing(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _recorded(root)
    ids = [oid for p in db.packs() for oid in db.entries_of(p)]
    listings = _Listings(monkeypatch, db.pack_dir)
    fresh = PackDB(root)
    assert all(fresh.has(oid) for oid in ids)
    assert sorted(fresh.packs()) == sorted(db.packs())
    assert listings.count == 0


def test_a_pack_published_by_another_process_enters_the_record(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _recorded(root)
    other = PackDB(root)
    new = _write(other, 3)  # publishing holds the lock and updates the record
    state = read_state(root)
    assert state is not None and state.key == dir_key(other.pack_dir)
    assert len(state.loose) == 3
    listings = _Listings(monkeypatch, other.pack_dir)
    fresh = PackDB(root)
    assert all(fresh.entry(oid) is not None for oid in new)
    assert listings.count == 0


def test_a_merge_enters_the_record(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = _recorded(root)
    every = [oid for p in db.packs() for oid in db.entries_of(p)]
    for seed in range(10, 10 + MERGE_AT - 2):
        every += _write(db, seed)
    [layer] = db.layers()  # the commit of the 8th pack merged them
    state = read_state(root)
    assert state is not None and state.midx == (layer.name,) and state.loose == ()
    listings = _Listings(monkeypatch, db.pack_dir)
    fresh = PackDB(root)
    assert all(fresh.has(oid) for oid in every)
    assert listings.count == 0


def test_removing_a_pack_drops_the_record_and_counts(root: Path) -> None:
    db = _recorded(root)
    pack = db.packs()[0]
    gone = list(db.entries_of(pack))
    before = removals(root)
    db.delete_pack(pack)
    assert read_state(root) is None and removals(root) == before + 1
    fresh = PackDB(root)
    assert pack not in fresh.packs() and not any(fresh.has(oid) for oid in gone)


def test_a_pack_added_by_another_program_is_seen(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older modelvault writes packs without the lock or the record: the folder's
    time moves, so the record is not taken."""
    db = _recorded(root)
    elsewhere = PackDB(tmp_path / "other")
    new = _write(elsewhere, 7)
    [pack] = elsewhere.packs()
    for ext in (".pack", ".idx"):
        os.link(elsewhere.pack_dir / f"{pack}{ext}", db.pack_dir / f"{pack}{ext}")
    listings = _Listings(monkeypatch, db.pack_dir)
    fresh = PackDB(root)
    assert all(fresh.has(oid) for oid in new)
    assert listings.count == 1


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b'{"version": 1}',
        b'{"version": 2, "dir": [0, 0, 0], "midx": [], "loose": []}',
    ],
)
def test_a_damaged_record_is_ignored(root: Path, content: bytes) -> None:
    db = _recorded(root)
    ids = [oid for p in db.packs() for oid in db.entries_of(p)]
    (root / STATE_NAME).write_bytes(content)
    fresh = PackDB(root)
    assert all(fresh.has(oid) for oid in ids)


def test_a_record_naming_files_that_are_gone_is_not_taken(root: Path) -> None:
    db = _recorded(root)
    ids = [oid for p in db.packs() for oid in db.entries_of(p)]
    key = dir_key(db.pack_dir)
    missing = "ab" * 32
    for state in (
        DirState(key, (), (missing, *db.packs())),
        DirState(key, (f"multi-{missing}.midx",), tuple(db.packs())),
    ):
        (root / STATE_NAME).write_bytes(state.encode())
        fresh = PackDB(root)
        assert all(fresh.has(oid) for oid in ids) and missing not in fresh.packs()


def test_names_outside_the_pack_folder_are_refused() -> None:
    doc = b'{"version": 1, "dir": [1, 2, 3], "midx": [], "loose": ["../../config"]}'
    assert DirState.decode(doc) is None
    good = DirState((1, 2, 3), ("multi-x.midx",), ("ab",))
    assert DirState.decode(good.encode()) == good


def test_a_listing_is_recorded_only_once_the_folder_has_settled(root: Path) -> None:
    db = PackDB(root)
    _write(db, 1)
    PackDB(root).refresh()  # the folder changed just now: a change in the same tick
    assert read_state(root) is None  # could keep its time, so no record
    _settle()
    PackDB(root).refresh()
    assert read_state(root) is not None


def test_settled_times() -> None:
    now = 10**18 + 123_456_789
    assert settled((0, 0, now - SETTLED_NS), now)
    assert not settled((0, 0, now - SETTLED_NS + 1), now)
    whole = 10**18  # a file system of whole-second times: two seconds
    assert not settled((0, 0, whole), whole + COARSE_SETTLED_NS - 1)
    assert settled((0, 0, whole), whole + COARSE_SETTLED_NS)


def test_a_pack_removed_during_a_listing_never_enters_a_record(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = PackDB(root)
    _write(db, 1)
    _write(db, 2)
    victim = db.packs()[0]
    _settle()
    listings = _Listings(monkeypatch, db.pack_dir)
    gc = PackDB(root)

    key = dir_key(db.pack_dir)

    def remove_once() -> None:
        listings.after = lambda: None
        gc.delete_pack(victim)
        os.utime(db.pack_dir, ns=(key[2], key[2]))  # as if within the same clock tick

    listings.after = remove_once  # gc removes a pack just after a reader listed the folder
    PackDB(root).refresh()
    assert dir_key(db.pack_dir) == key
    state = read_state(root)
    assert state is None or victim not in state.loose
    fresh = PackDB(root)
    assert victim not in fresh.packs()
    os.utime(db.pack_dir)  # (the folder's time moves on)
    _settle()
    fresh = PackDB(root)
    assert victim not in fresh.packs()
    state = read_state(root)
    assert state is not None and victim not in state.loose


def test_an_object_written_in_the_same_tick_is_still_found(root: Path) -> None:
    """A record can miss a pack whose change kept the folder's time: a lookup that
    misses lists the folder before it says the object is missing."""
    db = _recorded(root)
    reader = PackDB(root)
    reader.refresh()
    elsewhere = PackDB(root.parent / "other")
    new = _write(elsewhere, 9)
    [pack] = elsewhere.packs()
    key = dir_key(db.pack_dir)
    for ext in (".pack", ".idx"):
        os.link(elsewhere.pack_dir / f"{pack}{ext}", db.pack_dir / f"{pack}{ext}")
    os.utime(db.pack_dir, ns=(key[2], key[2]))  # as if within the same clock tick
    assert dir_key(db.pack_dir) == key
    assert not reader.has(new[0])  # (has() may miss: a save then writes it again)
    assert reader.read(new[0]) is not None


GOLDEN = Path(__file__).parent.parent / "golden"


def test_golden_record_of_store_v3_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tests/golden/packs-state-v1.json``: the record of ``store-v3``'s pack folder as
    format.md 5.2 lays it out; with ``dir`` set to the copy's folder it is taken (no
    listing) and every model reads back."""
    import shutil

    import modelvault

    data = (GOLDEN / "packs-state-v1.json").read_bytes()
    state = DirState.decode(data)
    assert state is not None and state.key == (2049, 1234567, 1796508000123456789)
    assert state.encode() == data  # the writer's bytes, exactly
    shutil.copytree(GOLDEN / "store-v3", tmp_path / "s")
    root = tmp_path / "s" / "objects"
    full = PackDB(root)
    full.refresh(full=True)
    assert state.midx == tuple(layer.name for layer in full.layers())
    (root / STATE_NAME).write_bytes(
        DirState(dir_key(root / "packs"), state.midx, state.loose).encode()
    )
    listings = _Listings(monkeypatch, root / "packs")
    store = modelvault.Store(tmp_path / "s")
    tags = [str(m.tag) for m in store.list()]
    assert tags
    for tag in tags:  # every object read and checked against its id
        assert any(p.is_file() for p in Path(store.get(tag).path).rglob("*"))
    assert listings.count == 0
    assert store.verify().ok


_WRITER = """
import random, sys
from pathlib import Path
from modelvault.core import codec
from modelvault.core.hashing import ObjType, object_id
from modelvault.odb import PackDB
from modelvault.odb import packs as packs_mod

packs_mod.MERGE_AT = 10**6  # every pack stays uncovered: each publish updates the record
db = PackDB(Path(sys.argv[1]))
rng = random.Random(int(sys.argv[2]))
for _ in range(int(sys.argv[3])):
    recs = []
    for _ in range(5):
        data = rng.randbytes(100)
        oid = object_id(ObjType.CHUNK, data)
        recs.append((int(ObjType.CHUNK), oid, 0, len(data), data))
    with db.writer() as w:
        w.add_prepared_many(recs)
"""


def test_concurrent_writers_lose_no_pack_from_the_record(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processes publishing packs at once each update the record under the lock: a
    fresh process that takes it (no listing) sees every pack."""
    import subprocess
    import sys

    _recorded(root)
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(root), str(seed), "6"])
        for seed in range(4)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    state = read_state(root)
    assert state is not None and state.key == dir_key(root / "packs")
    listings = _Listings(monkeypatch, root / "packs")
    fresh = PackDB(root)
    seen = set(fresh.packs())
    assert listings.count == 0
    on_disk = {p.stem for p in (root / "packs").glob("*.idx")}
    assert len(on_disk) == 2 + 4 * 6 and seen == on_disk
