"""delete_remote, gc_remote and verify_remote on real backends (moto's S3 server on
127.0.0.1, file://, memory://): what they remove, free, keep and report."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault import remotes
from modelvault.remote.maintenance import RemoteProgress
from modelvault.remote.transport import Transport, open_transport
from modelvault.repo.layout import PACK_INDEX_KEY, PACKS, alias_key, pack_key, ref_key

BACKENDS = ["s3", "file", "memory"]


@pytest.fixture(params=BACKENDS)
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        return {"url": bucket["url"] + "/models", "options": bucket["options"]}
    if request.param == "file":
        return {"url": (tmp_path / "remote").as_uri(), "options": {}}
    return {"url": f"memory://mv-{uuid.uuid4().hex[:8]}", "options": {}}


def _store(tmp_path: Path, name: str, remote: dict[str, Any]) -> modelvault.Store:
    store = modelvault.Store(tmp_path / name)
    remotes.add("origin", remote["url"], store=store, **remote["options"])
    return store


def _transport(remote: dict[str, Any]) -> Transport:
    return open_transport(remote["url"], remote["options"])


def _model(folder: Path, shared: bytes, seed: int, size: int = 1 << 20) -> Path:
    folder.mkdir(parents=True)
    (folder / "w.bin").write_bytes(shared + random.Random(seed).randbytes(size))
    (folder / "config.json").write_text(json.dumps({"seed": seed}))
    return folder


def _packs(t: Transport) -> set[str]:
    return {m.group(1) for k in t.list(PACKS) if (m := PACK_INDEX_KEY.fullmatch(k))}


def _pushed(tmp_path: Path, remote: dict[str, Any], versions: int = 3) -> modelvault.Store:
    """A store that saved and pushed clf:v1..vN: each version 256 KiB shared with the
    others and 1 MiB of its own, each push its own pack."""
    store = _store(tmp_path, "a", remote)
    shared = random.Random(0).randbytes(256 << 10)
    for i in range(1, versions + 1):
        store.save(_model(tmp_path / f"m{i}", shared, i), f"clf:v{i}")
        store.push(f"clf:v{i}")
    return store


def _set_remote_alias(t: Transport, store: modelvault.Store, tag: str, alias: str) -> None:
    """A remote alias as docs/format.md section 11 specifies it (what push of
    ``name@alias`` writes)."""
    model = store.get(tag)
    doc = {"version": str(model.tag.version), "model": model.id}
    t.put(alias_key(model.tag.name, alias), json.dumps(doc).encode())


def _pulls_everything(tmp_path: Path, remote: dict[str, Any], name: str = "fresh") -> None:
    fresh = _store(tmp_path, name, remote)
    for tag in fresh.list_remote():
        fresh.pull(str(tag))
    assert fresh.verify().ok


# -- delete -------------------------------------------------------------------------


def test_delete_remote_version_name_and_unknown(tmp_path: Path, remote: dict[str, Any]) -> None:
    store = _pushed(tmp_path, remote)
    other = _store(tmp_path, "other", remote)
    assert len(other.list_remote()) == 3  # (caches the refs there)
    assert store.delete_remote("clf:v2") == ["clf:v2"]
    assert [str(t) for t in other.list_remote()] == ["clf:v3", "clf:v1"]
    with pytest.raises(modelvault.NotFound):
        other.pull("clf:v2")  # a cached copy of the ref does not bring it back
    with pytest.raises(modelvault.NotFound):
        store.delete_remote("clf:v2")
    with pytest.raises(modelvault.NotFound):
        store.delete_remote("nope")
    assert sorted(store.delete_remote("clf")) == ["clf:v1", "clf:v3"]
    assert store.list_remote() == []
    assert store.list("clf")  # the local store is untouched


def test_delete_remote_refuses_an_aliased_version(tmp_path: Path, remote: dict[str, Any]) -> None:
    store = _pushed(tmp_path, remote, versions=2)
    t = _transport(remote)
    _set_remote_alias(t, store, "clf:v1", "prod")
    for tag in ("clf:v1", "clf"):
        with pytest.raises(modelvault.ModelExists, match="clf@prod"):
            store.delete_remote(tag)
    assert len(store.list_remote()) == 2  # nothing deleted
    assert store.delete_remote("clf@prod") == ["clf@prod"]
    assert not t.exists(alias_key("clf", "prod"))
    with pytest.raises(modelvault.NotFound):
        store.delete_remote("clf@prod")
    with pytest.raises(modelvault.InvalidTag):
        store.delete_remote("clf@no/pe")
    assert store.delete_remote("clf:v1") == ["clf:v1"]


def test_delete_remote_bad_input(tmp_path: Path, remote: dict[str, Any]) -> None:
    """Issue 19, "Bad input": an alias that breaks the grammar is InvalidTag naming the
    alias, refused before any request; an alias is folded to lowercase like a tag; a
    remote that holds no such tag, alias or modelvault at all is NotFound."""
    from modelvault.remote.transport import wrapping
    from modelvault.remote.wrappers import Metered

    store = _pushed(tmp_path, remote, versions=1)
    t = _transport(remote)
    _set_remote_alias(t, store, "clf:v1", "prod")
    meters: list[Metered] = []

    def metered(inner: Transport) -> Transport:
        meters.append(Metered(inner))
        return meters[-1]

    for bad in ("clf@", "clf@no/pe", "clf@a@b", "clf@a:b", "clf@latest", "clf@-x", "@prod"):
        with wrapping(metered), pytest.raises(modelvault.InvalidTag, match=r"alias|tag|name"):
            store.delete_remote(bad)
    with wrapping(metered), pytest.raises(modelvault.InvalidTag, match="version"):
        store.delete_remote("clf:no/pe")
    assert sum(m.requests for m in meters) == 0  # refused before the remote is asked
    with pytest.raises(modelvault.InvalidTag, match=r"invalid alias 'no/pe'"):
        store.delete_remote("clf@no/pe")
    with pytest.raises(modelvault.NotFound, match="clf@stage"):
        store.delete_remote("clf@stage")
    with pytest.raises(modelvault.ModelExists, match="clf@prod"):
        store.delete_remote("CLF:V1")
    assert store.delete_remote("CLF@Prod") == ["clf@prod"]  # folded, as tags are
    assert not t.exists(alias_key("clf", "prod"))
    assert store.delete_remote("CLF:V1") == ["clf:v1"]
    empty = _store(tmp_path, "b", {**remote, "url": remote["url"] + "-none"})
    for tag in ("clf", "clf:v1", "clf@prod"):
        with pytest.raises(modelvault.NotFound, match="no modelvault remote there"):
            empty.delete_remote(tag)


def test_models_functions_use_the_default_store(tmp_path: Path, remote: dict[str, Any]) -> None:
    store = modelvault.models.default_store()
    remotes.add("origin", remote["url"], store=store, **remote["options"])
    store.save(_model(tmp_path / "m", b"", 1, 4096), "tiny:v1")
    store.push("tiny:v1")
    assert modelvault.models.verify_remote().ok
    assert modelvault.models.delete_remote("tiny") == ["tiny:v1"]
    assert modelvault.models.gc_remote() > 4096
    assert modelvault.models.list_remote() == []


# -- gc -------------------------------------------------------------------------------


@pytest.mark.slow
def test_gc_remote_frees_deleted_versions_and_repacks(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    store = _pushed(tmp_path, remote)
    t = _transport(remote)
    before = _packs(t)
    assert store.gc_remote() == 0  # nothing dead yet
    assert _packs(t) == before
    store.delete_remote("clf:v3")  # its own pack: wholly dead
    store.delete_remote("clf:v1")  # its pack also holds the shared bytes v2 needs
    seen: list[RemoteProgress] = []
    freed = store.gc_remote(progress=seen.append)
    assert 2 << 20 < freed < 3 << 20
    assert {p.phase for p in seen} >= {"marking", "repacking", "deleting"}
    after = _packs(t)
    assert len(after) == 2 and len(after & before) == 1  # v2's pack, and v1's repacked
    assert store.gc_remote() == 0  # the space was given back: a second run frees nothing
    assert not t.list("locks")  # the lock is gone
    assert [str(x) for x in store.list_remote()] == ["clf:v2"]
    _pulls_everything(tmp_path, remote)
    assert store.verify_remote().ok


def test_gc_remote_of_an_empty_or_new_remote(tmp_path: Path, remote: dict[str, Any]) -> None:
    store = _store(tmp_path, "a", remote)
    assert store.gc_remote() == 0
    assert store.verify_remote().ok


def test_gc_remote_keeps_what_an_alias_reaches(tmp_path: Path, remote: dict[str, Any]) -> None:
    """An alias is a root even when its version's ref is gone (a damaged remote): gc
    keeps its model, and verify_remote names the alias."""
    store = _pushed(tmp_path, remote, versions=2)
    t = _transport(remote)
    _set_remote_alias(t, store, "clf:v1", "prod")
    t.delete(ref_key(modelvault.Tag("clf", "v1")))  # by hand, behind modelvault's back
    assert store.gc_remote() == 0
    report = store.verify_remote()
    assert not report.ok
    assert "clf@prod" in report.broken_aliases
    assert "clf:v1" in report.broken_aliases["clf@prod"]
    assert not report.corrupt and not report.broken_tags


def test_gc_remote_refuses_with_an_unreadable_alias(tmp_path: Path, remote: dict[str, Any]) -> None:
    store = _pushed(tmp_path, remote, versions=2)
    t = _transport(remote)
    store.delete_remote("clf:v2")
    before = _packs(t)
    t.put(alias_key("clf", "prod"), b"{not json")
    with pytest.raises(modelvault.IntegrityError, match="clf/prod"):
        store.gc_remote()
    assert _packs(t) == before  # nothing freed
    assert not t.list("locks")
    t.delete(alias_key("clf", "prod"))
    assert store.gc_remote() > 1 << 20


def test_gc_remote_refuses_when_a_tag_reaches_a_missing_object(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    store = _pushed(tmp_path, remote, versions=2)
    t = _transport(remote)
    store.delete_remote("clf:v1")
    victim = max(_packs(t))
    t.delete(f"{PACKS}/{victim}.idx")  # a lost index: its objects are invisible
    before = set(t.list(PACKS))
    with pytest.raises(modelvault.IntegrityError, match="nothing freed"):
        store.gc_remote()
    assert set(t.list(PACKS)) == before


def test_gc_remote_removes_packs_without_index(tmp_path: Path, remote: dict[str, Any]) -> None:
    store = _pushed(tmp_path, remote, versions=1)
    t = _transport(remote)
    t.put(pack_key("ab" * 32), b"MVPK left by a push that died")
    store.gc_remote()
    assert not t.exists(pack_key("ab" * 32))
    _pulls_everything(tmp_path, remote)


def test_gc_remote_forgets_removed_packs_in_the_local_cache(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    store = _pushed(tmp_path, remote)
    cached = store.path / "remotes"
    store.delete_remote("clf:v3")
    names_before = {p.stem for p in cached.rglob("packs/*.idx")}
    store.gc_remote()
    names_after = {p.stem for p in cached.rglob("packs/*.idx")}
    assert names_after == _packs(_transport(remote))
    assert names_after != names_before


# -- verify ---------------------------------------------------------------------------


def _corrupt(t: Transport, key: str, at: int) -> None:
    data = bytearray(t.get(key))
    data[at] ^= 0xFF
    t.put(key, bytes(data))


def test_verify_remote_finds_a_corrupt_object(tmp_path: Path, remote: dict[str, Any]) -> None:
    store = _pushed(tmp_path, remote, versions=2)
    t = _transport(remote)
    report = store.verify_remote()
    assert report.ok and report.objects_checked > 10 and not report.corrupt
    # flip a byte in the middle of the second version's own pack
    seen: list[RemoteProgress] = []
    victim = next(p for p in _packs(t) if _holds(store, t, p, "clf:v2"))
    size = len(t.get(pack_key(victim)))
    _corrupt(t, pack_key(victim), size // 2)
    report = store.verify_remote(progress=seen.append)
    assert not report.ok
    assert len(report.corrupt) == 1
    assert [str(x) for x in report.broken_tags] == ["clf:v2"]
    assert pack_key(victim) in report.damaged_files
    assert seen and seen[-1].objects == seen[-1].total_objects - 1


def _holds(store: modelvault.Store, t: Transport, pack: str, tag: str) -> bool:
    from modelvault.core.packfmt import decode_index

    entries, _ = decode_index(pack, t.get(f"{PACKS}/{pack}.idx"))
    return bytes.fromhex(store.get(tag).id) in entries


def test_verify_remote_finds_a_damaged_header_and_trailing_bytes(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    store = _pushed(tmp_path, remote, versions=1)
    t = _transport(remote)
    (pack,) = _packs(t)
    _corrupt(t, pack_key(pack), 9)  # the first record header's codec byte... or type
    report = store.verify_remote()
    assert not report.ok and pack_key(pack) in report.damaged_files
    _corrupt(t, pack_key(pack), 9)  # back as it was
    assert store.verify_remote().ok
    t.put(pack_key(pack), t.get(pack_key(pack)) + b"junk")
    report = store.verify_remote()
    assert not report.ok and "after its last record" in report.damaged_files[pack_key(pack)]


def test_verify_remote_reports_missing_packs_and_refs(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    store = _pushed(tmp_path, remote, versions=2)
    t = _transport(remote)
    _set_remote_alias(t, store, "clf:v1", "prod")
    victim = next(p for p in _packs(t) if _holds(store, t, p, "clf:v1"))
    t.delete(pack_key(victim))
    t.put(ref_key(modelvault.Tag("clf", "v9")), b"not a ref")
    report = store.verify_remote()
    assert not report.ok
    assert report.damaged_files[pack_key(victim)] == "the pack file is missing"
    assert {str(x) for x in report.broken_tags} == {"clf:v1", "clf:v2", "clf:v9"}  # (shared)
    assert "refs/clf/v9" in report.damaged_files
    assert "broken" in report.broken_aliases["clf@prod"]


def test_a_version_deleted_and_pushed_again_is_listed_anew_everywhere(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    """Refs may now be deleted, so a store's copy of a listed ref serves only while the
    listing gives the key the time the copy was read at."""
    import time

    store = _pushed(tmp_path, remote, versions=1)
    other = _store(tmp_path, "other", remote)
    other.pull("clf")
    first = other.get("clf:v1").id
    store.delete_remote("clf:v1")
    time.sleep(1.1)  # S3 stamps whole seconds
    second = _store(tmp_path, "second", remote)
    second.save(_model(tmp_path / "again", b"", 99), "clf:v1")
    second.push("clf:v1")
    other.delete("clf:v1")
    other.pull("clf")  # latest: chosen from the listing, the refs read again
    assert other.get("clf:v1").id == second.get("clf:v1").id != first


def test_gc_remote_requests_grow_with_packs_not_chunks(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    """A remote gc that repacks and deletes makes a number of requests set by the packs
    (listings, indexes, reads of neighbourhoods, two deletes a pack), however many objects
    they hold: a fresh store (no local copy of any object) collecting 3 versions of 150
    small files each (over 600 objects in all)."""
    from modelvault.remote.transport import Metered, wrapping

    store = _store(tmp_path, "a", remote)
    rng = random.Random(5)
    shared = {f"s{i}.txt": rng.randbytes(2000) for i in range(50)}
    for v in (1, 2, 3):
        folder = tmp_path / f"many{v}"
        folder.mkdir()
        for name, data in shared.items():
            (folder / name).write_bytes(data)
        for i in range(100):
            (folder / f"own{i}.txt").write_bytes(rng.randbytes(2000))
        store.save(folder, f"many:v{v}")
        store.push(f"many:v{v}")
    objects = len(store.repo.objects.ids())
    store.delete_remote("many:v1")  # its pack holds the shared files: repacked
    store.delete_remote("many:v3")  # its own pack: deleted
    packs = len(_packs(_transport(remote)))
    fresh = _store(tmp_path, "fresh", remote)
    meters: list[Metered] = []

    def meter(inner: Transport) -> Transport:
        meters.append(Metered(inner))
        return meters[-1]

    with wrapping(meter):
        assert fresh.gc_remote() > 200_000
    requests = sum(m.requests for m in meters)
    assert objects > 600 and packs == 3
    assert requests <= 16 + 8 * packs, requests  # 28 when written; not one per object
    _pulls_everything(tmp_path, remote)
