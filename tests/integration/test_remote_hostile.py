"""Pull against damaged and lying remotes (issue 16, points 5 and 6), and pull or import
as repair (point 3). The remotes are real (files on disk, moto's S3 server on
127.0.0.1): the damage is written into their files the way docs/format.md lays them out.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from _damaged_refs import SHAPES, shapes
from _helpers import write_files

import modelvault
from modelvault import IntegrityError, Store, Tag, remotes
from modelvault.core.hashing import ObjType
from modelvault.core.objects import (
    KIND_FILE,
    KIND_TREE,
    FileObject,
    ModelObject,
    TreeEntry,
    TreeObject,
)
from modelvault.refs import RefValue
from modelvault.remote.transport import Transport, open_transport
from modelvault.repo import maintenance


def _remote(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> dict[str, Any]:
    if kind == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        return {"url": bucket["url"] + "/models", "options": bucket["options"]}
    if kind == "file":
        return {"url": (tmp_path / "remote").as_uri(), "options": {}}
    return {"url": f"memory://mv-{uuid.uuid4().hex[:8]}", "options": {}}


@pytest.fixture(params=["file", "s3"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """A fresh file:// remote, or one on the S3 server."""
    return _remote(request, tmp_path, request.param)


@pytest.fixture(params=["file", "memory"])
def cheap_remote(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    return _remote(request, tmp_path, request.param)


def _store(tmp_path: Path, name: str, remote: dict[str, Any]) -> Store:
    store = Store(tmp_path / name)
    remotes.add("origin", remote["url"], store=store, **remote["options"])
    return store


def _transport(remote: dict[str, Any]) -> Transport:
    return open_transport(remote["url"], remote["options"])


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _save(store: Store, tmp_path: Path, tag: str, seed: int, size: int = 4000) -> Path:
    src = write_files(
        tmp_path / f"src-{tag.replace(':', '-')}",
        {"w.bin": bytes([seed]) * size, "sub/c.json": b'{"seed": %d}' % seed},
    )
    store.save(src, tag)
    return src


# -- point 5: damaged refs on a remote ---------------------------------------------------


def test_damaged_remote_refs_hide_only_themselves(
    tmp_path: Path, remote: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Every shape of damaged ref on the remote: list_remote lists the rest (and warns),
    pull("a") takes the newest readable version, pull of the damaged tag is
    IntegrityError; never a raw AttributeError / OverflowError / TypeError."""
    a = _store(tmp_path, "a", remote)
    _save(a, tmp_path, "a:v0", 1)
    _save(a, tmp_path, "a:v1", 2)  # a's newest: its ref gets damaged
    _save(a, tmp_path, "b:v1", 3)
    for tag in ("a:v0", "a:v1", "b:v1"):
        a.push(tag)
    t = _transport(remote)
    valid = t.get("refs/a/v1")
    for shape, data in shapes(valid).items():
        t.put("refs/a/v1", data)
        fresh = _store(tmp_path, f"fresh-{shape}", remote)  # no cached copy of the ref
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="modelvault"):
            listed = [str(x) for x in fresh.list_remote()]
        assert listed == ["b:v1", "a:v0"], shape
        assert "a:v1" in caplog.text, shape
        with caplog.at_level(logging.WARNING, logger="modelvault"):
            fresh.pull("a")
        assert [str(m.tag) for m in fresh.list()] == ["a:v0"], shape
        with pytest.raises(IntegrityError, match="a:v1"):
            fresh.pull("a:v1")
        fresh.pull("b")
        assert fresh.verify().ok, shape
        assert [str(m.tag) for m in fresh.list()] == ["b:v1", "a:v0"], shape


def test_a_damaged_cached_copy_of_a_remote_ref_is_read_again(
    tmp_path: Path, cheap_remote: dict[str, Any]
) -> None:
    a = _store(tmp_path, "a", cheap_remote)
    _save(a, tmp_path, "a:v1", 1)
    a.push("a:v1")
    b = _store(tmp_path, "b", cheap_remote)
    assert b.list_remote() == ["a:v1"]
    (cached,) = (b.path / "remotes").glob("*/refs/a/v1")
    cached.write_bytes(b"null")
    assert b.list_remote() == ["a:v1"]
    b.pull("a")
    assert b.verify().ok


def test_a_remote_whose_every_ref_of_a_name_is_damaged(
    tmp_path: Path, cheap_remote: dict[str, Any]
) -> None:
    a = _store(tmp_path, "a", cheap_remote)
    _save(a, tmp_path, "a:v1", 1)
    a.push("a:v1")
    _transport(cheap_remote).put("refs/a/v1", b"[1, 2]")
    b = _store(tmp_path, "b", cheap_remote)
    with pytest.raises(IntegrityError, match="a:v1"):
        b.pull("a")
    assert b.list() == []


def test_shapes_cover_the_issue() -> None:
    assert {"truncated", "list", "null", "created-1e400", "model-short", "created-bool"} <= set(
        SHAPES
    )


# -- point 6a: sizes that lie ------------------------------------------------------------


def forge(
    store: Store,
    tag: str,
    *,
    entry_size: int | None = None,
    folder_size: int | None = None,
    model_size: int | None = None,
    chunk_len: int | None = None,
    created: int = 1_700_000_000_000_000,
) -> RefValue:
    """Store by hand a model ``tag`` = ``sub/w.bin`` whose objects are well formed and
    correctly hashed, but may give a wrong size: the file's entry in its tree
    (``entry_size``), the folder's entry in the root tree (``folder_size``), the model's
    size (``model_size``), or the chunk's length in the file object (``chunk_len``; the
    file object's size follows it, so the file object itself is consistent)."""
    data = b"weights!" * 500
    t = Tag.from_str(tag)
    with store.repo.writing() as w:
        cid = w.add(ObjType.CHUNK, data)
        n = len(data) if chunk_len is None else chunk_len
        fid = w.add(ObjType.FILE, FileObject(n, [(cid, n)]).encode())
        file_entry = TreeEntry("w.bin", KIND_FILE, fid, n if entry_size is None else entry_size)
        sub = TreeObject([file_entry])
        sid = w.add(ObjType.TREE, sub.encode())
        folder = TreeEntry(
            "sub", KIND_TREE, sid, file_entry.size if folder_size is None else folder_size
        )
        rid = w.add(ObjType.TREE, TreeObject([folder]).encode())
        size = folder.size if model_size is None else model_size
        assert t.version is not None
        model = ModelObject(t.name, t.version, "", rid, size, created)
        mid = w.add(ObjType.MODEL, model.encode())
        w.commit()
    ref = RefValue.of(t, mid, model)
    if created > 253_402_300_799_999_999:  # no ref can hold that time: write one by hand
        path = store.path / "refs" / t.name / t.version
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"model": mid.hex(), "created": 1}))
    else:
        assert store.repo.refs.create(ref)
    return ref


