"""A changed byte anywhere on disk is reported by verify and never read back as data.

Damage is made the way bit rot or a careless hand makes it: flipping bytes in pack,
index and ref files (after making the read-only files writable).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from _helpers import flip

from modelvault import IntegrityError, Model, NotFound, Store
from modelvault.core.codec import Codec

KiB = 1024


def pack_of(store: Store, oid: bytes) -> tuple[Path, int, int]:
    """``(pack file, payload offset, payload length)`` of a stored object."""
    e = store.repo.objects.entry(oid)
    assert e is not None
    return store.path / "objects" / "packs" / f"{e.pack}.pack", e.offset, e.stored_len


def chunk_ids(model: Model, rel: str) -> list[bytes]:
    from modelvault.checkout import lookup, read_file_object

    db = model.repo.objects
    _, fid = lookup(db, model.object.tree, rel)
    return [cid for cid, _ in read_file_object(db, fid).chunks]


def read_all(model: Model, files: dict[str, bytes]) -> None:
    """Each file reads back exactly, or raises IntegrityError: never other bytes."""
    for rel, data in files.items():
        try:
            with model.open(rel) as f:
                got = f.read()
        except IntegrityError:
            continue
        assert got == data, f"{rel} read back different bytes"


@pytest.fixture
def files() -> dict[str, dict[str, bytes]]:
    rng = np.random.default_rng(11)
    return {
        "a": {
            "weights.bin": rng.bytes(600 * KiB),  # raw chunks
            "vocab.txt": "\n".join(f"token{i}" for i in range(60000)).encode(),  # zstd chunks
            "sub/config.json": b'{"layers": 2}',
        },
        "b": {"weights.bin": rng.bytes(200 * KiB)},
    }


def _save(store: Store, tmp_path: Path, files: dict[str, dict[str, bytes]]) -> None:
    for name, content in files.items():
        root = tmp_path / name
        for rel, data in content.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        store.save(root, f"{name}:v1")


@pytest.mark.parametrize(("rel", "codec"), [("weights.bin", Codec.RAW), ("vocab.txt", Codec.ZSTD)])
def test_flipped_chunk_byte_is_reported_and_raises_on_read(
    store: Store, tmp_path: Path, files: dict[str, dict[str, bytes]], rel: str, codec: Codec
) -> None:
    _save(store, tmp_path, files)
    model = store.get("a:v1")
    cid = chunk_ids(model, rel)[1]
    e = store.repo.objects.entry(cid)
    assert e is not None and e.codec == codec
    pack, offset, length = pack_of(store, cid)
    flip(pack, offset + length // 2)

    for s in (store, Store(store.path)):
        report = s.verify()
        assert not report.ok
        assert report.corrupt == [cid.hex()]
        assert report.broken_tags == ["a:v1"]  # b:v1 does not reach the chunk
        damaged = s.get("a:v1")
        with pytest.raises(IntegrityError), damaged.open(rel) as f:
            f.read()
        with pytest.raises(IntegrityError):
            damaged.path  # noqa: B018
        read_all(damaged, files["a"])  # the other files are fine, this one raises
        with s.get("b:v1").open("weights.bin") as f:
            assert f.read() == files["b"]["weights.bin"]
    assert list((store.path / "cache").iterdir()) == []  # no half-written folder left


@pytest.mark.parametrize("which", ["model", "tree", "file"])
def test_flipped_metadata_object_is_reported_and_raises(
    store: Store, tmp_path: Path, files: dict[str, dict[str, bytes]], which: str
) -> None:
    from modelvault.checkout import lookup

    _save(store, tmp_path, files)
    model = store.get("a:v1")
    oid = {
        "model": bytes.fromhex(model.id),
        "tree": model.object.tree,
        "file": lookup(store.repo.objects, model.object.tree, "sub/config.json")[1],
    }[which]
    pack, offset, length = pack_of(store, oid)
    flip(pack, offset + length - 1)
    fresh = Store(store.path)
    report = fresh.verify()
    assert oid.hex() in report.corrupt
    assert report.broken_tags == ["a:v1"]
    with pytest.raises(IntegrityError):
        damaged = fresh.get("a:v1")
        damaged.info  # noqa: B018
        with damaged.open("sub/config.json") as f:
            f.read()


def test_bytes_all_over_a_pack_are_covered(store: Store, tmp_path: Path) -> None:
    """Flip every third byte of a small pack in turn (file header, record headers,
    payloads of every object type): verify always notices, reads never lie."""
    content = {"config.json": b'{"dim": 16}', "w.bin": bytes(range(256)) * 3, "x": b"xyz" * 9}
    root = tmp_path / "m"
    root.mkdir()
    for rel, data in content.items():
        (root / rel).write_bytes(data)
    store.save(root, "m:v1")
    [pack] = (store.path / "objects" / "packs").glob("*.pack")
    size = pack.stat().st_size
    assert size < 2 * KiB
    for offset in range(0, size, 3):
        copy = tmp_path / f"copy-{offset}"  # verify sets a damaged pack aside: one copy each
        shutil.copytree(store.path, copy)
        flip(copy / "objects" / "packs" / pack.name, offset)
        fresh = Store(copy)
        report = fresh.verify()
        assert not report.ok, f"a flipped byte at {offset} went unnoticed"
        assert report.set_aside == [pack.stem]
        for s in (fresh, Store(copy)):  # before and after the damaged pack was set aside
            with contextlib.suppress(IntegrityError):
                read_all(s.get("m:v1"), content)
        shutil.rmtree(copy)
    assert Store(store.path).verify().ok


def test_trailing_bytes_and_truncation_are_reported(
    store: Store, tmp_path: Path, files: dict[str, dict[str, bytes]]
) -> None:
    _save(store, tmp_path, files)
    pack, _, _ = pack_of(store, chunk_ids(store.get("b:v1"), "weights.bin")[0])
    pack.chmod(0o644)
    data = pack.read_bytes()
    pack.write_bytes(data + b"junk")
    report = Store(store.path).verify()
    assert not report.ok
    assert any(p.endswith(".pack") for p in report.damaged_files)
    # every object was sound: verify wrote the pack anew without the junk
    assert Store(store.path).verify().ok
    read_all(Store(store.path).get("b:v1"), files["b"])
    pack, _, _ = pack_of(Store(store.path), chunk_ids(store.get("b:v1"), "weights.bin")[0])
    data = pack.read_bytes()
    pack.chmod(0o644)
    pack.write_bytes(data[: len(data) - 100])
    fresh = Store(store.path)
    report = fresh.verify()
    assert not report.ok and report.corrupt
    assert "b:v1" in report.broken_tags
    assert report.set_aside == [pack.stem]  # its last object is lost: set aside
    for s in (fresh, Store(store.path)):
        read_all(s.get("b:v1"), files["b"])
        with pytest.raises(IntegrityError):
            s.get("b:v1").path  # noqa: B018
        again = s.verify()  # still reported until a healthy copy is pulled or imported
        assert (again.ok, again.corrupt, again.broken_tags) == (False, report.corrupt, ["b:v1"])


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_damaged_index_is_reported_not_fatal(
    store: Store, tmp_path: Path, files: dict[str, dict[str, bytes]], damage: str
) -> None:
    _save(store, tmp_path, files)
    pack, _, _ = pack_of(store, chunk_ids(store.get("a:v1"), "weights.bin")[0])
    idx = pack.with_suffix(".idx")
    if damage == "flip":
        flip(idx, idx.stat().st_size // 2)
    else:
        idx.chmod(0o644)
        idx.write_bytes(idx.read_bytes()[: 20 if damage == "truncate" else 0])
    fresh = Store(store.path)  # the store still opens
    with pytest.raises(IntegrityError, match=idx.stem), fresh.get("a:v1").open("weights.bin") as f:
        f.read()
    with pytest.raises(IntegrityError):
        fresh.gc()  # cannot tell what the damaged pack holds: frees nothing
    report = fresh.verify()
    assert not report.ok
    assert f"objects/packs/{idx.name}" in report.damaged_files
    assert "a:v1" in report.broken_tags
    # every record of the pack was sound: verify wrote the pack and its index anew
    assert (report.rebuilt, report.set_aside) == ([pack.stem], [])
    for s in (fresh, Store(store.path)):
        read_all(s.get("a:v1"), files["a"])
        with s.get("a:v1").open("weights.bin") as f:
            assert f.read() == files["a"]["weights.bin"]
        assert s.verify().ok


def test_damaged_ref_is_reported_with_a_clear_error(
    store: Store, tmp_path: Path, files: dict[str, dict[str, bytes]]
) -> None:
    _save(store, tmp_path, files)
    ref = store.path / "refs" / "a" / "v1"
    ref.chmod(0o644)
    ref.write_bytes(b'{"model": "not hex')
    fresh = Store(store.path)
    with pytest.raises(IntegrityError, match="a:v1") as exc:
        fresh.get("a:v1")
    assert "delete" in str(exc.value)
    report = fresh.verify()  # reports it rather than failing
    assert not report.ok
    assert report.broken_tags == ["a:v1"]
    assert "refs/a/v1" in report.damaged_files
    with pytest.raises(IntegrityError, match="a:v1"):
        fresh.gc()  # cannot tell what the damaged ref reaches
    with fresh.get("b:v1").open("weights.bin") as f:
        assert f.read() == files["b"]["weights.bin"]
    fresh.delete("a:v1")  # the way out the message names
    assert fresh.verify().ok
    with pytest.raises(NotFound):
        fresh.get("a:v1")
    assert fresh.gc() > 0
    assert fresh.verify().ok


def test_checkout_of_a_damaged_model_leaves_no_partial_folder(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"first file " * 1000)
    (src / "b.bin").write_bytes(np.random.default_rng(3).bytes(300_000))
    model = store.save(src, "m")
    path, offset, _ = pack_of(store, chunk_ids(model, "b.bin")[-1])
    flip(path, offset + 10)
    dest = tmp_path / "out"
    with pytest.raises(IntegrityError):
        store.checkout(model.tag, dest)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


@pytest.mark.parametrize(
    "remotes", [[1, 2], "origin", {"origin": 5}, {"origin": {}}, {"origin": {"url": 5}}]
)
def test_verify_reports_a_config_whose_remotes_are_damaged(
    store: Store, tmp_path: Path, files: dict[str, dict[str, bytes]], remotes: object
) -> None:
    import json

    _save(store, tmp_path, files)
    config = store.path / "config.json"
    config.write_text(json.dumps({"format": 1, "remotes": remotes}))
    report = Store(store.path).verify()
    assert not report.ok
    assert report.broken_tags == []
    assert "remotes" in report.damaged_files["config.json"]
    read_all(Store(store.path).get("a:v1"), files["a"])


@pytest.mark.parametrize(
    "doc", [b"{}", b'{"format": "1"}', b'{"format": null}', b"null", b"[]", b'{"form', b"\xff"]
)
def test_a_damaged_config_opens_for_reading_and_refuses_writes(
    store: Store, tmp_path: Path, files: dict[str, dict[str, bytes]], doc: bytes
) -> None:
    """Damage, not a newer store (no "upgrade"): the models read, verify names the file,
    and what needs the store's format says how to repair it."""
    import modelvault

    _save(store, tmp_path, {"a": files["a"]})
    (store.path / "config.json").write_bytes(doc)
    damaged = Store(store.path)
    read_all(damaged.get("a:v1"), files["a"])
    report = damaged.verify()
    assert not report.ok and report.broken_tags == []
    assert "is damaged" in report.damaged_files["config.json"]
    for write in (
        lambda: damaged.save(tmp_path / "a", "a:v2"),
        lambda: damaged.set_alias("a:v1", "prod"),
        lambda: damaged.gc(),
        lambda: modelvault.remotes.add("origin", "memory://x", store=damaged),
        lambda: modelvault.remotes.list(store=damaged),
    ):
        with pytest.raises(IntegrityError, match=r"config\.json is damaged") as exc:
            write()
        assert "upgrade" not in str(exc.value)
        assert '{"format": 4}' in str(exc.value) and "mv remote add" in str(exc.value)
    assert [str(m.tag) for m in damaged.list()] == ["a:v1"]
    assert (store.path / "config.json").read_bytes() == doc  # left for the user to repair
    (store.path / "config.json").write_bytes(b'{"format": 4}')  # the advised repair
    repaired = Store(store.path)
    repaired.save(tmp_path / "a", "a:v2")
    assert repaired.verify().ok


def test_a_store_of_a_newer_format_says_upgrade(store: Store) -> None:
    import modelvault

    (store.path / "config.json").write_bytes(b'{"format": 5}')
    with pytest.raises(modelvault.UnsupportedFormat, match="upgrade modelvault") as exc:
        Store(store.path)
    assert exc.value.found == 5 and str(store.path) in str(exc.value)
