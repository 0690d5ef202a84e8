"""Object encodings and codec: round trips and refusal of malformed input."""

from __future__ import annotations

import os

import msgpack
import pytest

from modelvault.core import codec
from modelvault.core.hashing import ObjType, object_id
from modelvault.core.objects import (
    FileObject,
    ModelObject,
    ObjectFormatError,
    TreeEntry,
    TreeObject,
)
from modelvault.errors import IntegrityError

OID = bytes(range(32))


def test_ids_cover_the_type() -> None:
    assert object_id(ObjType.CHUNK, b"x") != object_id(ObjType.FILE, b"x")
    assert len(object_id(ObjType.CHUNK, b"x")) == 32


def test_file_object_round_trip_and_size_check() -> None:
    f = FileObject(30, [(OID, 10), (OID, 20)])
    assert FileObject.decode(f.encode()) == f
    bad = msgpack.packb({"size": 31, "chunks": [[OID, 10], [OID, 20]]})
    with pytest.raises(ObjectFormatError):
        FileObject.decode(bad)


@pytest.mark.parametrize(
    "chunks",
    [
        {"a": 1},  # not a list
        [[OID, 10], [OID]],  # an entry of one field
        [[OID, 10, 1]],  # of three
        [[OID[:31], 10]],  # an id of 31 bytes
        [["x" * 32, 10]],  # a string for an id
        [[OID, 0]],  # an empty chunk
        [[OID, -5]],  # a negative length
        [[OID, True]],  # a bool for a length
        [[OID, 1.5]],  # a float
        [{"id": OID, "n": 10}],  # a map for an entry
        [OID],  # bytes for an entry
    ],
)
def test_file_object_refuses_malformed_chunk_lists(chunks: object) -> None:
    size = 10 if chunks != [[OID, -5]] else -5
    raw = msgpack.packb({"size": size, "chunks": chunks}, use_bin_type=True)
    with pytest.raises(ObjectFormatError):
        FileObject.decode(raw)
    with pytest.raises(ObjectFormatError):  # and with a size that matches whatever it sums
        FileObject.decode(msgpack.packb({"size": 0, "chunks": chunks}, use_bin_type=True))


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "/etc", "a\0b", "a\\b"])
def test_tree_refuses_unsafe_names(name: str) -> None:
    raw = msgpack.packb({"entries": [[name, "file", OID, 1]]})
    with pytest.raises(ObjectFormatError):
        TreeObject.decode(raw)


def test_tree_refuses_duplicates_and_sorts_on_encode() -> None:
    t = TreeObject([TreeEntry("b", "file", OID, 1), TreeEntry("a", "tree", OID, 2)])
    assert [e.name for e in TreeObject.decode(t.encode()).entries] == ["a", "b"]
    dup = msgpack.packb({"entries": [["a", "file", OID, 1], ["a", "file", OID, 1]]})
    with pytest.raises(ObjectFormatError):
        TreeObject.decode(dup)


def test_model_object_round_trip_keeps_tuple_batch_dim() -> None:
    m = ModelObject(
        name="n",
        version="v",
        module="m",
        tree=OID,
        size=3,
        creation_time=5,
        signatures={"predict": {"batchable": True, "batch_dim": (1, 0)}},
    )
    assert ModelObject.decode(m.encode()) == m


def test_codec_compresses_text_and_keeps_random_raw() -> None:
    text = b"config " * 20000
    how, payload = codec.encode(text)
    assert how == codec.Codec.ZSTD and len(payload) < len(text) // 10
    assert codec.decode(how, bytes(payload), len(text)) == text
    noise = os.urandom(100_000)
    how, payload = codec.encode(noise)
    assert how == codec.Codec.RAW and bytes(payload) == noise


def test_codec_refuses_bombs_and_garbage() -> None:
    how, payload = codec.encode(b"\0" * 1_000_000, probe=False)
    with pytest.raises(IntegrityError):
        codec.decode(how, bytes(payload), 1000)  # declared far smaller than the content
    with pytest.raises(IntegrityError):
        codec.decode(codec.Codec.ZSTD, b"not zstd", 10)
