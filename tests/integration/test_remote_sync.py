"""Push, pull and list_remote against real backends: moto's S3 server, file:// and memory://."""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault import remotes
from modelvault.core.hashing import ObjType
from modelvault.remote.sync import TransferProgress

BACKENDS = ["s3", "file", "memory"]


def _write_model(folder: Path, seed: int, size: int = 3 << 20, shared: bytes = b"") -> Path:
    """A model folder: a weights file (``shared`` then random bytes) and a small config."""
    rng = random.Random(seed)
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(shared + rng.randbytes(size))
    (folder / "sub" / "config.json").write_text(f'{{"seed": {seed}}}')
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(params=BACKENDS)
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """A fresh remote: ``{"url", "options"}`` for S3 (moto on 127.0.0.1), file or memory."""
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


def test_round_trip_is_byte_identical(tmp_path: Path, remote: dict[str, Any]) -> None:
    a = _store(tmp_path, "a", remote)
    src = _write_model(tmp_path / "m1", seed=1)
    model = a.save(src, "clf:v1", metadata={"acc": 0.9}, custom_objects={"k": [1, 2]})
    sent = a.push("clf:v1")
    assert sent.objects > 0 and sent.sent >= 3 << 20

    b = _store(tmp_path, "b", remote)
    got = b.pull("clf:v1")
    assert got.objects == sent.objects
    pulled = b.get("clf:v1")
    assert pulled.id == model.id
    assert _files(Path(pulled.path)) == _files(src)
    assert pulled.info.metadata == {"acc": 0.9}
    assert pulled.custom_objects == {"k": [1, 2]}
    assert b.verify().ok


def test_push_and_pull_again_move_nothing(tmp_path: Path, remote: dict[str, Any]) -> None:
    a = _store(tmp_path, "a", remote)
    a.save(_write_model(tmp_path / "m1", seed=1), "clf:v1")
    a.push("clf:v1")
    again = a.push("clf")  # the bare name means the newest local version
    assert (again.objects, again.sent) == (0, 0)
    b = _store(tmp_path, "b", remote)
    b.pull("clf:v1")
    assert b.pull("clf:v1").objects == 0


def test_second_version_sends_only_its_new_bytes(tmp_path: Path, remote: dict[str, Any]) -> None:
    a = _store(tmp_path, "a", remote)
    base = os.urandom(4 << 20)
    a.save(_write_model(tmp_path / "m1", seed=1, size=256 << 10, shared=base), "clf:v1")
    first = a.push("clf:v1")
    a.save(_write_model(tmp_path / "m2", seed=2, size=256 << 10, shared=base), "clf:v2")
    second = a.push("clf:v2")
    assert second.sent < 0.25 * first.sent
    assert second.sent < 256 << 10 + 300 << 10  # the new tail, a boundary chunk, metadata

    b = _store(tmp_path, "b", remote)
    b.pull("clf:v1")
    delta = b.pull("clf:v2")
    assert delta.received < 0.25 * first.sent
    assert _files(Path(b.get("clf:v2").path)) == _files(tmp_path / "m2")


def test_latest_is_the_newest_on_the_remote(tmp_path: Path, remote: dict[str, Any]) -> None:
    a = _store(tmp_path, "a", remote)
    a.save(_write_model(tmp_path / "m1", seed=1, size=1000), "clf:zz-old")
    a.save(_write_model(tmp_path / "m2", seed=2, size=1000), "clf:aa-new")
    a.push("clf:zz-old")
    a.push("clf:aa-new")
    b = _store(tmp_path, "b", remote)
    assert b.pull("clf").objects > 0
    assert [m.tag.version for m in b.list("clf")] == ["aa-new"]
    b.pull("clf:latest")
    assert [str(t) for t in b.list_remote()] == ["clf:aa-new", "clf:zz-old"]
    assert b.list_remote(name="nope") == []


