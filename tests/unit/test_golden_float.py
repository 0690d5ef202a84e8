"""Stores written with the float codec (codec 3) stay readable, byte for byte, by every
later version (tests/golden/make_float_golden.py wrote each, once): ``store-float-v1``
holds zstd planes, ``store-float-v2`` Huffman planes of sub-format 1 and
``store-float-v3`` of sub-format 2 (docs/format.md, section 2)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import modelvault
from modelvault.core.codec import Codec
from modelvault.core.hashing import ObjType
from modelvault.core.packfmt import decode_index

pytestmark = pytest.mark.usefixtures("float_codec")  # its writing is off by default

GOLDEN = Path(__file__).parent.parent / "golden"
VERSIONS = ["v1", "v2", "v3"]


def expected(version: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((GOLDEN / f"store-float-{version}.json").read_text())
    return data


@pytest.fixture(params=VERSIONS)
def float_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, modelvault.Store]:
    version: str = request.param
    dest = tmp_path / f"store-float-{version}"
    shutil.copytree(GOLDEN / f"store-float-{version}", dest)
    return version, modelvault.Store(dest)


@pytest.mark.parametrize(
    ("version", "huffman", "sub2"), [("v1", False, False), ("v2", True, False), ("v3", True, True)]
)
def test_golden_float_store_holds_float_chunks(
    version: str, huffman: bool, sub2: bool, tmp_path: Path
) -> None:
    """Each fixture exercises its form of codec 3: every weight chunk in it is stored so
    (plane mask bit 7 set: Huffman planes, bit 6 too: sub-format 2; clear: zstd planes)."""
    shutil.copytree(GOLDEN / f"store-float-{version}", tmp_path / "s")
    store = modelvault.Store(tmp_path / "s")
    chunks = []
    for idx in (GOLDEN / f"store-float-{version}" / "objects" / "packs").glob("*.idx"):
        entries = decode_index(idx.stem, idx.read_bytes())[0]
        chunks += [(oid, e) for oid, e in entries.items() if e.kind == ObjType.CHUNK]
    assert chunks and all(e.codec == Codec.FLOAT for _, e in chunks)
    for oid, _ in chunks:
        payload = store.repo.objects.read_stored(oid)[1]
        assert bool(payload[2] & 0x80) == huffman
        assert bool(payload[2] & 0x40) == sub2
    if sub2:  # the fixture holds planes 0 with mantissa bits (K > 0) and without
        ks = {store.repo.objects.read_stored(oid)[1][4] for oid, _ in chunks}
        assert 0 in ks and ks - {0}


def test_golden_float_reads_back_exactly(float_store: tuple[str, modelvault.Store]) -> None:
    version, store = float_store
    want = expected(version)
    model = store.get(str(want["tag"]))
    assert model.id == want["model_id"]
    root = Path(model.path)
    files = want["files"]
    sizes = want["sizes"]
    assert isinstance(files, dict) and isinstance(sizes, dict)
    for rel, digest in files.items():
        data = (root / rel).read_bytes()
        assert len(data) == sizes[rel]
        assert hashlib.sha256(data).hexdigest() == digest
        with model.open(rel) as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest


def test_golden_float_verifies(float_store: tuple[str, modelvault.Store]) -> None:
    assert float_store[1].verify().ok
