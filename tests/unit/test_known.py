"""Saving a new version compares its bytes with the chunks of the version before
(``odb.known``) instead of cutting and hashing them. The stored file objects must be
exactly those of cutting and hashing: same cuts, same ids, for any edit."""

from __future__ import annotations

import itertools
import random
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import modelvault
from modelvault import ingest
from modelvault.checkout import read_file_object
from modelvault.core import chunking
from modelvault.core.hashing import ObjType, object_id
from modelvault.core.objects import ModelObject, TreeObject
from modelvault.odb import PackDB
from modelvault.odb.known import KnownChunks, Match

MAX = chunking.MAX_SIZE


def _expected(data: bytes) -> list[tuple[bytes, int]]:
    return [(object_id(ObjType.CHUNK, c), len(c)) for c in chunking.chunk_bytes(data)]


def _file_chunks(store: modelvault.Store, tag: str, name: str) -> list[tuple[bytes, int]]:
    db = store.repo.objects
    model = ModelObject.decode(db.read(store.repo.refs.read(modelvault.Tag.from_str(tag)).model_id))
    tree = TreeObject.decode(db.read(model.tree, ObjType.TREE))
    (entry,) = [e for e in tree.entries if e.name == name]
    return list(read_file_object(db, entry.oid).chunks)


def _assert_as_cut(store: modelvault.Store, tag: str, name: str, data: bytes) -> None:
    """The file ``name`` of ``tag`` has exactly the chunks of cutting and hashing ``data``,
    and reads back as ``data``."""
    assert _file_chunks(store, tag, name) == _expected(data)
    assert (Path(store.get(tag).path) / name).read_bytes() == data


