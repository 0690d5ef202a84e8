"""``.bentomodel`` archives: round trips, thin archives, idempotence and hostile input.

Hostile archives are built here by hand, byte by byte from docs/format.md (not with the
module's writer), so these tests also check that the code follows the written format.
Payloads are decoded by hand too (``decode_by_hand``), byte planes included.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import msgpack
import numpy as np
import pytest
import zstandard
from _helpers import archive_body, archive_checksum, archive_footer_at, resigned
from blake3 import blake3

import modelvault
from modelvault import archive
from modelvault.archive import reader
from modelvault.checkout import lookup, read_file_object
from modelvault.core import floats
from modelvault.core.codec import zstd_bound
from modelvault.core.hashing import ObjType
from modelvault.errors import ArchiveError, IntegrityError, ModelExists, NotFound, PathNotFound
from modelvault.repo import maintenance

CHUNK, FILE, TREE, MODEL = 1, 2, 3, 4
RAW, ZSTD, PLANES = 0, 1, 2
Record = tuple[int, int, int, bytes, bytes]  # type, codec, raw length, id, payload


# --- helpers ------------------------------------------------------------------------


def make_model_dir(root: Path, seed: int = 0, floats: int = 200_000) -> Path:
    """A small model folder: float weights (several chunks), text, a subfolder, an exec."""
    root.mkdir(parents=True)
    weights = np.random.default_rng(seed).standard_normal(floats).astype("<f4")
    (root / "model.bin").write_bytes(weights.tobytes())
    (root / "config.json").write_text('{"hidden": 64, "layers": 2}\n' * 200)
    (root / "sub").mkdir()
    (root / "sub" / "empty.txt").write_bytes(b"")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    return root


def change_weights(src: Path, dst: Path, fraction: float = 0.1) -> Path:
    """A copy of ``src`` whose weights differ in one contiguous ``fraction``."""
    make_model_dir(dst, floats=1)
    data = bytearray((src / "model.bin").read_bytes())
    n = int(len(data) * fraction)
    data[len(data) // 2 : len(data) // 2 + n] = os.urandom(n)
    (dst / "model.bin").write_bytes(bytes(data))
    return dst


def snapshot(path: Path) -> dict[str, bytes | None]:
    """Every file (content) and folder (None) under ``path``: the store's exact state."""
    return {
        str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(path.rglob("*"))
    }


