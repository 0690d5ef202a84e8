"""Saving weights stores their chunks as float planes (codec 3), with the dtype taken from
the safetensors header where there is one (docs/format.md, section 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _helpers import safetensors as _safetensors

import modelvault
from modelvault.core.codec import Codec
from modelvault.core.hashing import ObjType
from modelvault.core.packfmt import decode_index

pytestmark = pytest.mark.usefixtures("float_codec")  # its writing is off by default


def _chunk_heads(store_dir: Path) -> list[tuple[int, bytes]]:
    """(codec, first 4 payload bytes) of every chunk in the store's packs."""
    out = []
    for idx in (store_dir / "objects" / "packs").glob("*.idx"):
        pack = idx.with_suffix(".pack").read_bytes()
        for e in decode_index(idx.stem, idx.read_bytes())[0].values():
            if e.kind == ObjType.CHUNK:
                out.append((e.codec, pack[e.offset : e.offset + 4]))
    return out


def _save(tmp_path: Path, name: str, data: bytes) -> list[tuple[int, bytes]]:
    src = tmp_path / "src"
    src.mkdir()
    (src / name).write_bytes(data)
    store = modelvault.Store(tmp_path / "store")
    model = store.save(src, "m:v1")
    assert (Path(model.path) / name).read_bytes() == data
    return _chunk_heads(tmp_path / "store")


def _weights(n: int) -> np.ndarray:
    return np.random.default_rng(5).normal(0, 0.02, n).astype("<f4")


def test_fp32_safetensors_chunks_are_float_planes(tmp_path: Path) -> None:
    heads = _save(tmp_path, "m.safetensors", _safetensors("F32", _weights(300_000).tobytes()))
    assert len(heads) > 3
    # width 4, rotation 1, Huffman planes (plane mask bit 7; docs/format.md, section 2)
    assert all(
        how == Codec.FLOAT and head[0] == 4 and head[2] & 0x80 and head[3] == 1
        for how, head in heads
    )


def test_fp16_safetensors_header_fixes_width_and_rotation(tmp_path: Path) -> None:
    data = _weights(300_000).astype("<f2").tobytes()
    heads = _save(tmp_path, "m.safetensors", _safetensors("F16", data))
    assert all(how == Codec.FLOAT and head[0] == 2 and head[3] == 1 for how, head in heads)


def test_an_int8_header_keeps_float_planes_off(tmp_path: Path) -> None:
    """The header says the bytes are not floats: no chunk is even probed for planes."""
    heads = _save(tmp_path, "m.safetensors", _safetensors("I8", _weights(300_000).tobytes()))
    assert heads and all(how != Codec.FLOAT for how, _ in heads)


def test_weights_without_a_header_are_found_by_the_probe(tmp_path: Path) -> None:
    data = b"\x00" + _weights(300_000).tobytes()  # a raw dump, elements at offset 1
    heads = _save(tmp_path, "weights.bin", data)
    assert heads and all(how == Codec.FLOAT and head[0] == 4 for how, head in heads)