class _Counting:
    """Counts the bytes ``KnownChunks`` recognised during saves."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hits = 0
        real = ingest._found

        def found(match: object) -> object:
            inner = real(match)  # type: ignore[arg-type]

            def counted(view: memoryview, at: int, limit: int) -> object:
                hit = inner(view, at, limit)
                if hit is not None:
                    self.hits += hit[0][-1]
                return hit

            return counted

        monkeypatch.setattr(ingest, "_found", found)


def _blocks(rng: random.Random, n: int) -> bytes:
    """Weight-like bytes: random, with some runs of one value (cut at MAX_SIZE)."""
    out = bytearray(rng.randbytes(n))
    for _ in range(3):
        at, length = rng.randrange(n), rng.randrange(1, 2 * MAX)
        out[at : at + length] = bytes([rng.choice((0, 7))]) * len(out[at : at + length])
    return bytes(out)


def _edit(rng: random.Random, data: bytes, edits: int) -> bytes:
    out = bytearray(data)
    for _ in range(edits):
        at = rng.randrange(len(out) + 1)
        kind = rng.choice(("insert", "delete", "replace", "flip"))
        span = rng.randrange(1, 3 * 65536)
        if kind == "insert":
            out[at:at] = rng.randbytes(span)
        elif kind == "delete":
            del out[at : at + span]
        elif kind == "replace":
            out[at : at + span] = rng.randbytes(len(out[at : at + span]))
        elif at < len(out):
            out[at] ^= 1 << rng.randrange(8)
    return bytes(out)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32 - 1), edits=st.integers(0, 6))
def test_a_version_saved_by_comparing_has_the_chunks_of_cutting_and_hashing(
    tmp_path_factory: pytest.TempPathFactory, seed: int, edits: int
) -> None:
    tmp = tmp_path_factory.mktemp("known")
    rng = random.Random(seed)
    base = _blocks(rng, rng.randrange(5 * MAX, 9 * MAX))
    new = _edit(rng, base, edits)
    store = modelvault.Store(tmp / "store")
    for version, data in (("v1", base), ("v2", new)):
        folder = tmp / version
        folder.mkdir()
        (folder / "weights.bin").write_bytes(data)
        store.save(folder, f"m:{version}")
    _assert_as_cut(store, "m:v2", "weights.bin", new)


def test_an_unchanged_file_is_recognised_not_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(1)
    data = _blocks(rng, 12 * MAX)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(data)
    store = modelvault.Store(tmp_path / "store")
    store.save(folder, "m:v1")
    counting = _Counting(monkeypatch)
    store.save(folder, "m:v2")
    # every chunk but those within MAX_SIZE of the end is compared, not cut and hashed
    assert counting.hits >= len(data) - 2 * MAX
    assert _file_chunks(store, "m:v2", "weights.bin") == _expected(data)


def test_shifted_bytes_are_recognised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(2)
    data = rng.randbytes(16 * MAX)
    shifted = b"header grew" + data[: 8 * MAX] + rng.randbytes(70_000) + data[8 * MAX :]
    store = modelvault.Store(tmp_path / "store")
    for version, payload in (("v1", data), ("v2", shifted)):
        (tmp_path / version).mkdir()
        (tmp_path / version / "w.bin").write_bytes(payload)
    store.save(tmp_path / "v1", "m:v1")
    counting = _Counting(monkeypatch)
    store.save(tmp_path / "v2", "m:v2")
    assert counting.hits > 0.8 * len(data)
    assert _file_chunks(store, "m:v2", "w.bin") == _expected(shifted)


def test_another_name_or_path_is_not_compared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random.Random(3).randbytes(10 * MAX)
    store = modelvault.Store(tmp_path / "store")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "w.bin").write_bytes(data)
    store.save(tmp_path / "a", "m:v1")
    counting = _Counting(monkeypatch)
    store.save(tmp_path / "a", "other:v1")  # no version of "other" yet: nothing to compare
    (tmp_path / "a" / "w.bin").rename(tmp_path / "a" / "renamed.bin")
    store.save(tmp_path / "a", "m:v2")  # m:v1 has no renamed.bin
    assert counting.hits == 0
    assert _file_chunks(store, "m:v2", "renamed.bin") == _expected(data)


def test_a_damaged_stored_chunk_is_not_matched(tmp_path: Path) -> None:
    """A flipped byte in a stored chunk makes it differ: the bytes are cut and hashed, and
    the file object is still the true one (verify reports the damage)."""
    data = random.Random(4).randbytes(10 * MAX)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(data)
    store = modelvault.Store(tmp_path / "store")
    store.save(tmp_path / "m", "m:v1")
    first, _ = _file_chunks(store, "m:v1", "w.bin")[2]
    entry = store.repo.objects.entry(first)
    assert entry is not None
    pack = tmp_path / "store" / "objects" / "packs" / f"{entry.pack}.pack"
    pack.chmod(0o644)
    raw = bytearray(pack.read_bytes())
    raw[entry.offset + 1000] ^= 0xFF
    pack.write_bytes(bytes(raw))
    store2 = modelvault.Store(tmp_path / "store")
    known = KnownChunks(store2.repo.objects, _file_chunks(store2, "m:v1", "w.bin"))
    try:
        source = chunking.Source.of_bytes(data)
        chunks = _file_chunks(store2, "m:v1", "w.bin")
        view = source.view(0, len(data))
        with known.matching() as match:
            at = sum(n for _, n in chunks[:2])
            match.learn(chunks[1][0])  # in step: chunk 2 is the one tried next
            assert match(view, at) is None  # the damaged one
            match.learn(chunks[2][0])  # (cut and hashed instead)
            assert match(view, at + chunks[2][1]) == chunks[3]  # its neighbour
    finally:
        known.close()
    new = data + b"one more line"  # (a new file object: v1's sits in the cut-off part)
    (tmp_path / "m" / "w.bin").write_bytes(new)
    store2.save(tmp_path / "m", "m:v2")
    assert _file_chunks(store2, "m:v2", "w.bin") == _expected(new)
    assert not store2.verify().ok


def _boundaries(data: bytes) -> list[int]:
    ends, pos = [], 0
    for chunk in chunking.chunk_bytes(data):
        pos += len(chunk)
        ends.append(pos)
    return ends[:-1]


def _edits_at_chunk_boundaries(base: bytes) -> list[bytes]:
    """Edits where comparing is easiest to get wrong: right at a stored chunk's end (the
    byte after it decides its cut) and at the end of the file (where cuts follow other
    rules)."""
    rng = random.Random(5)
    out = []
    for b in _boundaries(base):
        out.append(base[:b] + rng.randbytes(3000) + base[b:])  # insert at a chunk end
        out.append(base[:b] + bytes([base[b] ^ 0x5A]) + base[b + 1 :])  # the byte after
        for k in (0, 1, 2, 5000, MAX // 2, MAX + 3):  # the file ends soon after a chunk
            out.append(base[: b + 1 + k])
    for extra in (1, 3000, MAX // 2, 3 * MAX):  # the file goes on past the old end
        out.append(base + rng.randbytes(extra))
    return out


def _cut_with(known: KnownChunks, data: bytes, step: int | None = None) -> list[int]:
    """The chunk ends of ``data`` cut in pieces of ``step`` bytes (default: one piece),
    one after the other as the follow pass of a save does, with ``known`` answering runs
    of chunks where it can (and told of every chunk cut and hashed)."""
    source = chunking.Source.of_bytes(data)
    ends: list[int] = []
    with known.matching() as match:

        def found(view: memoryview, at: int, limit: int) -> tuple[list[int], list[None]] | None:
            hit = match.run(view, at, limit)
            if hit is None:
                return None
            i, k, end = hit
            rel = known.ends(i, k)
            assert end - at == rel[-1]
            return rel, [None] * len(rel)

        def hashed(chunk: memoryview, oid: bytes) -> None:
            assert oid == object_id(ObjType.CHUNK, chunk)
            match.learn(oid)

        pos = 0
        while pos < len(data):
            stop = min(pos + (step or len(data)), len(data))
            ends += chunking.cut_piece(source, pos, stop, hashed, found).ends
            pos = ends[-1]
    return ends


def _comparable(known: KnownChunks, data: bytes, chunks: list[tuple[bytes, int]]) -> int:
    """How many of the stored chunks of ``data`` a pass over ``data`` itself recognises
    (kept raw, readable, cut vouched for, not within MAX_SIZE of the end)."""
    view = chunking.Source.of_bytes(data).view(0, len(data))
    hits, at = 0, 0
    with known.matching() as match:
        for oid, n in chunks:
            if match(view, at) == (oid, n):
                hits += 1
            else:
                match.learn(oid)  # as the save would, having cut and hashed it
            at += n
    return hits


def test_edits_at_chunk_boundaries_give_the_cuts_of_cutting(tmp_path: Path) -> None:
    base = _blocks(random.Random(6), 8 * MAX)
    store = modelvault.Store(tmp_path / "store")
    (tmp_path / "v0").mkdir()
    (tmp_path / "v0" / "w.bin").write_bytes(base)
    store.save(tmp_path / "v0", "m:v0")
    known = KnownChunks(store.repo.objects, _file_chunks(store, "m:v0", "w.bin"))
    try:
        chunks = _file_chunks(store, "m:v0", "w.bin")
        assert _comparable(known, base, chunks) > 0.5 * len(_boundaries(base))
        for i, new in enumerate(_edits_at_chunk_boundaries(base)):
            ends = list(itertools.accumulate(len(c) for c in chunking.chunk_bytes(new)))
            assert _cut_with(known, new) == ends, f"edit {i}"
            assert _cut_with(known, new, step=MAX + 12345) == ends, f"edit {i}, in steps"
    finally:
        known.close()


def test_a_saved_edit_at_a_chunk_boundary_has_the_chunks_of_cutting(tmp_path: Path) -> None:
    base = _blocks(random.Random(7), 8 * MAX)
    b = _boundaries(base)[4]
    store = modelvault.Store(tmp_path / "store")
    for version, data in (("v0", base), ("v1", base[:b] + b"x" + base[b:])):
        (tmp_path / version).mkdir()
        (tmp_path / version / "w.bin").write_bytes(data)
        store.save(tmp_path / version, f"m:{version}")
        assert _file_chunks(store, f"m:{version}", "w.bin") == _expected(data)


def test_a_truncated_parent_pack_is_not_read_past_its_end(tmp_path: Path) -> None:
    data = random.Random(8).randbytes(10 * MAX)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(data)
    store = modelvault.Store(tmp_path / "store")
    store.save(tmp_path / "m", "m:v1")
    chunks = _file_chunks(store, "m:v1", "w.bin")
    entry = store.repo.objects.entry(chunks[-3][0])
    assert entry is not None
    pack = tmp_path / "store" / "objects" / "packs" / f"{entry.pack}.pack"
    pack.chmod(0o644)
    with pack.open("r+b") as f:
        f.truncate(entry.offset + 100)  # cuts into a chunk the next save will look for
    store2 = modelvault.Store(tmp_path / "store")
    known = KnownChunks(store2.repo.objects, chunks)
    assert 0 < _comparable(known, data, chunks) < len(chunks) - 2  # cut-off chunks take no part
    known.close()
    new = data + b"one more line"  # (a new file object: v1's sits in the cut-off part)
    (tmp_path / "m" / "w.bin").write_bytes(new)
    store2.save(tmp_path / "m", "m:v2")
    assert _file_chunks(store2, "m:v2", "w.bin") == _expected(new)


def _save_pair(tmp_path: Path, old: bytes, new: bytes) -> modelvault.Store:
    store = modelvault.Store(tmp_path / "store")
    for version, data in (("v1", old), ("v2", new)):
        (tmp_path / version).mkdir()
        (tmp_path / version / "w.bin").write_bytes(data)
        store.save(tmp_path / version, f"m:{version}")
    return store


def test_a_replaced_file_is_cut_as_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file replaced, not edited, has nothing of the stored file: its segments find no
    stored chunk and cut and hash it as a new file; the chunks are those of cutting."""
    rng = random.Random(9)
    old, new = rng.randbytes(40 * MAX), rng.randbytes(40 * MAX)
    counting = _Counting(monkeypatch)
    store = _save_pair(tmp_path, old, new)
    assert counting.hits == 0
    _assert_as_cut(store, "m:v2", "w.bin", new)


