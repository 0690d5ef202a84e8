"""Batch lookups in a multi-pack index (``MultiIndex.positions_of``, ``_cdc.find``):
they agree with single lookups for held and absent ids, with and without the compiled
module, refuse a fan-out or offset that would read outside the mapping, and do not
import numpy (a save that only looks up its parent's chunks never loads it). And a
merge writes the same index whatever run of buckets it sorts at once."""

from __future__ import annotations

import subprocess
import sys
from array import array
from pathlib import Path

import pytest
from _helpers import chunk_records
from blake3 import blake3

from modelvault import _cdc
from modelvault.core.packfmt import (
    FILE_HEADER,
    HASH_LEN,
    IDX_COUNT,
    IDX_ENTRY,
    MIDX_ENTRY,
    check_index,
)
from modelvault.odb import PackDB
from modelvault.odb import midx as midx_mod
from modelvault.odb.packs import MERGE_AT


def _db(root: Path, per: int = 400) -> tuple[PackDB, list[bytes]]:
    db = PackDB(root)
    ids: list[bytes] = []
    for i in range(MERGE_AT):  # merged into one layer by the last commit
        recs = chunk_records(per, seed=500 + i)
        with db.writer() as w:
            w.add_prepared_many(recs)
        ids += [r[1] for r in recs]
    return db, ids


def _probes(ids: list[bytes]) -> list[bytes]:
    """Held ids, absent ids, and absent ids at the edges of buckets and of the column."""
    absent = [blake3(b"absent %d" % i).digest() for i in range(300)]
    edges = [bytes(32), b"\xff" * 32, bytes([0x80]) + bytes(31), bytes([0x7F]) + b"\xff" * 31]
    near = [oid[:31] + bytes([(oid[31] + 1) % 256]) for oid in ids[:50]]  # neighbours
    return ids + absent + edges + near


