"""Checking stored payloads without keeping their raw bytes (``records.check_payloads``,
``verify_all``): what a pull, a push and a verify use. Runs of float chunks are decoded
into one buffer in one call and hashed in another; every object that is not sound must
still be named, whichever way it was checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _helpers import bf16_weights

from modelvault.core import codec, floats
from modelvault.core.codec import Codec
from modelvault.core.hashing import ObjType, object_id
from modelvault.core.packfmt import Entry
from modelvault.errors import IntegrityError
from modelvault.odb import records
from modelvault.odb.packs import PackDB
from modelvault.odb.records import check_payloads, verify_all

Item = tuple[bytes, Entry, bytes]


def _item(raw: bytes, how: Codec, kind: ObjType = ObjType.CHUNK) -> Item:
    if how == Codec.FLOAT:
        payload = codec.encode_float_huffman(raw, 2, -1, 1, 3)
    elif how == Codec.ZSTD:
        payload = codec.encode(raw, probe=False)[1]
        assert codec.encode(raw, probe=False)[0] == Codec.ZSTD
    else:
        payload = raw
    oid = object_id(kind, raw)
    return oid, Entry("p", 0, len(payload), len(raw), kind, how), bytes(payload)


def _items() -> list[Item]:
    """Float chunks in two runs (a raw chunk between them), and a zstd tree."""
    floats = [_item(bf16_weights(20_000 + 500 * s, seed=s), Codec.FLOAT) for s in range(6)]
    raw = _item(np.random.default_rng(9).bytes(30_000), Codec.RAW)
    tree = _item(b"tree " * 2_000, Codec.ZSTD, ObjType.TREE)
    return [*floats[:3], raw, *floats[3:], tree]


def _flip(item: Item, at: int = -9) -> Item:
    oid, e, payload = item
    damaged = bytearray(payload)
    damaged[at] ^= 0x01
    return oid, e, bytes(damaged)


def test_sound_objects_pass_and_each_damaged_one_is_named() -> None:
    items = _items()
    assert all(codec.decodes_in_batch(p) for _, e, p in items if e.codec == Codec.FLOAT)
    assert check_payloads(items) == []
    verify_all(items)
    bad = list(items)
    bad[1] = _flip(bad[1])  # a float chunk in the middle of a run
    bad[5] = bad[4][0], bad[5][1], bad[5][2]  # a float chunk under another's id
    bad[3] = _flip(bad[3])  # the raw chunk
    bad[7] = _flip(bad[7], 20)  # the zstd tree
    assert check_payloads(bad) == [1, 3, 5, 7]
    with pytest.raises(IntegrityError):
        verify_all(bad)


def test_an_object_of_another_kind_or_truncated_is_named() -> None:
    items = _items()
    assert check_payloads(items, ObjType.CHUNK) == [7]  # the tree
    oid, e, payload = items[2]
    items[2] = oid, e, payload[:-1]  # shorter than its entry says
    assert check_payloads(items[:7], ObjType.CHUNK) == [2]
    with pytest.raises(IntegrityError, match=f"object {oid.hex()} is truncated"):
        verify_all(items[:7], ObjType.CHUNK)


@pytest.mark.parametrize("scratch", [None, 0, 1 << 20])
def test_runs_longer_than_the_buffer_are_split(
    monkeypatch: pytest.MonkeyPatch, scratch: int | None
) -> None:
    """Runs of at most CHECK_RUN raw bytes, in a caller's buffer too small or large
    enough, or in one of the call's own: the same answers."""
    monkeypatch.setattr(records, "CHECK_RUN", 90_000)  # two float chunks a run
    items = _items()
    buf = None if scratch is None else bytearray(scratch)
    assert check_payloads(items, None, buf) == []
    items[5] = _flip(items[5])
    assert check_payloads(items, None, buf) == [5]


def test_every_bad_raw_payload_is_named() -> None:
    """Two bad ones in a row, one at the end, and one of another kind than asked."""
    rng = np.random.default_rng(3)
    items = [_item(rng.bytes(5_000 + 100 * i), Codec.RAW) for i in range(8)]
    items.insert(4, _item(b"{}" * 100, Codec.RAW, ObjType.FILE))  # another kind between
    assert check_payloads(items) == []
    for i in (1, 2, 8):
        items[i] = _flip(items[i])
    assert check_payloads(items) == [1, 2, 8]
    assert check_payloads(items, ObjType.CHUNK) == [1, 2, 4, 8]  # the file: not a chunk
    with pytest.raises(IntegrityError, match=f"object {items[1][0].hex()} does not match"):
        verify_all(items)