def test_a_large_edit_among_raw_chunks_is_compared_in_parallel_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks kept raw are compared byte for byte (``memcmp``, the GIL let go), in the
    parallel segments of any file: a version with one large edit recognises all but the
    edit and a chunk or two around each segment's start, on more than one thread, and
    gets the chunks of cutting and hashing."""
    rng = random.Random(10)
    old = rng.randbytes(40 * MAX)
    new = old[: 12 * MAX] + rng.randbytes(9 * MAX) + old[21 * MAX :]
    counting = _Counting(monkeypatch)
    threads: set[str] = set()
    real_run = Match.run

    def run(self: Match, view: memoryview, at: int, limit: int) -> tuple[int, int, int] | None:
        threads.add(threading.current_thread().name)
        return real_run(self, view, at, limit)

    monkeypatch.setattr(Match, "run", run)
    store = _save_pair(tmp_path, old, new)
    segments = len(chunking.plan_segments(len(new)))
    assert counting.hits >= len(new) - 9 * MAX - 2 * MAX * (segments + 1)
    assert len(threads) > 1
    _assert_as_cut(store, "m:v2", "w.bin", new)


def test_a_run_takes_an_unedited_stretch_in_one_call_and_stops_before_an_edit(
    tmp_path: Path,
) -> None:
    rng = random.Random(11)
    data = rng.randbytes(12 * MAX)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(data)
    store = modelvault.Store(tmp_path / "store")
    store.save(tmp_path / "m", "m:v1")
    chunks = _file_chunks(store, "m:v1", "w.bin")
    starts = list(itertools.accumulate((n for _, n in chunks), initial=0))
    known = KnownChunks(store.repo.objects, chunks)
    edited = bytearray(data)
    edited[starts[7] + 100] ^= 1  # inside chunk 7, not its first byte
    try:
        with known.matching() as match:
            view = chunking.Source.of_bytes(data).view(0, len(data))
            assert match.run(view, starts[1], len(data)) is None  # not in step yet
            match.learn(chunks[0][0])
            i, k, end = match.run(view, starts[1], len(data)) or (0, 0, 0)
            # every chunk from 1 that starts more than MAX_SIZE before the end
            assert (i, end) == (1, starts[k])
            assert k == max(j for j, s in enumerate(starts) if s < len(data) - MAX) + 1
            match.learn(chunks[0][0])
            assert match.run(view, starts[1], starts[4]) == (1, 4, starts[4])  # the limit
        with known.matching() as match:
            view = chunking.Source.of_bytes(bytes(edited)).view(0, len(data))
            match.learn(chunks[0][0])
            assert match.run(view, starts[1], len(data)) == (1, 7, starts[7])
            assert match.run(view, starts[7], len(data)) is None  # out of step after it
    finally:
        known.close()


def _floats(seed: int, n: int) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).normal(0, 0.02, n // 4).astype(np.float32).tobytes()


@pytest.mark.usefixtures("float_codec")
def test_chunks_stored_by_the_float_codec_are_recognised_by_their_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Float weights are stored compressed (codec 3), so they cannot be compared byte for
    byte with the new file: the new bytes are hashed at the stored cuts instead, which
    runs without the GIL, so the file is compared in parallel segments, not followed on
    one thread; an edited version still gets exactly the chunks of cutting and hashing.
    Each segment cuts a chunk or two from a little before its start before it is in
    step with the stored chunks."""
    from modelvault.core.codec import Codec

    data = _floats(5, 12 * MAX)
    edited = data[: 6 * MAX] + _floats(6, 3 * 65536) + data[6 * MAX + 3 * 65536 :]
    store = modelvault.Store(tmp_path / "store")
    for version, payload in (("v1", data), ("v2", data), ("v3", edited)):
        (tmp_path / version).mkdir()
        (tmp_path / version / "w.bin").write_bytes(payload)
    store.save(tmp_path / "v1", "m:v1")
    stored = [store.repo.objects.entry(c) for c, _ in _file_chunks(store, "m:v1", "w.bin")]
    assert sum(e is not None and e.codec == Codec.FLOAT for e in stored) > len(stored) // 2
    counting = _Counting(monkeypatch)
    segments = len(chunking.plan_segments(len(data)))
    assert segments >= 3
    slack = 2 * MAX * (segments - 1)  # (the first segment starts in step: at the start)
    store.save(tmp_path / "v2", "m:v2")
    assert counting.hits >= len(data) - slack  # unchanged: recognised, not cut
    counting.hits = 0
    store.save(tmp_path / "v3", "m:v3")
    assert counting.hits >= len(edited) - 2 * MAX - slack  # all but the edit's chunks
    for version, payload in (("m:v2", data), ("m:v3", edited)):
        _assert_as_cut(store, version, "w.bin", payload)


