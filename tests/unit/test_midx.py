"""The on-disk multi-pack index: merged at commit, found by binary search, rebuilt from the
packs' own indexes when missing or damaged, reported by verify (docs/format.md 4.3)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _helpers import chunk_records, write_files
from blake3 import blake3

from modelvault import Store
from modelvault.core.hashing import ObjType
from modelvault.core.packfmt import MIDX_HEADER, PackFormatError, midx_layout
from modelvault.errors import IntegrityError
from modelvault.odb import PackDB
from modelvault.odb import midx as midx_mod
from modelvault.odb import packs as packs_mod
from modelvault.odb.midx import MultiIndex, id_list, write_midx
from modelvault.odb.packs import MERGE_AT, Record


def _fill(db: PackDB, packs: int, per: int = 50) -> list[Record]:
    """``packs`` packs of ``per`` new objects each, one writer (and one commit) per pack."""
    every: list[Record] = []
    for _ in range(packs):
        recs = chunk_records(per, seed=len(db.packs()) + 1000)
        with db.writer() as w:
            w.add_prepared_many(recs)
        every += recs
    return every


def _midx_files(db: PackDB) -> list[Path]:
    return sorted(db.pack_dir.glob("multi-*.midx"))


def test_commits_merge_pack_indexes_and_lookups_find_every_object(tmp_path: Path) -> None:
    db = PackDB(tmp_path / "objects")
    recs = _fill(db, MERGE_AT - 1)
    assert _midx_files(db) == []  # not yet: few packs are read from their own .idx
    recs += _fill(db, 1)
    [midx] = _midx_files(db)
    layer = MultiIndex(midx)
    assert layer.count == len(recs) and len(layer.packs) == MERGE_AT
    assert layer.checksum_ok() and midx.name == f"multi-{midx.read_bytes()[-32:].hex()}.midx"
    fresh = PackDB(tmp_path / "objects")
    assert fresh.layers() and fresh._loose == {}
    for _, oid, how, raw_len, payload in recs:
        e = fresh.entry(oid)
        assert e is not None and (e.codec, e.raw_len, e.stored_len) == (how, raw_len, len(payload))
        assert fresh.read_stored(oid)[1] == bytes(payload)
    ids = [r[1] for r in recs]
    absent = [blake3(b"absent %d" % i).digest() for i in range(100)]
    batch = fresh.entries(ids + absent)  # the batch path (_cdc.find)
    assert batch == [fresh.entry(oid) for oid in ids] + [None] * 100
    assert fresh.entries(ids[:3]) == batch[:3]  # one by one
    assert layer.entries_at([2, -1, 0]) == [layer.entry_at(2), None, layer.entry_at(0)]
    assert fresh.entry(absent[0]) is None and not fresh.has(absent[1])
    assert sorted(fresh.ids()) == sorted(set(ids))
    assert fresh.packs() == sorted(p.stem for p in db.pack_dir.glob("*.idx"))


def test_merges_are_geometric_and_keep_few_index_files(tmp_path: Path) -> None:
    db = PackDB(tmp_path / "objects")
    recs = _fill(db, 6 * MERGE_AT, per=10)
    assert 1 <= len(_midx_files(db)) <= 3
    fresh = PackDB(tmp_path / "objects")
    assert len(fresh._loose_packs) < MERGE_AT
    assert all(fresh.entry(r[1]) is not None for r in recs)


def test_an_id_in_two_packs_is_kept_once(tmp_path: Path) -> None:
    db = PackDB(tmp_path / "objects")
    recs = chunk_records(20, seed=7)
    for order in (recs, recs[::-1]):  # the same objects again, in a second pack
        with db.writer(repack=True) as w:
            w.add_prepared_many(order)
    with db.writer(repack=True) as w:
        w.add_prepared_many(chunk_records(5, seed=8))
    assert len(db.packs()) == 2 + 1
    layer = db.rebuild_index()
    assert layer is not None and layer.count == 25 and len(layer.packs) == 3
    ids = id_list(layer.ids())
    assert ids == sorted(ids) and len(set(ids)) == 25


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing"])
def test_a_damaged_or_missing_midx_is_passed_over_and_rebuilt(
    store: Store, tmp_path: Path, damage: str
) -> None:
    rng = np.random.default_rng(1)
    srcs = {}
    for i in range(MERGE_AT):
        srcs[f"m:v{i}"] = write_files(tmp_path / f"s{i}", {"w.bin": rng.bytes(5000 + i)})
        store.save(srcs[f"m:v{i}"], f"m:v{i}")
    [midx] = _midx_files(store.repo.objects)
    data = bytearray(midx.read_bytes())
    midx.chmod(0o644)
    if damage == "flip":  # an id in the id column: a lookup no longer finds it
        data[midx_layout(MERGE_AT, 0).ids + 5] ^= 0xFF
        midx.write_bytes(data)
    elif damage == "truncate":
        midx.write_bytes(data[:-7])
    else:
        midx.unlink()
    fresh = Store(store.path)
    if damage != "flip":  # a damaged shape or no file at all: the packs' own indexes serve
        for tag, src in srcs.items():
            assert fresh.get(tag).open("w.bin").read() == (src / "w.bin").read_bytes()
    report = fresh.verify()
    if damage == "missing":
        assert report.ok
    else:
        assert not report.ok and f"objects/packs/{midx.name}" in report.damaged_files
        assert midx.name in report.rebuilt
    # rebuilt from the packs' own indexes (the same bytes, so the same name) or left to gc
    assert all(MultiIndex(p).checksum_ok() for p in _midx_files(store.repo.objects))
    again = Store(store.path)
    assert again.verify().ok
    for tag, src in srcs.items():
        assert again.get(tag).open("w.bin").read() == (src / "w.bin").read_bytes()
    store.gc()
    assert len(_midx_files(store.repo.objects)) == 1


def test_a_midx_naming_a_removed_pack_is_not_in_force(tmp_path: Path) -> None:
    db = PackDB(tmp_path / "objects")
    recs = _fill(db, MERGE_AT)
    [midx] = _midx_files(db)
    victim = db.entry(recs[0][1])
    assert victim is not None
    db.delete_pack(victim.pack)  # what gc does once the objects live elsewhere
    fresh = PackDB(tmp_path / "objects")
    assert fresh.layers() == ()  # stale: every remaining pack is read from its own index
    assert fresh.entry(recs[0][1]) is None
    assert fresh.entry(recs[-1][1]) is not None
    fresh.rebuild_index()
    assert not midx.exists() and len(fresh.layers()) == 1


def test_a_midx_of_a_wrong_shape_is_refused(tmp_path: Path) -> None:
    db = PackDB(tmp_path / "objects")
    _fill(db, 2)
    layer = write_midx(db.pack_dir, db.tmp_dir, [], db.packs())
    assert layer is not None
    data = bytearray(layer.path.read_bytes())
    bad = tmp_path / "bad.midx"
    bad.write_bytes(MIDX_HEADER.pack(b"MVMX", 9, 2, layer.count) + data[MIDX_HEADER.size :])
    with pytest.raises(PackFormatError, match="version"):
        MultiIndex(bad)
    fan = midx_layout(2, 0).fanout
    data[fan : fan + 8] = (10**9).to_bytes(8, "little")
    bad.write_bytes(data)
    with pytest.raises(PackFormatError, match="fan-out"):
        MultiIndex(bad)


def test_a_merge_of_many_packs_reads_their_indexes_a_group_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Converting a large format-2 store: the uncovered packs are merged in groups into
    hidden steps (bounded memory), then the steps into one index; no step is left."""
    db = PackDB(tmp_path / "objects")
    monkeypatch.setattr(packs_mod, "MERGE_AT", 10**6)  # no merge at commit
    recs = _fill(db, 12, per=20)
    assert _midx_files(db) == []
    monkeypatch.setattr(packs_mod, "GROUP", 50)
    steps = []
    real = packs_mod.write_midx

    def spy(*args: Any, **kw: Any) -> Any:
        out = real(*args, **kw)
        steps.append(len(args[2]))  # the indexes it merges
        return out

    monkeypatch.setattr(packs_mod, "write_midx", spy)
    layer = db.rebuild_index()
    assert steps == [0, 0, 0, 0, 4]  # 3 packs (60 entries) a step, then the 4 steps
    assert layer is not None and layer.count == len(recs) and len(layer.packs) == 12
    assert list(db.tmp_dir.iterdir()) == []
    fresh = PackDB(tmp_path / "objects")
    assert fresh.entries([r[1] for r in recs]) == [fresh.entry(r[1]) for r in recs]
    assert all(fresh.entry(r[1]) is not None for r in recs)


