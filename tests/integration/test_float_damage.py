"""A damaged float-codec chunk, end to end: a pull, a push and both verifies check runs of
such chunks with one decoding call and one hashing call (``records.check_payloads``),
not chunk by chunk, and must still find the one chunk in the middle of a run whose
bytes are wrong, refuse to copy it anywhere, and repair it from a healthy copy."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from _helpers import archive_footer_at, bf16_weights, flip, safetensors, write_files

from modelvault import IntegrityError, Store, remotes
from modelvault.checkout import lookup, read_file_object
from modelvault.core import codec
from modelvault.core.codec import Codec
from modelvault.core.hashing import ObjType
from modelvault.core.packfmt import decode_index
from modelvault.errors import ArchiveError, NotFound


@pytest.fixture(autouse=True)
def default_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 safetensors chunks get the float codec (the default, whatever the
    environment of the test run)."""
    monkeypatch.setattr(codec, "FLOAT_WRITE", False)
    monkeypatch.setattr(codec, "FLOAT_HINTED", frozenset({"BF16"}))


def _setup(tmp_path: Path) -> tuple[Store, Path, list[bytes]]:
    """A store holding ``keep:v1`` and ``clf:v1`` (a bf16 file of float chunks), both
    pushed to ``origin``; the ids of clf:v1's chunks."""
    store = Store(tmp_path / "store")
    remotes.add("origin", (tmp_path / "remote").as_uri(), store=store)
    keep = write_files(tmp_path / "keep", {"k.bin": bytes(range(256)) * 300})
    src = write_files(
        tmp_path / "src",
        {"w.safetensors": safetensors("BF16", bf16_weights(700_000, 5)), "c.json": b"{}"},
    )
    store.save(keep, "keep:v1")
    model = store.save(src, "clf:v1")
    db = store.repo.objects
    _, fid = lookup(db, model.object.tree, "w.safetensors")
    chunks = [cid for cid, _ in read_file_object(db, fid).chunks]
    codecs = [db.entry(cid).codec for cid in chunks]  # type: ignore[union-attr]
    assert codecs.count(Codec.FLOAT) >= 8, codecs
    store.push("keep:v1")
    store.push("clf:v1")
    return store, src, chunks


def _middle_float_chunk(store: Store, chunks: list[bytes]) -> bytes:
    """A float chunk with float chunks on both sides (the middle of a run)."""
    db = store.repo.objects
    flt = [db.entry(c).codec == Codec.FLOAT for c in chunks]  # type: ignore[union-attr]
    i = next(i for i in range(1, len(chunks) - 1) if flt[i - 1] and flt[i] and flt[i + 1])
    return chunks[i + 2] if all(flt[i : i + 4]) else chunks[i]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_damaged_float_chunk_in_the_store_is_found_kept_here_and_repaired(
    tmp_path: Path,
) -> None:
    store, src, chunks = _setup(tmp_path)
    cid = _middle_float_chunk(store, chunks)
    e = store.repo.objects.entry(cid)
    assert e is not None and e.codec == Codec.FLOAT and e.kind == ObjType.CHUNK
    flip(store.path / "objects" / "packs" / f"{e.pack}.pack", e.offset + e.stored_len // 2, 0x10)

    # a push elsewhere refuses to spread it (the packs are checked before they go)
    remotes.add("other", (tmp_path / "other").as_uri(), store=store)
    with pytest.raises(IntegrityError, match=f"local pack {e.pack} is damaged"):
        store.push("clf:v1", "other")
    report = store.verify()
    assert not report.ok
    assert report.corrupt == [cid.hex()]
    assert report.broken_tags == ["clf:v1"]
    store.push("keep:v1", "other")  # what is sound still goes
    # the healthy copy on origin repairs it
    store.pull("clf:v1")
    assert store.verify().ok
    assert _files(Path(Store(store.path).get("clf:v1").path)) == _files(src)


def test_a_damaged_float_chunk_on_the_remote_is_reported_and_never_pulled(
    tmp_path: Path,
) -> None:
    store, _, chunks = _setup(tmp_path)
    cid = _middle_float_chunk(store, chunks)
    packs = tmp_path / "remote" / "packs"
    e = None
    for idx in packs.glob("*.idx"):
        e = decode_index(idx.stem, idx.read_bytes())[0].get(cid) or e
    assert e is not None and e.codec == Codec.FLOAT
    flip(packs / f"{e.pack}.pack", e.offset + e.stored_len // 2, 0x10)

    report = store.verify_remote("origin")
    assert not report.ok
    assert report.corrupt == [cid.hex()]
    assert report.broken_tags == ["clf:v1"]

    fresh = Store(tmp_path / "fresh")
    remotes.add("origin", (tmp_path / "remote").as_uri(), store=fresh)
    with pytest.raises(IntegrityError, match=cid.hex()):
        fresh.pull("clf:v1")
    with pytest.raises(NotFound):
        fresh.get("clf:v1")
    fresh.pull("keep:v1")
    assert fresh.verify().ok


def test_a_damaged_float_chunk_in_an_archive_is_refused(tmp_path: Path) -> None:
    store, src, chunks = _setup(tmp_path)
    cid = _middle_float_chunk(store, chunks)
    path = Path(store.export_model("clf:v1", str(tmp_path / "out")))
    data = bytearray(path.read_bytes())
    at, count, _ = struct.unpack_from("<QI4s", data, archive_footer_at(data))
    rows = [struct.unpack_from("<32sBBxxQII", data, at + 8 + 52 * i) for i in range(count)]
    (offset, stored) = next((o, n) for oid, _, how, o, n, _ in rows if oid == cid)
    data[offset + stored // 2] ^= 0x10
    bad = tmp_path / "bad.bentomodel"
    bad.write_bytes(bytes(data))

    target = Store(tmp_path / "target")
    with pytest.raises(ArchiveError, match=cid.hex()):
        target.import_model(bad)
    with pytest.raises(NotFound):
        target.get("clf:v1")
    target.import_model(path)  # the sound copy
    assert target.verify().ok
    assert _files(Path(target.get("clf:v1").path)) == _files(src)