def test_different_model_under_existing_tag_is_refused(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    a = _store(tmp_path, "a", remote)
    b = _store(tmp_path, "b", remote)
    a.save(_write_model(tmp_path / "m1", seed=1, size=1000), "clf:v1")
    b.save(_write_model(tmp_path / "m2", seed=2, size=1000), "clf:v1")
    a.push("clf:v1")
    with pytest.raises(modelvault.ModelExists):
        b.push("clf:v1")
    with pytest.raises(modelvault.ModelExists):
        b.pull("clf:v1")
    assert b.get("clf:v1").id != a.get("clf:v1").id


def test_empty_remote_lists_nothing_and_pull_is_not_found(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    a = _store(tmp_path, "a", remote)
    assert a.list_remote() == []
    with pytest.raises(modelvault.NotFound):
        a.pull("clf")
    a.save(_write_model(tmp_path / "m1", seed=1, size=1000), "clf:v1")
    a.push("clf:v1")
    with pytest.raises(modelvault.NotFound):
        a.pull("clf:v2")
    with pytest.raises(modelvault.NotFound):
        a.pull("other")


def test_progress_reports_objects_and_bytes(tmp_path: Path, remote: dict[str, Any]) -> None:
    a = _store(tmp_path, "a", remote)
    a.save(_write_model(tmp_path / "m1", seed=1), "clf:v1")
    seen: list[TransferProgress] = []
    result = a.push("clf:v1", progress=seen.append)
    assert seen and seen[-1].objects == seen[-1].total_objects == result.objects
    assert seen[-1].bytes == seen[-1].total_bytes > 3 << 20
    pulled: list[TransferProgress] = []
    b = _store(tmp_path, "b", remote)
    b.pull("clf:v1", progress=pulled.append)
    assert pulled[-1].objects == pulled[-1].total_objects
    assert [p.bytes for p in pulled] == sorted(p.bytes for p in pulled)


def _corrupt_one_chunk(store: modelvault.Store, transport: Any) -> None:
    """Flip a byte in the payload of the first chunk of the remote's first pack."""
    from modelvault.remote.repo import RemoteRepo
    from modelvault.repo.layout import pack_key

    repo = RemoteRepo(transport, store.path / "scratch-cache")
    index = repo.index()
    entry = min(
        (e for e in index.entries.values() if e.kind == ObjType.CHUNK),
        key=lambda e: (e.pack, e.offset),
    )
    data = bytearray(transport.get(pack_key(entry.pack)))
    data[entry.offset + 10] ^= 0xFF
    transport.put(pack_key(entry.pack), bytes(data))


def test_corrupted_remote_object_raises_and_publishes_nothing(
    tmp_path: Path, remote: dict[str, Any]
) -> None:
    from modelvault.remote.transport import open_transport

    a = _store(tmp_path, "a", remote)
    a.save(_write_model(tmp_path / "m1", seed=1), "clf:v1")
    a.push("clf:v1")
    _corrupt_one_chunk(a, open_transport(remote["url"], remote["options"]))
    b = _store(tmp_path, "b", remote)
    with pytest.raises(modelvault.IntegrityError):
        b.pull("clf:v1")
    assert b.list() == []
    assert b.verify().ok


def test_remote_given_by_url_env_or_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_bucket: dict[str, Any]
) -> None:
    store = modelvault.Store(tmp_path / "a")
    store.save(_write_model(tmp_path / "m1", seed=1, size=1000), "clf:v1")
    with pytest.raises(modelvault.NotFound, match="mv remote add origin"):
        store.push("clf:v1")
    with pytest.raises(modelvault.NotFound, match="no remote named 'team'"):
        store.push("clf:v1", "team")
    url = (tmp_path / "by-url").as_uri()
    store.push("clf:v1", url)
    assert store.list_remote(url) == [modelvault.Tag("clf", "v1")]
    # $MODELVAULT_REMOTE, and S3 reached through AWS_ENDPOINT_URL_S3 (read by botocore)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket["endpoint_url"])
    monkeypatch.setenv("MODELVAULT_REMOTE", s3_bucket["url"] + "/env")
    store.push("clf:v1")
    assert s3_bucket["fs"].exists(s3_bucket["url"][5:] + "/env/refs/clf/v1")
    remotes.add("team", str(tmp_path / "team"), store=store)
    store.push("clf:v1", "team")
    assert [str(t) for t in store.list_remote("team")] == ["clf:v1"]


def test_models_module_uses_the_default_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = (tmp_path / "r").as_uri()
    monkeypatch.setenv("MODELVAULT_REMOTE", url)
    modelvault.models.save(_write_model(tmp_path / "m1", seed=1, size=1000), "clf:v1")
    assert modelvault.models.push("clf:v1").objects > 0
    assert modelvault.models.list_remote() == [modelvault.Tag("clf", "v1")]
    modelvault.models.delete("clf:v1")
    assert modelvault.models.pull("clf:v1").objects == 0  # objects still local: nothing moves
    assert modelvault.models.get("clf:v1").tag.version == "v1"