LIES = {
    "file entry": {"entry_size": 7},
    "file entry and its folder": {"entry_size": 7, "folder_size": 7},
    "folder entry": {"folder_size": 1},
    "model size": {"model_size": 10**12},
    "chunk length": {"chunk_len": 100},
}


@pytest.mark.parametrize("lie", LIES)
def test_pull_refuses_a_size_that_lies(
    tmp_path: Path, cheap_remote: dict[str, Any], lie: str
) -> None:
    a = _store(tmp_path, "a", cheap_remote)
    forge(a, "evil:v1", **LIES[lie])
    a.push("evil:v1")
    b = _store(tmp_path, "b", cheap_remote)
    with pytest.raises(IntegrityError, match=r"evil:v1.*says"):
        b.pull("evil:v1")
    with pytest.raises(IntegrityError, match=r"evil:v1.*says"):
        b.pull("evil")
    assert b.list() == []  # nothing published
    assert b.verify().ok and b.stats().stored_bytes == 0  # nothing stored


def test_pull_refuses_a_size_lie_on_s3(tmp_path: Path, s3_bucket: dict[str, Any]) -> None:
    remote = {"url": s3_bucket["url"] + "/m", "options": s3_bucket["options"]}
    a = _store(tmp_path, "a", remote)
    forge(a, "evil:v1", entry_size=7, folder_size=7)
    a.push("evil:v1")
    b = _store(tmp_path, "b", remote)
    with pytest.raises(IntegrityError, match=r"evil:v1.*says 7 bytes"):
        b.pull("evil:v1")
    assert b.list() == []


