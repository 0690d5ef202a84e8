"""A store written with the float codec (codec 3) stays readable, byte for byte, by every
later version (tests/golden/make_float_golden.py wrote it, once)."""

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
EXPECTED = json.loads((GOLDEN / "store-float-v1.json").read_text())


@pytest.fixture
def float_store(tmp_path: Path) -> modelvault.Store:
    dest = tmp_path / "store-float-v1"
    shutil.copytree(GOLDEN / "store-float-v1", dest)
    return modelvault.Store(dest)


def test_golden_float_store_holds_float_chunks() -> None:
    """The fixture exercises codec 3: every weight chunk in it is stored so."""
    codecs = []
    for idx in (GOLDEN / "store-float-v1" / "objects" / "packs").glob("*.idx"):
        entries = decode_index(idx.stem, idx.read_bytes())[0]
        codecs += [e.codec for e in entries.values() if e.kind == ObjType.CHUNK]
    assert codecs and all(c == Codec.FLOAT for c in codecs)


def test_golden_float_reads_back_exactly(float_store: modelvault.Store) -> None:
    model = float_store.get(EXPECTED["tag"])
    assert model.id == EXPECTED["model_id"]
    root = Path(model.path)
    for rel, digest in EXPECTED["files"].items():
        data = (root / rel).read_bytes()
        assert len(data) == EXPECTED["sizes"][rel]
        assert hashlib.sha256(data).hexdigest() == digest
        with model.open(rel) as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest


def test_golden_float_verifies(float_store: modelvault.Store) -> None:
    assert float_store.verify().ok
