"""One pack builder: PackWriter (a store's packs) and build_pack (the packs a push sends)
lay out the same bytes, index and name for the same records."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest

from modelvault.core import codec
from modelvault.core.hashing import ObjType, object_id
from modelvault.odb import PackDB
from modelvault.odb.packs import Record, build_pack


def _records(n: int, seed: int = 1) -> list[Record]:
    rng = random.Random(seed)
    out: list[Record] = []
    for i in range(n):
        kind = ObjType.CHUNK if i % 3 else ObjType.FILE
        data = rng.randbytes(rng.randrange(1, 5000)) + bytes(rng.randrange(0, 3000))
        how, payload = codec.encode(data)
        out.append((int(kind), object_id(kind, data), int(how), len(data), payload))
    return out


def test_writer_and_build_pack_lay_out_the_same_pack(tmp_path: Path) -> None:
    records = _records(40)
    db = PackDB(tmp_path / "objects")
    with db.writer() as writer:
        writer.add_prepared_many(records)
    (name,) = db.packs()
    data, pack = build_pack(records)
    assert pack.name == name == pack.digest.hex()
    assert data == (db.pack_dir / f"{name}.pack").read_bytes()
    assert pack.index() == (db.pack_dir / f"{name}.idx").read_bytes()
    assert pack.entries == db.entries_of(name)


def test_a_built_pack_reads_back_in_a_store(tmp_path: Path) -> None:
    records = _records(25, seed=2)
    data, pack = build_pack(records)
    db = PackDB(tmp_path / "objects")
    (db.pack_dir / f"{pack.name}.pack").write_bytes(data)
    (db.pack_dir / f"{pack.name}.idx").write_bytes(pack.index())
    db.refresh()
    assert db.check_pack_file(pack.name) is None
    assert db.verify_pack(pack.name) == []
    for kind, oid, how, raw_len, payload in records:
        assert db.read(oid, ObjType(kind)) == codec.decode(how, payload, raw_len)


def test_sealed_packs_are_read_only_and_leave_no_temporaries(tmp_path: Path) -> None:
    db = PackDB(tmp_path / "objects")
    for hold in (False, True):
        writer = db.writer()
        if hold:
            writer.publish_at_commit()
        writer.add_prepared_many(_records(10, seed=3 + hold))
        writer.commit()
    assert len(db.packs()) == 2
    for path in db.pack_dir.iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o444, path
    assert list(db.tmp_dir.iterdir()) == []


def test_an_object_whose_pack_could_not_open_is_written_by_the_next_try(tmp_path: Path) -> None:
    (record,) = _records(1, seed=9)
    db = PackDB(tmp_path / "objects")
    writer = db.writer()
    db.tmp_dir.rmdir()  # the pack's temporary cannot be created
    with pytest.raises(FileNotFoundError):
        writer.add_prepared_many([record])
    db.tmp_dir.mkdir()
    writer.add_prepared_many([record])
    writer.commit()
    kind, oid, how, raw_len, payload = record
    assert db.read(oid, ObjType(kind)) == codec.decode(how, payload, raw_len)


def test_a_writer_takes_objects_again_after_a_commit(tmp_path: Path) -> None:
    db = PackDB(tmp_path / "objects")
    first, second = _records(5, seed=11), _records(5, seed=12)
    writer = db.writer()
    writer.add_prepared_many(first)
    writer.commit()
    writer.add_prepared_many(second)  # the sealer was stopped by the commit
    writer.commit()
    assert len(db.packs()) == 2
    for kind, oid, how, raw_len, payload in first + second:
        assert db.read(oid, ObjType(kind)) == codec.decode(how, payload, raw_len)
    assert list(db.tmp_dir.iterdir()) == []


def test_a_pack_that_cannot_be_renamed_into_view_leaves_no_temporaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelvault import _fsutil

    db = PackDB(tmp_path / "objects")
    writer = db.writer()
    writer.add_prepared_many(_records(5, seed=13))

    def no_room(tmp: Path, final: Path, *, sync_dir: bool = True) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_fsutil, "rename_into", no_room)
    with pytest.raises(OSError, match="No space"):
        writer.commit()
    assert db.packs() == []
    assert list(db.tmp_dir.iterdir()) == []