def test_an_honest_forged_model_pulls(tmp_path: Path, cheap_remote: dict[str, Any]) -> None:
    """The forging helper itself makes a sound model when nothing lies."""
    a = _store(tmp_path, "a", cheap_remote)
    forge(a, "fine:v1")
    a.push("fine:v1")
    b = _store(tmp_path, "b", cheap_remote)
    b.pull("fine")
    with b.get("fine:v1").open("sub/w.bin") as f:
        assert f.read() == b"weights!" * 500
    assert b.get("fine").size == 4000 and b.verify().ok


def test_a_model_object_from_past_year_9999_is_refused(
    tmp_path: Path, cheap_remote: dict[str, Any]
) -> None:
    """A well-formed model object whose creation time no datetime (and no ref) holds:
    pull refuses it by its tag, and latest skips it; import refuses it."""
    a = _store(tmp_path, "a", cheap_remote)
    forge(a, "evil:v0")
    forge(a, "evil:v1", created=2**63)
    a.push("evil:v0")
    a.push("evil:v1")
    b = _store(tmp_path, "b", cheap_remote)
    with pytest.raises(IntegrityError, match="evil:v1"):
        b.pull("evil:v1")
    b.pull("evil")
    assert [str(m.tag) for m in b.list()] == ["evil:v0"]
    assert b.verify().ok
    archive = a.export_model("evil:v1", str(tmp_path))
    c = Store(tmp_path / "c")
    with pytest.raises(modelvault.ArchiveError, match="evil:v1"):
        c.import_model(archive)
    assert c.list() == [] and c.verify().ok


@pytest.mark.parametrize("lie", LIES)
def test_import_refuses_a_size_that_lies(tmp_path: Path, lie: str) -> None:
    a = Store(tmp_path / "a")
    forge(a, "evil:v1", **LIES[lie])
    archive = a.export_model("evil:v1", str(tmp_path))
    b = Store(tmp_path / "b")
    with pytest.raises(modelvault.ArchiveError, match="wrong size"):
        b.import_model(archive)
    assert b.list() == [] and b.stats().stored_bytes == 0


# -- point 6b: a ref whose created (or summary) lies ----------------------------------------


def _lie_in_ref(remote: dict[str, Any], tag: str, **changes: Any) -> None:
    t = _transport(remote)
    key = "refs/" + tag.replace(":", "/")
    doc = json.loads(t.get(key))
    t.put(key, json.dumps({**doc, **changes}).encode())


