"""Checking stored payloads without keeping their raw bytes (``records.check_payloads``,
``verify_all``): what a pull, a push and a verify use. Runs of float chunks are decoded
into one buffer in one call and hashed in another; every object that is not sound must
still be named, whichever way it was checked."""

from __future__ import annotations

import numpy as np
import pytest

from modelvault.core import codec
from modelvault.core.codec import Codec
from modelvault.core.hashing import ObjType, object_id
from modelvault.core.packfmt import Entry
from modelvault.errors import IntegrityError
from modelvault.odb import records
from modelvault.odb.records import check_payloads, verify_all

Item = tuple[bytes, Entry, bytes]


def _bf16(n: int, seed: int) -> bytes:
    fp32 = np.random.default_rng(seed).normal(0, 0.02, n).astype("<f4").view("<u4")
    return bytes((((fp32 + 0x7FFF + ((fp32 >> 16) & 1)) >> 16).astype("<u2")).tobytes())


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
    floats = [_item(_bf16(20_000 + 500 * s, seed=s), Codec.FLOAT) for s in range(6)]
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
