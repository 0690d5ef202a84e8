"""Import staging: packs sealed in the background stay invisible until commit.

``PackWriter.publish_at_commit`` is what lets an import seal (fsync) packs of normal size
while it reads, yet publish nothing before every check passed; ``add_prepared_many`` is
its batched write. These tests use a tiny pack size so that even small models span many
packs.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from _helpers import archive_footer_at

import modelvault
from modelvault.core import floats
from modelvault.core.hashing import ObjType, object_id
from modelvault.errors import ArchiveError
from modelvault.odb import PackDB, PackWriter

SMALL_PACK = 64 << 10


def _objects(n: int, size: int = 3000, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.bytes(size) for _ in range(n)]


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _add(writer: PackWriter, blobs: list[bytes], lane: int = 0) -> list[bytes]:
    ids = [object_id(ObjType.CHUNK, b) for b in blobs]
    writer.add_prepared_many(
        ((ObjType.CHUNK, oid, 0, len(b), b) for oid, b in zip(ids, blobs, strict=True)), lane
    )
    return ids


def test_lanes_write_packs_of_their_own_from_threads_at_once(tmp_path: Path) -> None:
    """Two threads, each on its lane, write at once: each lane fills packs of its own,
    an object both add is stored once, and every object reads back after commit."""
    from concurrent.futures import ThreadPoolExecutor

    db = PackDB(tmp_path / "objects")
    writer = PackWriter(db, 1 << 20)
    blobs = _objects(600)
    shared = blobs[:50]  # both lanes add these
    with ThreadPoolExecutor(2) as pool:
        lanes = list(pool.map(lambda k: _add(writer, shared + blobs[50 + k :: 2], k), (0, 1)))
    writer.commit()
    assert writer.new_objects == 600
    ids = [object_id(ObjType.CHUNK, b) for b in blobs]
    fresh = PackDB(tmp_path / "objects")
    assert [fresh.read(oid, ObjType.CHUNK) for oid in ids] == blobs
    packs_of = [{fresh.entry(oid).pack for oid in lane[50:]} for lane in lanes]  # type: ignore[union-attr]
    assert packs_of[0] and packs_of[1] and not packs_of[0] & packs_of[1]
    stored = sum(len(fresh.entries_of(p)) for p in fresh.packs())
    assert stored == 600  # the shared 50 once, not twice


def test_packs_stay_hidden_until_commit(tmp_path: Path) -> None:
    db = PackDB(tmp_path / "objects")
    writer = PackWriter(db, 8192)
    writer.publish_at_commit()
    blobs = _objects(40)
    ids = _add(writer, blobs + blobs[:5])  # duplicates are skipped
    writer._seal_all()  # the open pack too: everything sealed, nothing visible
    for fut in writer._sealing:
        fut.result()
    assert _files(db.pack_dir) == []
    held = _files(db.tmp_dir)
    assert len([n for n in held if n.endswith(".pack")]) >= 10
    assert len([n for n in held if n.endswith(".idx")]) == len(held) // 2
    assert not any(db.has(oid) for oid in ids)
    writer.commit()
    assert _files(db.tmp_dir) == []
    published = _files(db.pack_dir)
    # and one multi-pack index over them (more than MERGE_AT packs were published)
    assert len([n for n in published if n.endswith(".midx")]) == 1
    assert len([n for n in published if not n.endswith(".midx")]) == len(held)
    fresh = PackDB(tmp_path / "objects")  # what another process sees
    assert [fresh.read(oid, ObjType.CHUNK) for oid in ids[:40]] == blobs
    assert writer.new_objects == 40


def test_abort_removes_every_pack(tmp_path: Path) -> None:
    db = PackDB(tmp_path / "objects")
    writer = PackWriter(db, 8192)
    writer.publish_at_commit()
    _add(writer, _objects(40))
    writer.abort()
    assert _files(db.pack_dir) == []
    assert _files(db.tmp_dir) == []


def test_publish_at_commit_only_before_the_first_object(tmp_path: Path) -> None:
    writer = PackWriter(PackDB(tmp_path / "objects"))
    writer.add(ObjType.CHUNK, b"x")
    with pytest.raises(RuntimeError):
        writer.publish_at_commit()
    writer.abort()


def test_add_prepared_many_splits_big_batches(tmp_path: Path) -> None:
    """More buffers than one writev takes, across pack boundaries, read back intact."""
    db = PackDB(tmp_path / "objects")
    with PackWriter(db, 256 << 10) as writer:
        blobs = _objects(700, size=1000, seed=1)
        ids = _add(writer, blobs)
    assert [PackDB(tmp_path / "objects").read(oid) for oid in ids] == blobs
    assert all(db.check_pack_file(name) is None for name in db.packs())


@pytest.fixture
def small_packs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PackWriter.__init__, "__defaults__", (SMALL_PACK,))


def _model(tmp_path: Path) -> tuple[modelvault.Store, Path]:
    source = modelvault.Store(tmp_path / "source")
    folder = tmp_path / "m"
    folder.mkdir()
    weights = np.random.default_rng(3).standard_normal(1_500_000).astype("<f4")  # > 1 batch
    (folder / "model.bin").write_bytes(weights.tobytes())
    with pytest.MonkeyPatch.context() as mp:  # float chunks raw (no codec 3): export
        mp.setattr(floats, "_fc", None)  # sends them as byte planes, staged raw on import
        source.save(folder, "big:v1")
    return source, Path(source.export_model("big:v1", str(tmp_path / "big.bentomodel")))


def _snapshot(path: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(path.rglob("*"))
        if not p.name.endswith(".lock")
    }


def _index(data: bytes) -> list[tuple[bytes, int, int, int]]:
    """``(id, codec, stored length, raw length)`` of every record, from the archive index."""
    at, count, _ = struct.unpack_from("<QI4s", data, archive_footer_at(data))
    rows = [struct.unpack_from("<32sBBxxQII", data, at + 8 + 52 * i) for i in range(count)]
    return [(oid, how, stored, raw) for oid, _, how, _, stored, raw in rows]


@pytest.mark.usefixtures("small_packs")
def test_import_spanning_many_packs(tmp_path: Path) -> None:
    source, path = _model(tmp_path)
    target = modelvault.Store(tmp_path / "target")
    model = target.import_model(path)
    assert len(target.repo.objects.packs()) > 5
    assert _files(target.repo.objects.tmp_dir) == []
    assert model.id == source.get("big:v1").id
    assert target.verify().ok
    planes = [row for row in _index(path.read_bytes()) if row[1] == 2]
    assert len(planes) > 50  # the weights travelled as byte planes ...
    for oid, _, _, raw in planes:  # ... and were staged raw, across many packs
        entry = target.repo.objects.entry(oid)
        assert entry is not None and (entry.codec, entry.stored_len) == (0, raw)


@pytest.mark.usefixtures("small_packs")
@pytest.mark.parametrize("damage", ["last-payload", "truncated", "checksum"])
def test_refused_import_leaves_no_pack(tmp_path: Path, damage: str) -> None:
    """Packs sealed early are removed when a late check fails: the store is unchanged."""
    _, path = _model(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "last-payload":
        at, count, _ = struct.unpack_from("<QI4s", data, archive_footer_at(data))
        offsets = [struct.unpack_from("<Q", data, at + 8 + 52 * i + 36)[0] for i in range(count)]
        data[max(offsets) + 10] ^= 0xFF
    elif damage == "truncated":
        del data[len(data) - 100 :]
    else:
        data[-1] ^= 0xFF
    bad = tmp_path / "bad.bentomodel"
    bad.write_bytes(bytes(data))
    target = modelvault.Store(tmp_path / "target")
    before = _snapshot(target.path)
    with pytest.raises(ArchiveError):
        target.import_model(bad)
    assert _snapshot(target.path) == before
    assert os.listdir(target.repo.objects.tmp_dir) == []


def test_interleave_buffers_are_handed_out_again_only_after_their_batch_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many small batches: the byte-planes output buffers go round several times. A buffer
    reused before its batch was written would store bytes that fail their id."""
    from modelvault.archive import reader

    monkeypatch.setattr(reader, "BATCH", 2)  # ~60 batches of byte planes
    fresh: list[bool] = []  # per buffer taken: whether none was spare
    take = reader.Buffers.take

    def counted(self: reader.Buffers, n: int) -> bytearray:
        fresh.append(not self.spare)
        return take(self, n)

    monkeypatch.setattr(reader.Buffers, "take", counted)
    source, path = _model(tmp_path)
    target = modelvault.Store(tmp_path / "target")
    model = target.import_model(path)
    assert len(fresh) > 30
    assert sum(fresh) < len(fresh) / 3  # handed out again and again ...
    assert target.verify().ok  # ... and every stored byte matches its id
    assert model.id == source.get("big:v1").id
    weights = (tmp_path / "m" / "model.bin").read_bytes()
    assert (Path(model.path) / "model.bin").read_bytes() == weights