def files_of(folder: str | Path) -> dict[str, bytes]:
    root = Path(folder)
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def corrupt_object(store: modelvault.Store, oid: bytes) -> None:
    """Flip one payload byte of a stored object in its pack file."""
    entry = store.repo.objects.entry(oid)
    assert entry is not None
    pack = store.repo.objects.pack_dir / f"{entry.pack}.pack"
    pack.chmod(0o644)
    with open(pack, "r+b") as f:
        f.seek(entry.offset)
        byte = f.read(1)
        f.seek(entry.offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def oid(kind: int, raw: bytes) -> bytes:
    return blake3(bytes([kind]) + raw).digest()


def planes(width: int, lanes: list[bytes], mask: int, tail: bytes = b"") -> bytes:
    """A byte-planes payload (codec 2) laid out as docs/format.md, section 2, says."""
    head = struct.pack("<BB", width, mask) + struct.pack(f"<{width}I", *map(len, lanes))
    return head + b"".join(lanes) + tail


def planes_of(raw: bytes, width: int = 4) -> bytes:
    """``raw`` as byte planes, every lane zstd'd: the simple way, not the module's encoder."""
    n = len(raw) // width
    lanes = [zstandard.ZstdCompressor().compress(raw[i : n * width : width]) for i in range(width)]
    return planes(width, lanes, (1 << width) - 1, raw[n * width :])


def decode_by_hand(how: int, payload: bytes, raw_len: int) -> bytes:
    """A record's raw bytes, decoded as docs/format.md says (trusted input only)."""
    unzstd = zstandard.ZstdDecompressor()
    if how == RAW:
        return payload
    if how == ZSTD:
        return unzstd.decompress(payload, max_output_size=raw_len)
    assert how == PLANES
    width, mask = payload[0], payload[1]
    lengths = struct.unpack_from(f"<{width}I", payload, 2)
    n = raw_len // width
    out = bytearray(raw_len)
    at = 2 + 4 * width
    for i, length in enumerate(lengths):
        lane = payload[at : at + length]
        out[i : n * width : width] = unzstd.decompress(lane) if mask >> i & 1 else lane
        at += length
    out[n * width :] = payload[at:]
    assert len(payload) == at + raw_len % width
    return bytes(out)


def archive_records(data: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """``(type, codec, raw length, stored length, id)`` of each record of an archive."""
    (length,) = struct.unpack_from("<I", data, 12)
    at, out = 16 + length, []
    while data[at] != 0:
        kind, how, raw_len, stored, ident = struct.unpack_from("<BBxxII32s", data, at)
        out.append((kind, how, raw_len, stored, ident))
        at += 44 + stored
    return out


def pack(doc: Any) -> bytes:
    return msgpack.packb(doc, use_bin_type=True)  # type: ignore[no-any-return]


def manifest(tag: str, model_id: bytes, base: tuple[str, bytes] | None = None) -> bytes:
    def ref(t: str, m: bytes) -> dict[str, Any]:
        return {"tag": t, "model": m}

    return pack({"tags": [ref(tag, model_id)], "base": ref(*base) if base else None})


def build(
    manifest_bytes: bytes,
    records: list[Record],
    *,
    version: int = 3,
    magic: bytes = b"MVAR\r\n\x1a\n",
    edit_index: Callable[[list[bytes]], list[bytes]] = lambda e: e,
    index_offset: int | None = None,
) -> bytes:
    """An archive laid out as docs/format.md says, checksum included."""
    out = bytearray(struct.pack("<8sHHI", magic, version, 0, len(manifest_bytes)))
    out += manifest_bytes
    entries: dict[bytes, bytes] = {}
    for kind, how, raw_len, ident, payload in records:
        header = struct.pack("<BBxxII32s", kind, how, raw_len, len(payload), ident)
        entries[ident] = struct.pack(
            "<32sBBxxQII", ident, kind, how, len(out) + 44, len(payload), raw_len
        )
        out += header + payload
    out += bytes(44)
    at = len(out)
    index = edit_index([entries[k] for k in sorted(entries)])
    out += struct.pack("<4sI", b"MVAI", len(index)) + b"".join(index)
    out += struct.pack("<QI4s", at if index_offset is None else index_offset, len(index), b"MVAE")
    return resigned(bytes(out))


def model_doc(tree_id: bytes, size: int, name: str = "evil", version: str = "v1") -> bytes:
    return pack(
        {
            "name": name,
            "version": version,
            "module": "",
            "labels": {},
            "metadata": {},
            "options": {},
            "signatures": {},
            "context": {},
            "api_version": "v1",
            "creation_time": 1_700_000_000_000_000,
            "tree": tree_id,
            "size": size,
            "custom_objects": None,
        }
    )


def hostile_records(
    rows: list[list[Any]] | None = None,
    *,
    tree: bytes | None = None,
    name: str = "evil",
    chunk: bytes = b"hello",
    chunk_as: tuple[int, bytes] | None = None,
) -> tuple[bytes, list[Record]]:
    """``(model id, records)`` of a correctly hashed model whose tree has the given rows;
    its one chunk is stored raw, or as ``chunk_as`` = ``(codec, payload)``."""
    how, payload = chunk_as or (RAW, chunk)
    chunk_id = oid(CHUNK, chunk)
    file_raw = pack({"size": len(chunk), "chunks": [[chunk_id, len(chunk)]]})
    file_id = oid(FILE, file_raw)
    if tree is None:
        rows = rows if rows is not None else [["ok.txt", "file", file_id, len(chunk)]]
        tree = pack({"entries": [[n, k, file_id if i is None else i, s] for n, k, i, s in rows]})
    tree_id = oid(TREE, tree)
    model_raw = model_doc(tree_id, len(chunk), name)
    model_id = oid(MODEL, model_raw)
    return model_id, [
        (MODEL, 0, len(model_raw), model_id, model_raw),
        (TREE, 0, len(tree), tree_id, tree),
        (FILE, 0, len(file_raw), file_id, file_raw),
        (CHUNK, how, len(chunk), chunk_id, payload),
    ]


def hostile(
    rows: list[list[Any]] | None = None, *, tree: bytes | None = None, version: int = 3
) -> bytes:
    """A well-formed, correctly hashed archive of ``evil:v1`` whose tree has the given rows."""
    model_id, records = hostile_records(rows, tree=tree)
    return build(manifest("evil:v1", model_id), records, version=version)


FLOATS = np.random.default_rng(7).normal(0, 0.02, 1001).astype("<f4").tobytes()[:4003]
FLOAT_LANES = [FLOATS[i:4000:4] for i in range(4)]  # 1000 bytes each; tail b"..."


def with_planes(payload: bytes, *, version: int = 3, raw: bytes = FLOATS) -> bytes:
    """An archive of ``evil:v1`` whose one chunk is ``raw`` stored as codec 2 ``payload``."""
    model_id, records = hostile_records(
        [["w.bin", "file", None, len(raw)]], chunk=raw, chunk_as=(PLANES, payload)
    )
    return build(manifest("evil:v1", model_id), records, version=version)


def lane_bomb() -> bytes:
    """Byte planes whose zstd lane inflates far beyond the lane length (1000 bytes), yet
    whose payload is within the stored-length bound."""
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(32 << 20))
    return planes(4, [*FLOAT_LANES[:3], bomb], 0b1000, FLOATS[4000:])


# --- fixtures -----------------------------------------------------------------------


@pytest.fixture
def source(tmp_path: Path) -> modelvault.Store:
    return modelvault.Store(tmp_path / "source")


@pytest.fixture
def model(source: modelvault.Store, tmp_path: Path) -> modelvault.Model:
    """A model saved as a store without the float codec (codec 3) keeps its float chunks:
    raw, so that export encodes them for the trip (byte planes). tests/unit/
    test_float_archive.py covers codec-3 chunks, which travel as stored."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(floats, "_fc", None)
        return source.save(
            make_model_dir(tmp_path / "m0"),
            "clf:v1",
            labels={"team": "nlp"},
            metadata={"acc": 0.93},
            signatures={"predict": {"batchable": True, "batch_dim": (0, 1)}},
            custom_objects={"vocab": ["a", "b"]},
        )


@pytest.fixture
def target(store: modelvault.Store, model: modelvault.Model) -> modelvault.Store:
    """The empty store archives are imported into, with one unrelated model (locks, packs)."""
    store.save(make_model_dir(store.path.parent / "other", seed=9, floats=1000), "other:v1")
    return store


def assert_same_model(a: modelvault.Model, b: modelvault.Model) -> None:
    assert (a.tag, a.id, a.size) == (b.tag, b.id, b.size)
    assert a.info == b.info
    assert files_of(a.path) == files_of(b.path)
    assert os.access(Path(b.path) / "run.sh", os.X_OK)
    assert a.custom_objects == b.custom_objects


# --- round trips --------------------------------------------------------------------


def test_round_trip_through_a_local_folder(
    model: modelvault.Model, source: modelvault.Store, target: modelvault.Store, tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    path = source.export_model("clf:v1", str(tmp_path / "out"))
    assert path == str(tmp_path / "out" / "clf-v1.bentomodel")
    assert os.listdir(tmp_path / "out") == ["clf-v1.bentomodel"]  # no temporaries left
    imported = target.import_model(path)
    assert_same_model(model, imported)
    assert target.get("clf") == imported
    assert target.verify().ok


def test_local_files_are_mapped_and_read_from_where_they_stand(
    model: modelvault.Model,
    source: modelvault.Store,
    target: modelvault.Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A local archive is memory-mapped in windows (here small ones, so a payload often
    straddles two); an unbuffered file object is read from its own position."""
    monkeypatch.setattr(reader, "MAP_BLOCK", 100_003)
    data = Path(source.export_model("clf:v1", str(tmp_path / "a.bentomodel"))).read_bytes()
    (tmp_path / "b.bin").write_bytes(b"prefix" + data + b"!")
    before = target.list()
    with open(tmp_path / "b.bin", "rb", buffering=0) as f:
        f.seek(6)
        with pytest.raises(ArchiveError, match="trailing bytes"):  # the "!" is seen
            target.import_model(f)
    assert target.list() == before
    (tmp_path / "b.bin").write_bytes(b"prefix" + data)
    with open(tmp_path / "b.bin", "rb", buffering=0) as f:
        f.seek(6)
        assert_same_model(model, target.import_model(f))
    assert target.verify().ok


def test_export_destinations(
    model: modelvault.Model, source: modelvault.Store, tmp_path: Path
) -> None:
    new_folder = str(tmp_path / "new" / "folder") + "/"
    assert source.export_model("clf", new_folder) == new_folder + "clf-v1.bentomodel"
    exact = tmp_path / "exact.bin"
    assert source.export_model("clf:v1", str(exact)) == str(exact)
    url = source.export_model("clf", f"file://{tmp_path}/")
    assert url == f"file://{tmp_path}/clf-v1.bentomodel"
    assert exact.read_bytes() == Path(new_folder, "clf-v1.bentomodel").read_bytes()


@pytest.mark.parametrize("dest", ["memory://mv-archive-test/", "memory://mv-archive-test/x.bm"])
def test_round_trip_through_memory_urls(
    model: modelvault.Model, source: modelvault.Store, target: modelvault.Store, dest: str
) -> None:
    url = source.export_model("clf:v1", dest)
    fs = fsspec.filesystem("memory")
    try:
        assert url.startswith("memory://") and fs.exists(url)
        assert [p for p in fs.ls("/mv-archive-test", detail=False) if ".tmp-" in p] == []
        assert_same_model(model, target.import_model(url))
        with fs.open(url, "rb") as f:  # a binary file object works too
            assert target.import_model(f) == model
    finally:
        fs.rm("/mv-archive-test", recursive=True)


def test_export_and_import_report_progress_that_adds_up_to_the_archive(
    source: modelvault.Store, target: modelvault.Store, tmp_path: Path
) -> None:
    """``progress`` receives byte counts as the work goes (a 12 MiB model: several
    batches), written by export, read and verified by import; each adds up to the
    archive's size exactly."""
    source.save(make_model_dir(tmp_path / "big", floats=3 << 20), "big:v1")
    written: list[int] = []
    path = Path(
        source.export_model("big:v1", str(tmp_path / "a.bentomodel"), progress=written.append)
    )
    read: list[int] = []
    target.import_model(path, progress=read.append)
    size = path.stat().st_size
    assert sum(written) == size and sum(read) == size
    assert len(written) > 2 and len(read) > 2 and min(written + read) > 0
    assert read[-1] < 64 * 1024  # the last report is the index and footer, after the records


def test_the_archive_is_deterministic_and_holds_each_object_once(
    model: modelvault.Model, source: modelvault.Store, tmp_path: Path
) -> None:
    a = Path(source.export_model("clf:v1", str(tmp_path / "a.bentomodel"))).read_bytes()
    b = Path(source.export_model("clf:v1", str(tmp_path / "b.bentomodel"))).read_bytes()
    assert a == b
    reach, _ = maintenance.reachable(source.repo, [bytes.fromhex(model.id)])
    (count,) = struct.unpack_from("<I", a, archive_footer_at(a) + 8)
    assert count == len(reach)


def test_index_gives_random_access_to_every_object(
    model: modelvault.Model, source: modelvault.Store, tmp_path: Path
) -> None:
    data = Path(source.export_model("clf:v1", str(tmp_path / "a.bentomodel"))).read_bytes()
    at, count, magic = struct.unpack_from("<QI4s", data, archive_footer_at(data))
    assert magic == b"MVAE" and data[at : at + 4] == b"MVAI"
    for i in range(count):
        ident, kind, how, off, stored, raw = struct.unpack_from(
            "<32sBBxxQII", data, at + 8 + 52 * i
        )
        assert oid(kind, decode_by_hand(how, data[off : off + stored], raw)) == ident


def test_float_chunks_travel_as_byte_planes_and_are_stored_raw(
    model: modelvault.Model, source: modelvault.Store, target: modelvault.Store, tmp_path: Path
) -> None:
    data = Path(source.export_model("clf:v1", str(tmp_path / "a.bentomodel"))).read_bytes()
    assert struct.unpack_from("<H", data, 8) == (3,)  # format version 3
    records = archive_records(data)
    by_codec = {how: [r for r in records if r[1] == how] for how in (RAW, ZSTD, PLANES)}
    assert len(by_codec[PLANES]) >= 10 and all(r[0] == CHUNK for r in by_codec[PLANES])
    weights = (tmp_path / "m0" / "model.bin").stat().st_size
    planes_bytes = sum(r[3] for r in by_codec[PLANES])
    assert planes_bytes < 0.88 * sum(r[2] for r in by_codec[PLANES])  # zstd alone: ~0.92
    assert len(data) < 0.9 * weights
    target.import_model(str(tmp_path / "a.bentomodel"))
    for kind, how, raw_len, stored, ident in records:
        entry = target.repo.objects.entry(ident)
        assert entry is not None and entry.kind == kind
        if how == PLANES:  # decoded once to check the id, and stored as those raw bytes
            assert (entry.codec, entry.stored_len, entry.raw_len) == (RAW, raw_len, raw_len)
        else:  # stored as it arrived
            assert (entry.codec, entry.stored_len, entry.raw_len) == (how, stored, raw_len)
    assert target.verify().ok
    assert files_of(target.get("clf:v1").path) == files_of(model.path)


def test_a_hand_built_version_2_archive_with_byte_planes_imports(
    target: modelvault.Store,
) -> None:
    """Byte planes as docs/format.md lays them out, every width a reader accepts."""
    for width in range(2, 9):
        model_id, records = hostile_records(
            [["w.bin", "file", None, len(FLOATS)]],
            chunk=FLOATS,
            chunk_as=(PLANES, planes_of(FLOATS, width)),
            name=f"w{width}",
        )
        data = build(manifest(f"w{width}:v1", model_id), records, version=2)
        m = target.import_model(_write(target.path.parent / "p.bentomodel", data))
        assert files_of(m.path) == {"w.bin": FLOATS}
        entry = target.repo.objects.entry(oid(CHUNK, FLOATS))
        assert entry is not None and entry.codec == RAW
    assert target.verify().ok


def test_metadata_objects_may_travel_as_byte_planes_too(target: modelvault.Store) -> None:
    """Version 2 lets any record use codec 2; the importer stores each one raw."""
    model_id, records = hostile_records(name="meta")
    as_planes = [(k, PLANES, n, i, planes_of(raw, 2)) for k, _, n, i, raw in records]
    data = build(manifest("meta:v1", model_id), as_planes, version=2)
    m = target.import_model(_write(target.path.parent / "m.bentomodel", data))
    assert files_of(m.path) == {"ok.txt": b"hello"}
    for kind, _, raw_len, ident, _ in records:
        entry = target.repo.objects.entry(ident)
        assert entry is not None and (entry.kind, entry.codec, entry.raw_len) == (
            kind,
            RAW,
            raw_len,
        )
    assert target.verify().ok


# --- idempotence and conflicts --------------------------------------------------------


def test_reimport_changes_nothing(
    model: modelvault.Model, source: modelvault.Store, target: modelvault.Store, tmp_path: Path
) -> None:
    path = source.export_model("clf:v1", str(tmp_path))
    target.import_model(path)
    before = snapshot(target.path)
    assert target.import_model(path) == model
    assert snapshot(target.path) == before


def test_import_into_the_store_that_holds_the_tag_changes_nothing(
    model: modelvault.Model, source: modelvault.Store, tmp_path: Path
) -> None:
    path = source.export_model("clf:v1", str(tmp_path))
    before = snapshot(source.path)
    assert source.import_model(path) == model
    assert snapshot(source.path) == before


def test_a_different_model_under_an_existing_tag_raises_model_exists(
    source: modelvault.Store, model: modelvault.Model, target: modelvault.Store, tmp_path: Path
) -> None:
    target.save(make_model_dir(tmp_path / "impostor", seed=5), "clf:v1")
    path = source.export_model("clf:v1", str(tmp_path))
    before = snapshot(target.path)
    with pytest.raises(ModelExists, match="clf:v1"):
        target.import_model(path)
    assert snapshot(target.path) == before


# --- thin archives --------------------------------------------------------------------


def test_thin_archive_needs_its_base_and_names_it(
    model: modelvault.Model, source: modelvault.Store, target: modelvault.Store, tmp_path: Path
) -> None:
    big = make_model_dir(tmp_path / "big", floats=2_000_000)  # 8 MB: ~120 chunks
    source.save(big, "clf:v9")
    v2 = source.save(change_weights(big, tmp_path / "big2"), "clf:v2")
    full = Path(source.export_model("clf:v2", str(tmp_path / "full.bentomodel")))
    thin = Path(source.export_model("clf:v2", str(tmp_path / "thin.bentomodel"), base="clf:v9"))
    assert thin.stat().st_size < 0.2 * full.stat().st_size
    before = snapshot(target.path)
    with pytest.raises(ArchiveError, match=r"needs its base clf:v9 .*import clf:v9 first"):
        target.import_model(str(thin))
    assert snapshot(target.path) == before
    target.import_model(source.export_model("clf:v9", str(tmp_path / "base.bentomodel")))
    assert_same_model(v2, target.import_model(str(thin)))
    assert target.verify().ok


def test_thin_archive_against_itself_holds_no_object(
    model: modelvault.Model, source: modelvault.Store, target: modelvault.Store, tmp_path: Path
) -> None:
    path = source.export_model("clf:v1", str(tmp_path / "t.bentomodel"), base="clf:v1")
    data = Path(path).read_bytes()
    assert struct.unpack_from("<I", data, archive_footer_at(data) + 8)[0] == 0
    with pytest.raises(ArchiveError, match="needs its base clf:v1"):
        target.import_model(path)
    assert source.import_model(path) == model


# --- export failures ------------------------------------------------------------------


def test_export_of_unknown_tag_or_base_raises_not_found(
    model: modelvault.Model, source: modelvault.Store, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with pytest.raises(NotFound):
        source.export_model("nope:v1", f"{out}/")
    with pytest.raises(NotFound):
        source.export_model("clf:v1", f"{out}/", base="nope:v9")
    assert not out.exists()


@pytest.mark.parametrize("dest", ["local", "memory://mv-archive-fail/"])
def test_failed_export_leaves_no_file(
    model: modelvault.Model, source: modelvault.Store, tmp_path: Path, dest: str
) -> None:
    weights = lookup(source.repo.objects, model.object.tree, "model.bin")[1]
    last_chunk = read_file_object(source.repo.objects, weights).chunks[-1][0]
    corrupt_object(source, last_chunk)  # late in the archive: most of it is written by then
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IntegrityError):
        source.export_model("clf:v1", f"{out}/" if dest == "local" else dest)
    assert os.listdir(out) == []
    fs = fsspec.filesystem("memory")
    assert not fs.exists("/mv-archive-fail") or fs.ls("/mv-archive-fail") == []


# --- import failures and hostile archives -----------------------------------------------


def test_import_of_a_missing_file_raises_path_not_found(target: modelvault.Store) -> None:
    with pytest.raises(PathNotFound):
        target.import_model("/nonexistent/x.bentomodel")


class _Tripwire:
    """Unpickling it creates a file: proves whether anything was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_import_never_unpickles(target: modelvault.Store, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    src = modelvault.Store(tmp_path / "s")
    src.save(make_model_dir(tmp_path / "p"), "pk:v1", custom_objects={"t": _Tripwire(marker)})
    imported = target.import_model(src.export_model("pk:v1", str(tmp_path)))
    assert not marker.exists()
    imported.custom_objects  # noqa: B018 - the user asks: now it is unpickled
    assert marker.exists()


def test_a_hand_built_archive_imports(target: modelvault.Store) -> None:
    """The format as written in docs/format.md is what the importer reads."""
    import io

    m = target.import_model(io.BytesIO(hostile()))
    assert str(m.tag) == "evil:v1" and files_of(m.path) == {"ok.txt": b"hello"}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_each_format_version_is_checked_with_its_own_checksum(
    target: modelvault.Store, version: int
) -> None:
    """Versions 1 and 2 end in a 32-byte BLAKE3, version 3 in a 16-byte XXH3-128; an
    archive carrying the other version's checksum, or a damaged one, is refused."""
    import io

    import xxhash

    good = hostile(version=version)
    body = archive_body(good)
    assert len(good) - len(body) == (32 if version < 3 else 16)
    other = xxhash.xxh3_128(body).digest() if version < 3 else blake3(body).digest()
    before = snapshot(target.path)
    for bad, why in (
        (body + other, "truncated" if version < 3 else "checksum does not match"),
        (good[:-1] + bytes([good[-1] ^ 0x80]), "checksum does not match"),
    ):
        with pytest.raises(ArchiveError, match=why):
            target.import_model(io.BytesIO(bad))
        assert snapshot(target.path) == before
    assert str(target.import_model(io.BytesIO(good)).tag) == "evil:v1"


class _Dribble(io.RawIOBase):
    """A stream that hands out at most ``step`` bytes a read, like a slow pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._at, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._step, len(self._data) - self._at)
        b[:n] = self._data[self._at : self._at + n]
        self._at += n
        return n

    def read(self, size: int = -1) -> bytes:
        n = self._step if size < 0 else min(size, self._step)
        out = self._data[self._at : self._at + n]
        self._at += len(out)
        return out


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("step", [1, 7, 16, 4096])
def test_short_reads_that_split_the_header_still_hash_it(
    target: modelvault.Store, version: int, step: int
) -> None:
    """Bytes read before the header says which checksum to use are hashed too, so a
    stream that returns a few bytes a read (the header split across reads) imports: the
    checksum covers them only if they were kept for it."""
    good = hostile(version=version)
    assert str(target.import_model(_Dribble(good, step)).tag) == "evil:v1"  # type: ignore[arg-type]


def _rechecksum(data: bytes) -> bytes:
    return resigned(archive_body(data))


def _at(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def _index_at(data: bytes) -> int:
    return int(struct.unpack_from("<Q", data, archive_footer_at(data))[0])


GOOD = hostile()
FIRST_RECORD = 16 + struct.unpack_from("<I", GOOD, 12)[0]


def _bomb() -> bytes:
    """A chunk whose zstd payload inflates far beyond the raw length it declares."""
    payload = zstandard.ZstdCompressor().compress(bytes(64 << 20))
    fake = oid(CHUNK, b"x" * 100)
    return build(manifest("evil:v1", fake), [(CHUNK, 1, 100, fake, payload)])


HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty file": (lambda: b"", "truncated"),
    "wrong magic": (lambda: _at(GOOD, 0, b"XXAR"), "wrong magic"),
    "unknown version": (lambda: _at(GOOD, 8, b"\x04\x00"), "version 4 is unknown"),
    "version 0": (lambda: _at(GOOD, 8, b"\x00\x00"), "version 0 is unknown"),
    "unknown flags": (lambda: _at(GOOD, 10, b"\x01\x00"), "unknown flags"),
    "truncated in a payload": (lambda: GOOD[: FIRST_RECORD + 50], "truncated"),
    "truncated in the index": (lambda: GOOD[: _index_at(GOOD) + 20], "truncated"),
    "checksum cut off": (lambda: GOOD[:-1], "truncated"),
    "trailing bytes": (lambda: GOOD + b"\0", "trailing bytes"),
    "flipped payload byte": (
        lambda: _at(GOOD, FIRST_RECORD + 50, bytes([GOOD[FIRST_RECORD + 50] ^ 1])),
        "does not match its id",
    ),
    "flipped checksum byte": (lambda: GOOD[:-1] + bytes([GOOD[-1] ^ 1]), "checksum"),
    "huge manifest length": (lambda: _at(GOOD, 12, b"\xff\xff\xff\x7f"), "manifest declares"),
    "index offset outside the file": (
        lambda: _rechecksum(_at(GOOD, archive_footer_at(GOOD), struct.pack("<Q", 1 << 40))),
        "footer puts the index at",
    ),
    "index entry pointing outside the file": (
        lambda: _rechecksum(
            _at(GOOD, _index_at(GOOD) + 8 + 36, struct.pack("<Q", 1 << 40))  # first offset
        ),
        "does not match its record",
    ),
    "index entry missing": (
        lambda: build(
            manifest("evil:v1", bytes(32)),
            [(CHUNK, 0, 1, oid(CHUNK, b"a"), b"a")],
            edit_index=lambda e: [],
        ),
        "index lists 0 objects",
    ),
    "declared raw size far beyond a chunk": (
        lambda: build(manifest("evil:v1", bytes(32)), [(CHUNK, 1, 1 << 31, bytes(32), b"x")]),
        "declares 2147483648 raw bytes",
    ),
    "stored size far beyond the raw size": (
        lambda: build(manifest("evil:v1", bytes(32)), [(CHUNK, 0, 10, bytes(32), b"x" * 100)]),
        "declares 100 stored bytes",
    ),
    "decompression bomb": (_bomb, "object"),
    "wrong id": (
        lambda: build(manifest("evil:v1", bytes(32)), [(CHUNK, 0, 1, bytes(32), b"a")]),
        "does not match its id",
    ),
    "unknown object type": (
        lambda: build(manifest("evil:v1", bytes(32)), [(9, 0, 1, bytes(32), b"a")]),
        "unknown type 9",
    ),
    "duplicate object": (
        lambda: build(
            manifest("evil:v1", bytes(32)),
            [(CHUNK, 0, 1, oid(CHUNK, b"a"), b"a")] * 2,
        ),
        "appears twice",
    ),
    "bad manifest": (
        lambda: build(pack({"tags": "evil"}), []),
        "bad archive manifest",
    ),
    "manifest tag without version": (
        lambda: build(manifest("evil", bytes(32)), []),
        "has no version",
    ),
    "incomplete model": (
        lambda: build(manifest("evil:v1", oid(MODEL, b"m")), []),
        "archive is incomplete",
    ),
    "parent entry ../x": (lambda: hostile([["../x", "file", None, 5]]), "unsafe entry name"),
    "absolute /etc/x": (lambda: hostile([["/etc/x", "file", None, 5]]), "unsafe entry name"),
    "a/../../x": (lambda: hostile([["a/../../x", "file", None, 5]]), "unsafe entry name"),
    "name ..": (lambda: hostile([["..", "file", None, 5]]), "unsafe entry name"),
    "NUL in a name": (lambda: hostile([["a\0b", "file", None, 5]]), "unsafe entry name"),
    "backslash path": (lambda: hostile([["..\\x", "file", None, 5]]), "unsafe entry name"),
    "duplicate names": (
        lambda: hostile([["a", "file", None, 5], ["a", "file", None, 5]]),
        "duplicate entry names",
    ),
    "unsorted names": (
        lambda: hostile([["b", "file", None, 5], ["a", "file", None, 5]]),
        "out of order",
    ),
    "tree that is not msgpack": (lambda: hostile(tree=b"\xc1\xc1"), "not valid msgpack"),
    "entry kind not a file": (lambda: hostile([["a", "tree", None, 5]]), "wrong type"),
    "size that lies": (lambda: hostile([["a", "file", None, 6]]), "wrong size"),
    # byte planes (codec 2)
    "byte planes in a version-1 archive": (
        lambda: with_planes(planes_of(FLOATS), version=1),
        "uses codec 2 .planes., which archive format version 1 does not have",
    ),
    "byte planes beyond their stored bound": (
        lambda: with_planes(b"\x04" * 6000),
        "declares 6000 stored bytes for 4003 raw",
    ),
    "byte planes of width 9": (
        lambda: with_planes(b"\x09" + planes_of(FLOATS)[1:]),
        "width 9 is not in 2..8",
    ),
    "byte planes of width 1": (
        lambda: with_planes(b"\x01" + planes_of(FLOATS)[1:]),
        "width 1 is not in 2..8",
    ),
    "byte planes lane length mismatch": (
        lambda: with_planes(
            planes(4, [FLOAT_LANES[0][:-1], FLOAT_LANES[1] + b"x", *FLOAT_LANES[2:]], 0, b"...")
        ),
        "raw lane 0 is 999 bytes, expected 1000",
    ),
    "byte planes truncated lane": (
        lambda: with_planes(planes_of(FLOATS)[:-5]),
        "byte-planes payload is",
    ),
    "byte planes with trailing bytes": (
        lambda: with_planes(planes_of(FLOATS) + b"\0"),
        "byte-planes payload is",
    ),
    "byte planes lane that decodes to more": (
        lambda: with_planes(
            planes(
                4,
                [*FLOAT_LANES[:3], zstandard.ZstdCompressor().compress(FLOAT_LANES[3] + b"x")],
                0b1000,
                FLOATS[4000:],
            )
        ),
        "zstd lane 3 declares 1001 bytes, expected 1000",
    ),
    "byte planes lane that decodes to fewer": (
        lambda: with_planes(
            planes(
                4,
                [*FLOAT_LANES[:3], zstandard.ZstdCompressor().compress(FLOAT_LANES[3][:-1])],
                0b1000,
                FLOATS[4000:],
            )
        ),
        "zstd lane 3 declares 999 bytes, expected 1000",
    ),
    "byte planes lane bomb": (
        lambda: with_planes(lane_bomb()),
        "zstd lane 3 declares 33554432 bytes, expected 1000",
    ),
    "byte planes that decode to other bytes": (
        lambda: with_planes(
            planes(4, [FLOAT_LANES[1], FLOAT_LANES[0], *FLOAT_LANES[2:]], 0, FLOATS[4000:])
        ),
        "does not match its id",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_raises_archive_error_and_changes_nothing(
    case: str, target: modelvault.Store, tmp_path: Path
) -> None:
    make, message = HOSTILE[case]
    path = tmp_path / "hostile.bentomodel"
    path.write_bytes(make())
    before = snapshot(target.path)
    with pytest.raises(ArchiveError, match=message):
        target.import_model(str(path))
    assert snapshot(target.path) == before


def test_an_archive_with_an_unreached_object_is_refused(target: modelvault.Store) -> None:
    model_id, records = hostile_records()
    extra: Record = (CHUNK, 0, 3, oid(CHUNK, b"odd"), b"odd")
    bad = build(manifest("evil:v1", model_id), [*records, extra])
    before = snapshot(target.path)
    with pytest.raises(ArchiveError, match="does not reach"):
        target.import_model(_write(target.path.parent / "x.bentomodel", bad))
    assert snapshot(target.path) == before


def test_a_tag_that_does_not_match_its_model_object_is_refused(target: modelvault.Store) -> None:
    model_id, records = hostile_records(name="alien")
    bad = build(manifest("evil:v1", model_id), records)
    with pytest.raises(ArchiveError, match="archive tag evil:v1 holds the model alien:v1"):
        target.import_model(_write(target.path.parent / "x.bentomodel", bad))
    assert target.list(name="evil") == [] and target.list(name="alien") == []


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_limits_are_what_the_format_says() -> None:
    assert archive.MAX_RAW[ObjType.CHUNK] == 512 * 1024
    assert zstd_bound(0) >= 64 and zstd_bound(1 << 20) > (1 << 20)


# --- golden archives: every later version must still import them -----------------------

GOLDEN = Path(__file__).parent.parent / "golden"


def _golden_files(version: int, archive: int = 1) -> dict[str, bytes]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("golden", GOLDEN / "make_archive_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.golden_files(version, archive)  # type: ignore[no-any-return]


def _import_goldens(store: modelvault.Store, fmt: int, name: str) -> None:
    """Import the golden archives of format ``fmt`` (tags ``name:v1`` and ``name:v2``): the
    thin one is refused without its base and changes nothing; then both import, each with
    the tag, id, files and info the format pins."""
    import json

    ids = json.loads((GOLDEN / f"archive-v{fmt}.json").read_text())
    before = snapshot(store.path)
    with pytest.raises(ArchiveError, match=f"needs its base {name}:v1"):
        store.import_model(str(GOLDEN / f"archive-v{fmt}-thin.bentomodel"))
    assert snapshot(store.path) == before
    for version, file in (
        (1, f"archive-v{fmt}.bentomodel"),
        (2, f"archive-v{fmt}-thin.bentomodel"),
    ):
        model = store.import_model(GOLDEN / file)
        assert (str(model.tag), model.id) == (f"{name}:v{version}", ids[str(model.tag)])
        assert files_of(model.path) == _golden_files(version, archive=fmt)
        assert model.info.labels == {"stage": "golden"}
        assert model.info.signatures == {"predict": {"batchable": True, "batch_dim": 0}}


def test_golden_archives_of_format_1_import(target: modelvault.Store) -> None:
    _import_goldens(target, 1, "golden")
    assert target.verify().ok


@pytest.mark.parametrize(("fmt", "name"), [(2, "golden2"), (3, "golden3")])
def test_golden_archives_with_byte_planes_import(
    target: modelvault.Store, fmt: int, name: str
) -> None:
    """Formats 2 and 3 carry byte-planes records; they differ in the trailer checksum
    (BLAKE3, 32 bytes; XXH3-128 in canonical big-endian form, 16 bytes)."""
    files = (f"archive-v{fmt}.bentomodel", f"archive-v{fmt}-thin.bentomodel")
    for file in files:
        data = (GOLDEN / file).read_bytes()
        assert struct.unpack_from("<H", data, 8) == (fmt,)
        assert any(how == PLANES for _, how, _, _, _ in archive_records(data)), file
        body = archive_body(data)
        assert len(data) - len(body) == (32 if fmt == 2 else 16)
        assert data[len(body) :] == archive_checksum(fmt, body)
    _import_goldens(target, fmt, name)
    for file in files:
        for _, how, _, _, ident in archive_records((GOLDEN / file).read_bytes()):
            entry = target.repo.objects.entry(ident)
            assert entry is not None and entry.codec == (RAW if how == PLANES else how)
    assert target.verify().ok


def test_an_archive_of_a_newer_format_is_unsupported_format_and_archive_error(
    model: modelvault.Model, tmp_path: Path, store: modelvault.Store
) -> None:
    """The one error for a newer format (stores and remotes raise it too), still an
    ArchiveError as every unreadable archive is."""
    src = modelvault.Store(model.repo.path)
    path = Path(src.export_model(str(model.tag), str(tmp_path) + "/"))
    data = bytearray(path.read_bytes())
    data[8:10] = (9).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(modelvault.UnsupportedFormat, match="upgrade modelvault") as exc:
        store.import_model(str(path))
    assert isinstance(exc.value, ArchiveError) and exc.value.found == 9