def test_float_chunks_go_through_the_batch_in_runs_of_one_kind_and_bounded_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch decoder is what checks the float chunks (it is called, with every one
    of them), each call within CHECK_RUN raw bytes and of one kind of object."""
    monkeypatch.setattr(records, "CHECK_RUN", 90_000)
    calls: list[list[int]] = []
    real = codec.decode_float_batch

    def seen(payloads: list[bytes], raw_lens: list[int], into: memoryview) -> object:
        calls.append(list(raw_lens))
        return real(payloads, raw_lens, into)

    monkeypatch.setattr(codec, "decode_float_batch", seen)
    items = _items()
    flt = [e.raw_len for _, e, _ in items if e.codec == Codec.FLOAT]
    items.insert(2, _item(bf16_weights(20_000, seed=30), Codec.FLOAT, ObjType.FILE))  # a float file
    assert check_payloads(items) == []
    assert sorted(n for call in calls for n in call) == sorted([*flt, 40_000])
    assert all(sum(call) <= 90_000 for call in calls)
    assert [40_000] in calls  # the file's alone: another kind breaks the run


def test_float_payloads_the_batch_does_not_take_or_that_lie_about_their_length() -> None:
    """A codec-3 payload in its zstd form is checked on its own; a float chunk whose
    index gives another raw length is named, whether its header says so or not."""
    raw = bf16_weights(30_000, seed=11)
    zstd_form = codec.encode_float(raw, 2, 0, 1, 1)
    assert not codec.decodes_in_batch(zstd_form)
    item = (object_id(ObjType.CHUNK, raw), Entry("p", 0, len(zstd_form), len(raw), 1, 3), zstd_form)
    items = _items()
    items.insert(1, item)
    assert check_payloads(items) == []
    items[1] = _flip(item)
    assert check_payloads(items) == [1]
    items = _items()
    oid, e, payload = items[1]
    items[1] = oid, e._replace(raw_len=e.raw_len - 2), payload  # one element fewer
    items[2] = items[2][0], items[2][1]._replace(raw_len=items[2][1].raw_len + 7), items[2][2]
    assert check_payloads(items) == [1, 2]


def test_read_many_restarts_its_runs_after_other_objects(tmp_path: Path) -> None:
    """read_many into a buffer: float, raw, float chunks, a float object of another kind,
    float chunks again: every object back as stored, each float one in its place."""
    raws = [bf16_weights(15_000 + 1000 * i, seed=40 + i) for i in range(6)]
    made = [_item(raws[0], Codec.FLOAT), _item(raws[1], Codec.RAW), _item(raws[2], Codec.FLOAT)]
    made += [_item(raws[3], Codec.FLOAT, ObjType.FILE), _item(raws[4], Codec.FLOAT)]
    made += [_item(raws[5], Codec.FLOAT)]
    db = PackDB(tmp_path / "objects")
    with db.writer() as w:
        w.add_prepared_many([(e.kind, oid, e.codec, e.raw_len, p) for oid, e, p in made])
    oids = [oid for oid, _, _ in made]
    buf = bytearray(sum(map(len, raws)))
    got = db.read_many(oids, None, memoryview(buf))
    assert [bytes(d) for d in got] == raws
    at = 0
    for (_, e, _), d, raw in zip(made, got, raws, strict=True):
        if e.codec == Codec.FLOAT:
            assert isinstance(d, memoryview) and d.obj is buf and buf[at : at + len(raw)] == raw
        at += len(raw)
    with pytest.raises(IntegrityError, match=f"object {oids[3].hex()} is a 2, expected a chunk"):
        db.read_many(oids, ObjType.CHUNK, memoryview(buf))


def test_without_the_compiled_codec_each_float_chunk_is_checked_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A build without ``_floatcodec`` (the pure-Python decoder): no batch, the same
    answers."""
    items = _items()
    monkeypatch.setattr(floats, "_fc", None)
    assert not codec.decodes_in_batch(items[0][2])
    assert check_payloads(items) == []
    items[4] = _flip(items[4])
    assert check_payloads(items) == [4]