@pytest.mark.usefixtures("float_codec")
def test_scattered_edits_among_compressed_chunks_give_the_chunks_of_cutting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs of chunks stored compressed are hashed in batches (``Match._hashed``) that
    stop at the first chunk that differs: a byte past an edit is never hashed by a batch.
    A version edited every MiB or so, in small and large edits and at a byte past a cut,
    still gets exactly the chunks of cutting and hashing, with most of it recognised; and
    each new chunk is stored with the codec that encoding it on its own picks, and reads
    back."""
    from modelvault.core import codec, hashing
    from modelvault.core.codec import Codec
    from modelvault.odb import known as known_mod

    data = _floats(7, 40 * MAX)
    edited = bytearray(data)
    rng = random.Random(3)
    at = 0
    for n in [1, 4, 65536, 3 * 65536, 2, 300_000, 8, 65536]:  # bytes overwritten each time
        at += rng.randrange(MAX, 4 * MAX)
        edited[at : at + n] = _floats(rng.randrange(1000), n + 3)[:n]
    store = modelvault.Store(tmp_path / "store")
    for version, payload in (("v1", data), ("v2", bytes(edited))):
        (tmp_path / version).mkdir()
        (tmp_path / version / "w.bin").write_bytes(payload)
    store.save(tmp_path / "v1", "m:v1")
    batches: list[tuple[int, int]] = []  # (chunks in the batch, chunks that matched)
    hashed = [0]  # bytes the batches hashed
    real_matching, real_ids = hashing.matching_ids, hashing._ids

    def counted(kind: ObjType, data: memoryview, ends: list[int], expect: list[bytes]) -> int:
        matched = real_matching(kind, data, ends, expect)
        batches.append((len(ends), matched))
        return matched

    def ids(kind: int, data: memoryview, ends: list[int], expect: bytes | None = None) -> bytes:
        got = real_ids(kind, data, ends, expect)
        hashed[0] += ends[len(got) // 32 - 1] if got else 0
        return got

    monkeypatch.setattr(known_mod, "matching_ids", counted)
    monkeypatch.setattr(hashing, "_ids", ids)
    counting = _Counting(monkeypatch)
    store.save(tmp_path / "v2", "m:v2")
    assert counting.hits >= len(edited) - 8 * 3 * MAX  # all but the edits' neighbourhoods
    short = [b for b in batches if b[1] < b[0]]
    assert len(short) >= 8 and max(n for n, _ in batches) >= 8  # the edits; long batches
    # what batches hashed: the chunks recognised, and one chunk for each edit at most
    assert hashed[0] <= counting.hits + len(short) * MAX
    assert _file_chunks(store, "m:v2", "w.bin") == _expected(bytes(edited))
    old = {c for c, _ in _file_chunks(store, "m:v1", "w.bin")}
    new = [c for c, _ in _file_chunks(store, "m:v2", "w.bin") if c not in old]
    assert len(new) >= 8  # the edits' chunks
    db = store.repo.objects
    for c in new:  # stored as encoding them then and there would have stored them
        how, _ = codec.encode(db.read(c, ObjType.CHUNK))
        assert db.entry(c).codec == how  # type: ignore[union-attr]
    assert any(db.entry(c).codec == Codec.FLOAT for c in new)  # type: ignore[union-attr]
    assert (Path(store.get("m:v2").path) / "w.bin").read_bytes() == bytes(edited)
    assert store.verify().ok


def _spy_on_lead_cuts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many bytes each segment of a compared file cut before its start to find a cut
    point (``cut_piece``'s lead), with segments of 4 * MAX bytes."""
    leads: list[int] = []
    real = chunking.cut_and_hash

    def cut_and_hash(view: memoryview, stop: int, skip: int = 0) -> object:
        if stop == skip > 0:  # (the lead: cut up to the segment's start, hash nothing)
            leads.append(stop)
        return real(view, stop, skip)

    monkeypatch.setattr(chunking, "cut_and_hash", cut_and_hash)
    monkeypatch.setattr(chunking, "SEGMENT", 4 * MAX)
    monkeypatch.setattr(chunking, "MIN_SEGMENT", 4 * MAX)
    return leads


