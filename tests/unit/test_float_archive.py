"""Float-plane chunks (codec 3) travel into archives as stored and are stored so again on
import: an archive shrinks by the store's ratio, with no recompression on the way."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from _helpers import archive_footer_at

import modelvault
from modelvault.core.codec import Codec
from modelvault.core.hashing import ObjType

pytestmark = pytest.mark.usefixtures("float_codec")  # its writing is off by default


def _index(data: bytes) -> list[tuple[bytes, int, int, int, int]]:
    """``(id, type, codec, stored length, raw length)`` of every record of an archive."""
    at, count, _ = struct.unpack_from("<QI4s", data, archive_footer_at(data))
    rows = [struct.unpack_from("<32sBBxxQII", data, at + 8 + 52 * i) for i in range(count)]
    return [(oid, kind, how, stored, raw) for oid, kind, how, _, stored, raw in rows]


def test_float_chunks_travel_as_stored_and_are_stored_so_on_import(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    bits = np.random.default_rng(2).normal(0, 0.02, 400_000).astype("<f4").view("<u4")
    bf16 = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    (folder / "weights.bin").write_bytes(bf16.tobytes())
    source = modelvault.Store(tmp_path / "source")
    model = source.save(folder, "bf:v1")
    path = tmp_path / "a.bentomodel"
    data = Path(source.export_model("bf:v1", str(path))).read_bytes()
    records = _index(data)
    chunks = [r for r in records if r[1] == ObjType.CHUNK]
    assert chunks and all(how == Codec.FLOAT for _, _, how, _, _ in chunks)
    for oid, _, _, stored, _ in chunks:  # exactly the store's payload, not re-encoded
        entry = source.repo.objects.entry(oid)
        assert entry is not None and (entry.codec, entry.stored_len) == (Codec.FLOAT, stored)
    assert len(data) < 0.7 * len(bf16.tobytes())
    target = modelvault.Store(tmp_path / "target")
    imported = target.import_model(str(path))
    assert imported.id == model.id
    for oid, _, _, stored, _ in chunks:
        entry = target.repo.objects.entry(oid)
        assert entry is not None and (entry.codec, entry.stored_len) == (Codec.FLOAT, stored)
    assert (Path(imported.path) / "weights.bin").read_bytes() == bf16.tobytes()
    assert target.verify().ok
