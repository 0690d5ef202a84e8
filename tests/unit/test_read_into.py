"""Reading float-coded chunks into buffers the reader reuses (``hdecode``'s ``out``,
``PackDB.read_many``'s ``into``, the ring of ``checkout.write_file``): the same bytes as
decoding into fresh ones, and no batch's buffer reused before it is written."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from _helpers import bf16_weights, safetensors

import modelvault
from modelvault import _fsutil, checkout
from modelvault._floatcodec import hdecode, hdecode_many
from modelvault.core import codec
from modelvault.core.codec import Codec
from modelvault.core.hashing import ObjType, object_id
from modelvault.core.objects import KIND_TREE
from modelvault.core.packfmt import Entry
from modelvault.errors import IntegrityError
from modelvault.odb.reading import read_file_object, read_tree
from modelvault.odb.records import _decode_run


@pytest.fixture(autouse=True)
def default_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 safetensors chunks get the float codec (the default, whatever the
    environment of the test run)."""
    monkeypatch.setattr(codec, "FLOAT_WRITE", False)
    monkeypatch.setattr(codec, "FLOAT_HINTED", frozenset({"BF16"}))


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
    raw = bf16_weights(40_000) if width == 2 else np.random.default_rng(3).normal(0, 0.02, 20_000)
    raw = (raw if isinstance(raw, bytes) else raw.astype("<f4").tobytes())[: 80_000 - cut]
    payload = codec.encode_float_huffman(raw, width, skip, 1, tries)
    buf = bytearray(b"\xee" * (len(raw) + 20))
    assert hdecode(payload, len(raw), memoryview(buf)[7:]) is None
    assert buf[7 : 7 + len(raw)] == raw
    assert buf[:7] == b"\xee" * 7 and buf[7 + len(raw) :] == b"\xee" * 13  # nothing else
    assert hdecode(payload, len(raw)) == raw


def test_a_buffer_too_small_or_read_only_is_the_callers_error_not_damage() -> None:
    raw = bf16_weights(40_000)
    payload = codec.encode_float_huffman(raw, 2, -1, 1, 3)
    with pytest.raises(ValueError, match="fewer than raw_len"):
        hdecode(payload, len(raw), bytearray(len(raw) - 1))
    with pytest.raises(ValueError, match="fewer than raw_len") as caught:
        codec.decode(Codec.FLOAT, payload, len(raw), memoryview(bytearray(len(raw) - 1)))
    assert not isinstance(caught.value, IntegrityError)
    with pytest.raises((BufferError, TypeError)):
        hdecode(payload, len(raw), bytes(len(raw)))  # not writable


def _payloads() -> list[tuple[bytes, bytes]]:
    """(raw, Huffman-planes payload) pairs: bf16 and fp32 widths, bytes skipped, coded
    and raw planes, tails, and an object too short for a whole element."""
    fp32 = np.random.default_rng(5).normal(0, 0.02, 30_000).astype("<f4").tobytes()
    cases = [
        (bf16_weights(40_000), 2, -1, 3),
        (fp32[:99_997], 4, -1, 15),
        (bf16_weights(9_000, seed=2)[:17_999], 2, 1, 1),
        (fp32[:50_003], 4, 3, 1),
        (bf16_weights(30_000, seed=4), 2, 0, 0),
        (b"\x01\x02\x03", 4, 1, 15),
    ]
    return [(raw, codec.encode_float_huffman(raw, w, skip, 1, t)) for raw, w, skip, t in cases]


def test_hdecode_many_decodes_each_payload_end_to_end() -> None:
    """The same bytes as hdecode of each, one after another, and nothing written past
    them (guard bytes on both sides)."""
    pairs = _payloads()
    total = sum(len(raw) for raw, _ in pairs)
    buf = bytearray(b"\xee" * (total + 16))
    got = hdecode_many([p for _, p in pairs], [len(r) for r, _ in pairs], memoryview(buf)[8:])
    assert got is None
    assert buf[8 : 8 + total] == b"".join(raw for raw, _ in pairs)
    assert buf[:8] == b"\xee" * 8 and buf[8 + total :] == b"\xee" * 8
    assert [hdecode(p, len(r)) for r, p in pairs] == [r for r, _ in pairs]
    assert hdecode_many([], [], bytearray(0)) is None


@pytest.mark.parametrize("damage", ["header", "stream", "zstd form", "raw_len"])
def test_hdecode_many_names_the_first_payload_that_is_not_valid(damage: str) -> None:
    """``(i, what is wrong)`` for payload i, whether its header is invalid or its codes
    are; the payloads before it are decoded, and the message is the one hdecode gives."""
    pairs = _payloads()[:3]
    raw, payload = pairs[1]
    bad = bytearray(payload)
    raw_lens = [len(r) for r, _ in pairs]
    if damage == "header":
        bad[0] = 3  # width 3
    elif damage == "stream":
        bad[40:] = b"\xff" * (len(bad) - 40)  # codes that run past the stream
    elif damage == "zstd form":
        bad = bytearray(codec.encode_float(raw, 4, 0, 1, 15))  # no Huffman flag
    else:
        raw_lens[1] += 4  # the index says longer than the payload holds
    payloads = [pairs[0][1], bytes(bad), pairs[2][1]]
    buf = bytearray(sum(raw_lens))
    got = hdecode_many(payloads, raw_lens, buf)
    assert got is not None and got[0] == 1
    with pytest.raises(ValueError) as caught:
        hdecode(bytes(bad), raw_lens[1])
    assert got[1] == str(caught.value)
    assert buf[: len(pairs[0][0])] == pairs[0][0]