@pytest.mark.usefixtures("float_codec")
@pytest.mark.parametrize("moved", [0, 1, 20_000])
def test_segments_of_a_moved_version_start_at_the_stored_cuts_without_a_lead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moved: int
) -> None:
    """A version whose bytes all moved by the same amount (a safetensors header that grew)
    or by none (a tensor rewritten in place): every segment but the first starts at the
    first stored cut point in it, moved, instead of cutting a lead of 2 * MAX bytes before
    it (``ingest._Shift``); the chunks are still exactly those of cutting and hashing."""
    data = _floats(8, 64 * MAX)
    edited = bytearray(data)
    edited[20 * MAX : 20 * MAX + 65536] = _floats(9, 65536)  # one tensor rewritten
    new = b"h" * moved + bytes(edited)
    leads = _spy_on_lead_cuts(monkeypatch)
    store = _save_pair(tmp_path, data, new)
    assert len(chunking.plan_segments(len(new))) >= 16
    assert len(leads) <= 2  # (v2; v1's segments cut and hashed in one call each) at most
    # the edited segment and the last (of 15 or more after the first)
    _assert_as_cut(store, "m:v2", "w.bin", new)


@pytest.mark.usefixtures("float_codec")
def test_a_version_moved_twice_learns_the_second_shift_from_its_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes inserted half way: the segments after it first guess the old shift, which no
    stored chunk confirms, and cut a lead; once a segment has found where the stored
    chunks went, the ones after it start at the stored cuts again."""
    data = _floats(10, 64 * MAX)
    new = b"h" * 300 + data[: 32 * MAX + 5] + b"i" * 4096 + data[32 * MAX + 5 :]
    leads = _spy_on_lead_cuts(monkeypatch)
    store = _save_pair(tmp_path, data, new)
    assert len(chunking.plan_segments(len(new))) >= 16
    assert 1 <= len(leads) <= 5  # v2: a few, around the insertion
    _assert_as_cut(store, "m:v2", "w.bin", new)


@pytest.mark.usefixtures("float_codec")
def test_repeated_chunks_that_mislead_the_shift_still_give_the_chunks_of_cutting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored chunk id that occurs more than once (runs of zeros, a tensor stored twice)
    names its first occurrence, so the shift a segment learns from it can be wrong and the
    next segment's guess lands on bytes that match elsewhere: only ever a guess, checked
    by the stitcher."""
    block = _floats(11, 6 * MAX)
    data = block + bytes(5 * MAX) + _floats(12, 6 * MAX) + block + bytes(7 * MAX) + block
    data += _floats(13, 64 * MAX - len(data))
    new = b"h" * 700 + data[: 40 * MAX] + _floats(14, 65536) + data[40 * MAX + 65536 :]
    _spy_on_lead_cuts(monkeypatch)
    store = _save_pair(tmp_path, data, new)
    _assert_as_cut(store, "m:v2", "w.bin", new)


def test_the_chunk_table_names_first_occurrences_and_offsets(tmp_path: Path) -> None:
    """``index`` names the first chunk with an id (a repeated tensor, runs of zeros),
    ``offset`` and ``chunk_at`` where chunks start in the stored file; a chunk the store
    does not hold (here: none is stored) is never offered as a match."""
    a, b, c = (bytes([k]) * 32 for k in (1, 2, 3))
    known = KnownChunks(PackDB(tmp_path / "objects"), [(a, 10), (b, 20), (a, 10), (b, 20)])
    try:
        assert (known.index(a), known.index(b), known.index(c)) == (0, 1, None)
        assert [known.offset(i) for i in range(5)] == [0, 10, 30, 40, 60]
        assert (known.chunk_at(0), known.chunk_at(11), known.chunk_at(60)) == (
            (0, 0),
            (2, 30),
            None,
        )
        assert len(known) == 4 and known._at == [None] * 5
    finally:
        known.close()