def test_positions_of_agrees_with_position(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db, ids = _db(tmp_path / "objects")
    [layer] = db.layers()
    probes = _probes(ids)
    column = sorted(set(ids))  # the index's id column
    where = {oid: i for i, oid in enumerate(column)}
    one = [where.get(oid, -1) for oid in probes]
    assert len(column) == len(ids) and [layer.position(oid) for oid in probes] == one
    assert list(layer.positions_of(b"".join(probes))) == one
    assert list(layer.positions_of(b"")) == []
    with monkeypatch.context() as m:  # a build without the compiled module
        m.setattr(midx_mod, "_cdc", None)
        assert list(layer.positions_of(b"".join(probes))) == one


def test_entries_of_a_batch_agree_with_entry_over_layers_and_loose_packs(
    tmp_path: Path,
) -> None:
    db, ids = _db(tmp_path / "objects", per=100)
    recs = chunk_records(50, seed=9)  # one pack no index covers yet
    with db.writer() as w:
        w.add_prepared_many(recs)
    fresh = PackDB(tmp_path / "objects")
    assert fresh.layers() and fresh._loose
    probes = _probes(ids) + [r[1] for r in recs]
    batch = fresh.entries(probes)
    assert batch == [fresh.entry(oid) for oid in probes]
    assert sum(e is not None for e in batch) == len(ids) + len(recs)


def test_find_refuses_bounds_outside_the_buffer() -> None:
    ids = b"".join(sorted(blake3(b"%d" % i).digest() for i in range(10)))
    fan = [0] * 257
    for oid in (ids[i : i + 32] for i in range(0, len(ids), 32)):
        for b in range(oid[0] + 1, 257):
            fan[b] += 1
    good = array("q", fan).tobytes()
    pos = array("q", _cdc.find(ids, 0, good, ids[32:64] + bytes(32)))
    assert list(pos) == [1, -1]
    with pytest.raises(ValueError, match="inside the buffer"):
        _cdc.find(ids[:-1], 0, good, ids[:32])  # the column is one byte short
    with pytest.raises(ValueError, match="inside the buffer"):
        _cdc.find(ids, 1, good, ids[:32])
    with pytest.raises(ValueError, match="inside the buffer"):
        _cdc.find(ids, 0, array("q", [0, 5, 3, *fan[3:]]).tobytes(), ids[:32])  # falls
    with pytest.raises(ValueError, match="257 native int64"):
        _cdc.find(ids, 0, good[:-8], ids[:32])
    with pytest.raises(ValueError, match="32-byte ids"):
        _cdc.find(ids, 0, good, ids[:31])


def test_batch_lookups_do_not_import_numpy(tmp_path: Path) -> None:
    _, ids = _db(tmp_path / "objects", per=100)
    probe = tmp_path / "ids"
    probe.write_bytes(b"".join(ids))
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from modelvault.odb import PackDB\n"
        f"raw = open({str(probe)!r}, 'rb').read()\n"
        "ids = [raw[i : i + 32] for i in range(0, len(raw), 32)]\n"
        f"db = PackDB(Path({str(tmp_path / 'objects')!r}))\n"
        "found = db.entries(ids)\n"
        "assert db.layers() and all(e is not None for e in found), 'lookups failed'\n"
        "print('numpy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("run", [1, 37, 1_000, None])
def test_a_merge_writes_the_same_index_in_memory_and_by_runs_of_buckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: int | None
) -> None:
    """A small merge is done in memory without numpy; a large one with numpy, sorting a
    run of buckets at a time (``_MERGE_RUN`` entries, at least one bucket). Both write
    the same index byte for byte, whatever the run (1: a bucket at a time, as merges did
    before; None: the default), and it covers every id. The inputs hold ids twice, in a
    layer and in a pack (the layer's entry is kept) and in two packs (the one first by
    name is kept); and a pack's index with padding bytes that are not zero (written as
    zero either way)."""
    db, ids = _db(tmp_path / "objects", per=300)
    twice = chunk_records(20, seed=500)  # the first pack's first 20 records, again
    pair = chunk_records(15, seed=9_999)  # new records, in two packs
    extra = chunk_records(1, seed=7)
    for recs in (twice, pair, pair + extra):  # (a pack is named by its bytes: the second
        # holding the pair differs by one record)
        with db.writer() as w:
            w.add_prepared_many(recs, checked=True)  # (not looked up: written again)
    layers, packs = list(db.layers()), sorted(db._loose_packs)
    assert layers and len(packs) == 3
    idx = db.pack_dir / f"{packs[0]}.idx"  # padding of every entry set, checksum redone
    data = bytearray(idx.read_bytes())
    head, size = FILE_HEADER.size + IDX_COUNT.size, IDX_ENTRY.size
    for at in range(head, len(data) - 2 * HASH_LEN, size):
        data[at + 34 : at + 36] = b"\xff\xff"
    data[-HASH_LEN:] = blake3(bytes(data[:-HASH_LEN])).digest()
    idx.chmod(0o644)
    idx.write_bytes(bytes(data))
    check_index(packs[0], bytes(data))
    small = midx_mod.write_midx(db.pack_dir, db.tmp_dir, layers, packs, hidden=True)
    monkeypatch.setattr(midx_mod, "_SMALL_MERGE", 0)
    if run is not None:
        monkeypatch.setattr(midx_mod, "_MERGE_RUN", run)
    large = midx_mod.write_midx(db.pack_dir, db.tmp_dir, layers, packs, hidden=True)
    assert small is not None and large is not None
    assert large.path.read_bytes() == small.path.read_bytes()
    every = {*ids, *(r[1] for r in pair + extra)}
    assert large.count == len(every) and large.filter_ok()
    where = {oid: i for i, oid in enumerate(sorted(every))}
    assert list(large.positions_of(b"".join(ids))) == [where[oid] for oid in ids]
    assert all(large.lookup(oid) == layers[0].lookup(oid) for oid in ids)
    for _, oid, *_ in twice:
        assert large.lookup(oid) == layers[0].lookup(oid)
    holders = sorted(p for p in packs if pair[0][1] in db.entries_of(p))
    assert len(holders) == 2
    for _, oid, *_ in pair:
        e = large.lookup(oid)
        assert e is not None and e.pack == holders[0]
    at = large.layout.entries
    column = large._map[at : at + MIDX_ENTRY.size * large.count]
    assert all(column[i + 6 : i + 8] == b"\0\0" for i in range(0, len(column), MIDX_ENTRY.size))