def test_a_process_finding_many_uncovered_packs_indexes_them_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store written before format 3 (every pack uncovered): the first process to
    look merges them into a multi-pack index instead of loading a dict of every entry;
    where it cannot write (read-only, full), it reads them into the dict as before."""
    db = PackDB(tmp_path / "objects")
    monkeypatch.setattr(packs_mod, "MERGE_AT", 10**6)
    recs = _fill(db, packs_mod.LOOSE_LIMIT + 1, per=3)
    monkeypatch.undo()
    assert _midx_files(db) == []

    def refuse(*args: Any, **kw: Any) -> Any:
        raise OSError(30, "Read-only file system")

    with monkeypatch.context() as m:
        m.setattr(packs_mod, "write_midx", refuse)
        ro = PackDB(tmp_path / "objects")
        assert ro.layers() == () and len(ro._loose_packs) == packs_mod.LOOSE_LIMIT + 1
        assert all(ro.entry(r[1]) is not None for r in recs)
    fresh = PackDB(tmp_path / "objects")
    [layer] = fresh.layers()
    assert len(layer.packs) == packs_mod.LOOSE_LIMIT + 1 and fresh._loose == {}
    assert fresh.entries([r[1] for r in recs]) == [fresh.entry(r[1]) for r in recs]
    assert all(e is not None for e in fresh.entries([r[1] for r in recs]))
    assert list(fresh.tmp_dir.iterdir()) == []


def test_lookups_find_ids_that_share_long_prefixes(tmp_path: Path) -> None:
    """Ids that share long prefixes, crowd one end of a bucket or fill one bucket are
    each found at their position, and near misses are not."""
    rng = random.Random(5)
    ids = set()
    for _ in range(300):
        ids.add(bytes([7]) + bytes(8) + rng.randbytes(23))  # bytes 1-8 all zero
        ids.add(bytes([7, 255]) + rng.randbytes(30))  # the top of bucket 7
        ids.add(rng.randbytes(32))
    for _ in range(5000):  # one crowded bucket
        ids.add(bytes([9]) + rng.randbytes(31))
    ids.add(bytes(32))
    ids.add(b"\xff" * 32)
    db = PackDB(tmp_path / "objects")
    with db.writer(repack=True) as w:  # the writer takes the ids as given
        w.add_prepared_many([(int(ObjType.CHUNK), oid, 0, 1, b"x") for oid in sorted(ids)])
    layer = db.rebuild_index()
    assert layer is not None and layer.count == len(ids)
    for oid in ids:
        assert layer.position(oid) >= 0 and layer.lookup(oid) is not None
        near = oid[:-1] + bytes([oid[-1] ^ 1])
        assert (layer.position(near) >= 0) == (near in ids)
    absent = [rng.randbytes(32) for _ in range(500)] + [bytes([7]) + bytes(31)]
    absent += [bytes([9]) + rng.randbytes(31) for _ in range(2000)]
    assert all(layer.position(oid) == -1 for oid in absent if oid not in ids)
    order = id_list(layer.ids())
    assert all(layer.position(oid) == i for i, oid in enumerate(order))


def test_lookups_in_a_bucket_whose_ids_are_not_spread_evenly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guess of a lookup assumes uniform ids; clusters in a large bucket make the
    guessed window miss on either side: the rest of the bucket is searched, and every id
    is still found at its position (with the pages given back every few lookups)."""
    monkeypatch.setattr(midx_mod, "_GIVE_BACK", 7)
    rng = random.Random(11)
    ids = {bytes([3]) + rng.randbytes(31) for _ in range(3000)}
    for lead in (b"\x00\x00\x01", b"\x40", b"\x41", b"\xc0", b"\xff\xff\xff"):  # clusters
        ids |= {bytes([3]) + lead.ljust(8, b"\0") + rng.randbytes(23) for _ in range(700)}
    # bucket 5: nearly all ids low, a few spread: a guess from the cluster overshoots
    ids |= {bytes([5, 0]) + rng.randbytes(30) for _ in range(5000)}
    ids |= {bytes([5]) + rng.randbytes(31) for _ in range(40)}
    db = PackDB(tmp_path / "objects")
    with db.writer(repack=True) as w:
        w.add_prepared_many([(int(ObjType.CHUNK), oid, 0, 1, b"x") for oid in sorted(ids)])
    layer = db.rebuild_index()
    assert layer is not None
    order = id_list(layer.ids())
    assert all(layer.position(oid) == i for i, oid in enumerate(order))
    for oid in order[::7]:
        for near in (oid[:-1] + bytes([oid[-1] ^ 1]), oid[:9] + bytes(23), oid[:9] + b"\xff" * 23):
            assert (layer.position(near) >= 0) == (near in ids)
    assert layer.position(bytes([3]) + bytes(31)) == -1
    assert layer.position(bytes([3]) + b"\xff" * 31) == -1
    # entries(): a few ids beside a large index one at a time, many at once (numpy)
    assert len(order) > 40 * packs_mod._SPARSE and len(order) < 2000 * packs_mod._SPARSE
    for few in (order[5:45], order[::5][:2000]):
        asked = [*few, rng.randbytes(32)]
        assert db.entries(asked) == [db.entry(oid) for oid in few] + [None]


def test_an_entry_naming_a_pack_out_of_range_is_damage_not_a_crash(tmp_path: Path) -> None:
    db = PackDB(tmp_path / "objects")
    recs = _fill(db, MERGE_AT, per=40)
    [midx] = _midx_files(db)
    layer = MultiIndex(midx)
    data = bytearray(midx.read_bytes())
    at = layer.layout.entries  # entry 0's pack number
    data[at : at + 4] = (10**6).to_bytes(4, "little")
    midx.chmod(0o644)
    midx.write_bytes(data)
    first = id_list(layer.ids()[:1])[0]
    fresh = PackDB(tmp_path / "objects")
    with pytest.raises(IntegrityError, match="mv verify"):
        fresh.entry(first)
    with pytest.raises(IntegrityError, match=midx.name):
        fresh.entries([r[1] for r in recs])
    assert midx.name in fresh.check_multi_indexes()
    fresh.rebuild_index()
    assert all(e is not None for e in fresh.entries([r[1] for r in recs]))