def test_latest_goes_by_the_model_objects_not_by_what_refs_say(
    tmp_path: Path, remote: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    a = _store(tmp_path, "a", remote)
    _save(a, tmp_path, "clf:old", 1)
    _save(a, tmp_path, "clf:new", 2)
    _save(a, tmp_path, "clf:older", 3)
    a.push("clf:old")
    a.push("clf:new")
    newest = a.get("clf:new").ref.created
    # old claims to be the newest by far; older claims to be older than everything
    _lie_in_ref(remote, "clf:old", created=newest + 10**12, size=1, module="evil")
    b = _store(tmp_path, "b", remote)
    with caplog.at_level(logging.WARNING, logger="modelvault"):
        b.pull("clf")
    assert [str(m.tag) for m in b.list()] == ["clf:new"]
    assert "clf:old" in caplog.text  # the lying ref is named
    b.pull("clf:old")  # by its exact tag it pulls, with the model object's values
    old = b.get("clf:old")
    assert old.creation_time == old.info.creation_time
    assert old.size == 4000 + len(b'{"seed": 1}') and old.module == ""
    assert [str(m.tag) for m in b.list()] == ["clf:new", "clf:old"]
    assert b.get("clf").tag == "clf:new"
    assert b.stats().logical_bytes == 2 * old.size
    # list_remote orders by the values a pull checked
    assert [str(x) for x in b.list_remote()] == ["clf:new", "clf:old"]


def test_a_truly_newest_version_whose_ref_understates_its_time_is_still_latest(
    tmp_path: Path, cheap_remote: dict[str, Any]
) -> None:
    a = _store(tmp_path, "a", cheap_remote)
    _save(a, tmp_path, "clf:v1", 1)
    _save(a, tmp_path, "clf:v2", 2)
    a.push("clf:v1")
    a.push("clf:v2")
    _lie_in_ref(cheap_remote, "clf:v2", created=0)
    b = _store(tmp_path, "b", cheap_remote)
    b.pull("clf")
    assert [str(m.tag) for m in b.list()] == ["clf:v2"]
    assert b.get("clf:v2").creation_time == a.get("clf:v2").creation_time
    c = _store(tmp_path, "c", cheap_remote)  # the local copy of v1 answers for v1
    c.pull("clf:v1")
    c.pull("clf")
    assert c.get("clf").tag == "clf:v2"


def test_a_ref_pointing_at_another_tags_model_is_skipped_for_latest(
    tmp_path: Path, cheap_remote: dict[str, Any]
) -> None:
    a = _store(tmp_path, "a", cheap_remote)
    _save(a, tmp_path, "clf:v1", 1)
    _save(a, tmp_path, "clf:v2", 2)
    a.push("clf:v1")
    a.push("clf:v2")
    v1 = a.get("clf:v1").id
    _lie_in_ref(cheap_remote, "clf:v2", model=v1)  # v2's ref names v1's model object
    b = _store(tmp_path, "b", cheap_remote)
    b.pull("clf")
    assert [str(m.tag) for m in b.list()] == ["clf:v1"]
    with pytest.raises(IntegrityError, match="clf:v2"):
        b.pull("clf:v2")


# -- point 3: pull and import repair what the store lost -------------------------------------


def _drop_packs_of(store: Store, model: modelvault.Model) -> None:
    """Lose every pack holding an object of ``model`` (a disk that lost files)."""
    reach, _ = maintenance.reachable(store.repo, [bytes.fromhex(model.id)])
    packs = {e.pack for e in store.repo.objects.entries(list(reach)) if e is not None}
    for pack in packs:
        store.repo.objects.delete_pack(pack)
    store.repo.objects.refresh()


def test_pull_restores_what_the_store_lost(tmp_path: Path, cheap_remote: dict[str, Any]) -> None:
    a = _store(tmp_path, "a", cheap_remote)
    keep_src = _save(a, tmp_path, "keep:v1", 9, size=30_000)
    src = _save(a, tmp_path, "clf:v1", 1, size=50_000)
    pushed = a.push("clf:v1")
    _drop_packs_of(a, a.get("clf:v1"))
    assert not a.verify().ok
    got = a.pull("clf:v1")  # the tag is here with the same model: the objects come back
    assert got.objects == pushed.objects
    assert a.verify().ok
    assert _files(Path(a.get("clf:v1").path)) == _files(src)
    assert _files(Path(a.get("keep:v1").path)) == _files(keep_src)
    assert a.pull("clf:v1").objects == 0  # and then nothing moves


def test_pull_by_name_restores_too(tmp_path: Path, cheap_remote: dict[str, Any]) -> None:
    a = _store(tmp_path, "a", cheap_remote)
    src = _save(a, tmp_path, "clf:v1", 1, size=50_000)
    a.push("clf")
    _drop_packs_of(a, a.get("clf:v1"))
    assert a.pull("clf").objects > 0
    assert a.verify().ok
    with a.get("clf").open("w.bin") as f:
        assert f.read() == (src / "w.bin").read_bytes()


def test_import_restores_what_the_store_lost(tmp_path: Path) -> None:
    a = Store(tmp_path / "a")
    keep_src = _save(a, tmp_path, "keep:v1", 9, size=30_000)
    src = _save(a, tmp_path, "clf:v1", 1, size=50_000)
    archive = a.export_model("clf:v1", str(tmp_path))
    _drop_packs_of(a, a.get("clf:v1"))
    assert not a.verify().ok
    imported = a.import_model(archive)
    assert imported.tag == "clf:v1"
    assert a.verify().ok
    assert _files(Path(a.get("clf:v1").path)) == _files(src)
    assert _files(Path(a.get("keep:v1").path)) == _files(keep_src)
