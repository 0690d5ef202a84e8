"""Reading float-coded chunks into buffers the reader reuses (``hdecode``'s ``out``,
``PackDB.read_many``'s ``into``, the ring of ``checkout.write_file``): the same bytes as
decoding into fresh ones, and no batch's buffer reused before it is written."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from test_float_ingest import _safetensors

import modelvault
from modelvault import _fsutil, checkout
from modelvault._floatcodec import hdecode
from modelvault.core import codec
from modelvault.core.codec import Codec
from modelvault.core.hashing import ObjType
from modelvault.core.objects import KIND_TREE
from modelvault.errors import IntegrityError
from modelvault.odb.reading import read_file_object, read_tree


@pytest.fixture(autouse=True)
def default_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 safetensors chunks get the float codec (the default, whatever the
    environment of the test run)."""
    monkeypatch.setattr(codec, "FLOAT_WRITE", False)
    monkeypatch.setattr(codec, "FLOAT_HINTED", frozenset({"BF16"}))


def _bf16(n: int, seed: int = 7) -> bytes:
    fp32 = np.random.default_rng(seed).normal(0, 0.02, n).astype("<f4").view("<u4")
    return bytes((((fp32 + 0x7FFF + ((fp32 >> 16) & 1)) >> 16).astype("<u2")).tobytes())


def _saved(tmp_path: Path, data: bytes) -> tuple[modelvault.Model, list[tuple[bytes, int]]]:
    """A model of one bf16 safetensors file ``w.safetensors`` and that file's chunks."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.safetensors").write_bytes(data)
    model = modelvault.Store(tmp_path / "store").save(src, "m:v1")
    db = model.repo.objects
    (entry,) = [e for e in read_tree(db, model.object.tree).entries if e.kind != KIND_TREE]
    return model, read_file_object(db, entry.oid).chunks


@pytest.mark.parametrize(
    ("width", "skip", "tries", "cut"),
    [(2, -1, 3, 0), (2, 1, 1, 1), (4, -1, 15, 0), (4, 3, 15, 3), (4, 2, 1, 1), (2, 0, 0, 0)],
)
def test_hdecode_writes_into_the_buffer_given(width: int, skip: int, tries: int, cut: int) -> None:
    """Into a slice of a larger buffer: the raw bytes there, and not a byte written on
    either side (bf16 and fp32 widths, bytes skipped, coded or raw planes, a tail)."""
    raw = _bf16(40_000) if width == 2 else np.random.default_rng(3).normal(0, 0.02, 20_000)
    raw = (raw if isinstance(raw, bytes) else raw.astype("<f4").tobytes())[: 80_000 - cut]
    payload = codec.encode_float_huffman(raw, width, skip, 1, tries)
    buf = bytearray(b"\xee" * (len(raw) + 20))
    assert hdecode(payload, len(raw), memoryview(buf)[7:]) is None
    assert buf[7 : 7 + len(raw)] == raw
    assert buf[:7] == b"\xee" * 7 and buf[7 + len(raw) :] == b"\xee" * 13  # nothing else
    assert hdecode(payload, len(raw)) == raw


def test_a_buffer_too_small_or_read_only_is_the_callers_error_not_damage() -> None:
    raw = _bf16(40_000)
    payload = codec.encode_float_huffman(raw, 2, -1, 1, 3)
    with pytest.raises(ValueError, match="fewer than raw_len"):
        hdecode(payload, len(raw), bytearray(len(raw) - 1))
    with pytest.raises(ValueError, match="fewer than raw_len") as caught:
        codec.decode(Codec.FLOAT, payload, len(raw), memoryview(bytearray(len(raw) - 1)))
    assert not isinstance(caught.value, IntegrityError)
    with pytest.raises((BufferError, TypeError)):
        hdecode(payload, len(raw), bytes(len(raw)))  # not writable


def test_read_many_decodes_float_chunks_into_the_buffer(tmp_path: Path) -> None:
    model, chunks = _saved(tmp_path, _safetensors("BF16", _bf16(400_000)))
    db = model.repo.objects
    ids = [cid for cid, _ in chunks]
    assert sum(db.entry(c).codec == Codec.FLOAT for c in ids) >= 3  # type: ignore[union-attr]
    fresh = db.read_many(ids, ObjType.CHUNK)
    buf = bytearray(sum(n for _, n in chunks) + 5)
    into = db.read_many(ids, ObjType.CHUNK, memoryview(buf))
    assert [bytes(d) for d in into] == [bytes(d) for d in fresh]
    at = 0
    for (cid, n), d in zip(chunks, into, strict=True):
        if db.entry(cid).codec == Codec.FLOAT:  # type: ignore[union-attr]
            assert isinstance(d, memoryview) and d.obj is buf  # where it was decoded
            assert buf[at : at + n] == d
        at += n
    # a buffer too small for the last chunks: those are decoded into fresh memory
    short = bytearray(sum(n for _, n in chunks[:-2]))
    assert [bytes(d) for d in db.read_many(ids, ObjType.CHUNK, memoryview(short))] == [
        bytes(d) for d in fresh
    ]
    # a buffer of another item size is written byte by byte all the same
    wide = memoryview(bytearray(len(buf) + len(buf) % 2)).cast("H")
    assert [bytes(d) for d in db.read_many(ids, ObjType.CHUNK, wide)] == [bytes(d) for d in fresh]


def test_a_damaged_float_chunk_read_into_a_buffer_is_reported(tmp_path: Path) -> None:
    model, chunks = _saved(tmp_path, _safetensors("BF16", _bf16(400_000)))
    db = model.repo.objects
    ids = [cid for cid, _ in chunks]
    victim = next(e for e in map(db.entry, ids) if e is not None and e.codec == Codec.FLOAT)
    pack = db.pack_dir / f"{victim.pack}.pack"
    data = bytearray(pack.read_bytes())
    data[victim.offset + victim.stored_len - 5] ^= 0x10  # a bit of its last stream
    os.chmod(pack, 0o644)
    pack.write_bytes(data)
    with pytest.raises(IntegrityError):
        db.read_many(ids, ObjType.CHUNK, memoryview(bytearray(sum(n for _, n in chunks))))


def test_model_path_reuses_its_buffers_only_once_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of two chunks, so the file's ~40 chunks go through the ring of buffers
    four times; the writer is slowed so that the readers run as far ahead as the window
    lets them. A buffer handed out again before its batch was written would put another
    batch's bytes in the file."""
    data = _safetensors("BF16", _bf16(1_500_000, seed=9))
    model, chunks = _saved(tmp_path, data)
    assert len(chunks) >= 20
    monkeypatch.setattr(checkout, "_READ_BATCH", 2)
    real = _fsutil.write_all

    def slow(fd: int, datas: list[bytes | memoryview]) -> None:
        time.sleep(0.003)
        real(fd, datas)

    monkeypatch.setattr(_fsutil, "write_all", slow)
    assert (Path(model.path) / "w.safetensors").read_bytes() == data