def test_hdecode_many_refuses_what_the_caller_got_wrong() -> None:
    pairs = _payloads()[:2]
    payloads, raw_lens = [p for _, p in pairs], [len(r) for r, _ in pairs]
    with pytest.raises(ValueError, match="fewer than the raw_lens' sum"):
        hdecode_many(payloads, raw_lens, bytearray(sum(raw_lens) - 1))
    with pytest.raises(ValueError, match="differ in length"):
        hdecode_many(payloads, raw_lens[:1], bytearray(sum(raw_lens)))
    with pytest.raises((BufferError, TypeError)):
        hdecode_many(payloads, raw_lens, bytes(sum(raw_lens)))  # not writable
    with pytest.raises(TypeError):
        hdecode_many([payloads[0], 7], raw_lens, bytearray(sum(raw_lens)))
    with pytest.raises(TypeError):
        hdecode_many(payloads, [raw_lens[0], "7"], bytearray(sum(raw_lens)))


def test_a_batch_names_the_chunk_whose_bytes_do_not_match_its_id() -> None:
    """A valid payload under another chunk's id (a pack record swapped): the chunks
    decode, and the one whose bytes hash to another id is named."""
    raws = [bf16_weights(20_000, seed=s) for s in (1, 2, 3)]
    oids = [object_id(ObjType.CHUNK, r) for r in raws]
    into = memoryview(bytearray(sum(map(len, raws))))
    out: list[bytes | memoryview] = [b""] * 3

    def run(payloads: list[bytes], kind: ObjType = ObjType.CHUNK) -> None:
        entries = [
            Entry("p", 0, len(p), len(r), ObjType.CHUNK, Codec.FLOAT)
            for r, p in zip(raws, payloads, strict=True)
        ]
        views = {i: memoryview(p) for i, p in enumerate(payloads)}
        _decode_run(oids, entries, views, kind, into, 0, [0, 1, 2], out)

    payloads = [codec.encode_float_huffman(r, 2, -1, 1, 3) for r in raws]
    with pytest.raises(IntegrityError, match=f"object {oids[2].hex()} does not match its id"):
        run([payloads[0], payloads[1], payloads[1]])  # chunk 1's bytes where 2's belong
    with pytest.raises(IntegrityError, match="expected a tree"):
        run(payloads, ObjType.TREE)
    run(payloads)
    assert [bytes(d) for d in out] == raws


def test_read_many_decodes_float_chunks_into_the_buffer(tmp_path: Path) -> None:
    model, chunks = _saved(tmp_path, safetensors("BF16", bf16_weights(400_000)))
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
    model, chunks = _saved(tmp_path, safetensors("BF16", bf16_weights(400_000)))
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
    at least twice; the writer is slowed so that the readers run as far ahead as the
    window lets them. A buffer handed out again before its batch was written would put
    another batch's bytes in the file."""
    data = safetensors("BF16", bf16_weights(1_500_000, seed=9))
    model, chunks = _saved(tmp_path, data)
    assert len(chunks) >= 4 * checkout._WINDOW
    monkeypatch.setattr(checkout, "_READ_BATCH", 2)
    real = _fsutil.write_all

    def slow(fd: int, datas: list[bytes | memoryview]) -> None:
        time.sleep(0.003)
        real(fd, datas)

    monkeypatch.setattr(_fsutil, "write_all", slow)
    assert (Path(model.path) / "w.safetensors").read_bytes() == data


def test_hdecode_many_refuses_a_negative_length_and_an_out_over_a_payload() -> None:
    pairs = _payloads()[:2]
    payloads, raw_lens = [p for _, p in pairs], [len(r) for r, _ in pairs]
    got = hdecode_many(payloads, [raw_lens[0], -4], bytearray(sum(raw_lens)))
    assert got is not None and got[0] == 1 and "skip more bytes" in got[1]
    shared = bytearray(payloads[0] + bytes(sum(raw_lens)))
    view = memoryview(shared)
    with pytest.raises(ValueError, match="overlaps"):  # the payload read, the out written
        hdecode_many([view[: len(payloads[0])], payloads[1]], raw_lens, view[10:])
    assert (
        hdecode_many([view[: len(payloads[0])], payloads[1]], raw_lens, view[len(payloads[0]) :])
        is None
    )
    assert bytes(view[len(payloads[0]) :]) == b"".join(r for r, _ in pairs)
