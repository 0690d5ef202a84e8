"""The filter of a version-2 multi-pack index (docs/format.md section 5.1): every id it
holds passes, about 1% of absent ids do, ``has`` and ``has_many`` agree with a search,
and ``verify`` reports a filter that leaves an id out."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from _helpers import chunk_records
from blake3 import blake3

from modelvault import Store
from modelvault.core.packfmt import FILTER_BLOCK, filter_blocks, midx_layout
from modelvault.odb import PackDB
from modelvault.odb import midx as midx_mod
from modelvault.odb.packs import MERGE_AT, Record


def _fill(db: PackDB, packs: int, per: int, seed: int = 7000) -> list[Record]:
    every: list[Record] = []
    for i in range(packs):
        recs = chunk_records(per, seed=seed + i)
        with db.writer() as w:
            w.add_prepared_many(recs)
        every += recs
    return every


def _absent(n: int) -> list[bytes]:
    return [blake3(b"absent %d" % i).digest() for i in range(n)]


def test_every_held_id_passes_and_about_one_in_a_hundred_absent_ids_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = PackDB(tmp_path / "objects")
    recs = _fill(db, MERGE_AT, 2000)
    [layer] = db.layers()
    assert layer.version == 2 and layer.layout.blocks == filter_blocks(len(recs))
    ids = [r[1] for r in recs]
    assert all(layer.might_have(oid) for oid in ids)
    assert layer.screen_ids(b"".join(ids)) == b"\1" * len(ids)
    absent = _absent(50_000)
    one = [layer.might_have(oid) for oid in absent]
    joined = layer.screen_ids(b"".join(absent))
    assert list(joined) == [int(x) for x in one]  # one by one and at once agree
    with monkeypatch.context() as m:  # a build without the compiled module: Python
        m.setattr(midx_mod, "_cdc", None)
        assert [layer.might_have(oid) for oid in absent] == one
        assert layer.screen_ids(b"".join(absent)) == joined
    assert 0.002 < sum(one) / len(absent) < 0.02  # 10 bits an id, 7 tested: ~1%
    assert layer.filter_ok()


def test_has_many_agrees_with_has_over_layers_and_loose_packs(tmp_path: Path) -> None:
    db = PackDB(tmp_path / "objects")
    recs = _fill(db, MERGE_AT, 300)  # merged into a layer
    recs += _fill(db, 2, 300, seed=8000)  # two packs read from their own .idx
    fresh = PackDB(tmp_path / "objects")
    assert len(fresh.layers()) == 1 and len(fresh.packs()) == MERGE_AT + 2
    held = [r[1] for r in recs]
    absent = _absent(3000)
    mixed = [x for pair in zip(held, absent, strict=False) for x in pair] + absent[len(held) :]
    assert fresh.has_many(mixed) == [fresh.has(oid) for oid in mixed]
    assert fresh.has_many(mixed) == [oid in set(held) for oid in mixed]
    assert fresh.has_many(held[:3] + absent[:3]) == [True] * 3 + [False] * 3  # one by one
    assert fresh.has_many([]) == []


def test_a_filter_that_leaves_ids_out_is_reported_and_rebuilt(tmp_path: Path) -> None:
    """A filter written wrong under a sound checksum (a bug, not a disk fault) would make
    saves store known chunks again: verify reads it through and rebuilds the index."""

    store = Store(tmp_path / "s")
    rng = np.random.default_rng(3)
    for i in range(MERGE_AT):
        src = tmp_path / f"m{i}"
        src.mkdir()
        (src / "w.bin").write_bytes(rng.bytes(3000 + i))
        store.save(src, f"m:v{i}")
    db = store.repo.objects
    [layer] = db.layers()
    lay = midx_layout(layer.npacks, layer.count)
    data = bytearray(layer.path.read_bytes())
    data[lay.filter : lay.filter + FILTER_BLOCK * lay.blocks] = bytes(FILTER_BLOCK * lay.blocks)
    data[lay.checksum :] = blake3(bytes(data[: lay.checksum])).digest()
    bad = layer.path.with_name(f"multi-{bytes(data[lay.checksum :]).hex()}.midx")
    bad.write_bytes(data)
    os.unlink(layer.path)
    fresh = Store(store.path)
    [wrong] = fresh.repo.objects.layers()
    assert wrong.checksum_ok() and not wrong.filter_ok()
    report = fresh.verify()
    assert not report.ok and f"objects/packs/{bad.name}" in report.damaged_files
    [rebuilt] = fresh.repo.objects.layers()
    assert rebuilt.filter_ok() and rebuilt.name == layer.name  # same packs, same bytes
    assert Store(store.path).verify().ok
