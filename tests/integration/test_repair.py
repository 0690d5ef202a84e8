"""Repair, end to end (issue 16, point 3): a byte flips in a pack, `verify` reports the
corrupt object, and pulling or importing a healthy copy of the tag again — with or
without deleting the tag first, as the CLI advises — brings every byte back."""

from __future__ import annotations

from pathlib import Path

import pytest
from _helpers import write_files

from modelvault import IntegrityError, Store, remotes
from modelvault.checkout import lookup, read_file_object
from modelvault.core.hashing import ObjType


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _setup(tmp_path: Path) -> tuple[Store, Path, Path]:
    store = Store(tmp_path / "store")
    remotes.add("origin", (tmp_path / "remote").as_uri(), store=store)
    keep = write_files(tmp_path / "keep", {"k.bin": bytes(range(256)) * 300})
    src = write_files(
        tmp_path / "src",
        {"w.bin": bytes(range(256))[7:] * 2000 + b"tail", "cfg/c.json": b'{"a": 1}'},
    )
    store.save(keep, "keep:v1")
    store.save(src, "clf:v1")
    return store, src, keep


def _flip_a_chunk(store: Store, tag: str, rel: str) -> bytes:
    """Flip one byte in the stored payload of the first chunk of ``rel``; its id."""
    model = store.get(tag)
    _, fid = lookup(store.repo.objects, model.object.tree, rel)
    cid = read_file_object(store.repo.objects, fid).chunks[0][0]
    e = store.repo.objects.entry(cid)
    assert e is not None and e.kind == ObjType.CHUNK
    path = store.path / "objects" / "packs" / f"{e.pack}.pack"
    mode = path.stat().st_mode
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(e.offset + e.stored_len // 2)
        byte = f.read(1)[0]
        f.seek(e.offset + e.stored_len // 2)
        f.write(bytes([byte ^ 0x10]))
    path.chmod(mode)
    return cid


def _check_repaired(store: Store, src: Path, keep: Path) -> None:
    report = store.verify()
    assert report.ok, report
    fresh = Store(store.path)
    assert _files(Path(fresh.get("clf:v1").path)) == _files(src)
    with fresh.get("clf:v1").open("w.bin") as f:
        assert f.read() == (src / "w.bin").read_bytes()
    assert _files(Path(fresh.get("keep:v1").path)) == _files(keep)


def _break(store: Store) -> None:
    cid = _flip_a_chunk(store, "clf:v1", "w.bin")
    report = store.verify()
    assert not report.ok and cid.hex() in report.corrupt
    assert "clf:v1" in report.broken_tags and "keep:v1" not in report.broken_tags
    with pytest.raises(IntegrityError), store.get("clf:v1").open("w.bin") as f:
        f.read()


@pytest.mark.parametrize("delete_first", [False, True])
def test_pull_repairs_a_corrupt_object(tmp_path: Path, delete_first: bool) -> None:
    store, src, keep = _setup(tmp_path)
    store.push("clf:v1")
    _break(store)
    if delete_first:  # the CLI's advice: delete the broken tag, then pull it again
        store.delete("clf:v1")
    got = store.pull("clf:v1")
    assert got.objects >= 1
    _check_repaired(store, src, keep)


@pytest.mark.parametrize("delete_first", [False, True])
def test_import_repairs_a_corrupt_object(tmp_path: Path, delete_first: bool) -> None:
    store, src, keep = _setup(tmp_path)
    archive = store.export_model("clf:v1", str(tmp_path))
    _break(store)
    if delete_first:
        store.delete("clf:v1")
    store.import_model(archive)
    _check_repaired(store, src, keep)
