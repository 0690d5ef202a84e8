"""Turning files and folders on disk into stored objects (the write path of save).

split a file into segments -> per segment, in a worker: CDC cut points from a little
before its start and the BLAKE3 id of each chunk (one compiled call per segment,
``chunking.cut_and_hash``), skip known ids, compress the new ones, append them to a pack
of the worker's own -> in order, on the drain thread: stitch the segments into the cut
points of a sequential cut (writing what it cuts itself). Cutting, hashing, compression
and writing release the GIL, so a thread pool (``cpu_threads``: a thread a CPU, 2 to 8)
keeps the cores busy. Files are memory-mapped one segment at a time, never read whole; at
most ``max(_WINDOW + 2, threads + 1)`` segments are mapped at once.

A file whose previous version is stored (``Parent``) is compared with that version's
chunks in the same segments: each segment compares the new bytes at the stored cut points
(byte for byte, or by hashing where the stored chunk is compressed) rather than cutting
and hashing them (``odb.known``).
"""

from __future__ import annotations

import itertools
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from modelvault._parallel import cpu_threads, ordered_pipeline
from modelvault.checkout import read_file_object, read_tree
from modelvault.core import codec
from modelvault.core.chunking import (
    BLOCK,
    LEAD,
    MAX_SIZE,
    MIN_SIZE,
    SEGMENT,
    Known,
    Piece,
    Resume,
    Source,
    Stitcher,
    Work,
    cut_piece,
    next_chunk,
    plan_segments,
)
from modelvault.core.hashing import ObjType
from modelvault.core.objects import (
    KIND_EXEC,
    KIND_FILE,
    KIND_TREE,
    FileObject,
    TreeEntry,
    TreeObject,
    check_entry_name,
)
from modelvault.errors import InvalidInput, ModelVaultError, PathNotFound
from modelvault.odb import PackDB, PackWriter
from modelvault.odb.known import KnownChunks, Match

_BATCH = 32  # chunks per add_prepared_many call
SMALL_FILE = MIN_SIZE  # smaller files are one chunk: stored without the chunk pipeline
_WINDOW = 3  # cut segments waiting to be appended, at least (more with more threads)
Progress = Callable[[int], None]  # called with a number of bytes just processed
Result = tuple[bytes, int, int, bytes | memoryview | None]  # id, codec, raw size, payload


class _Compressibility:
    """Per-file guess of whether compression pays, so weights skip most zstd probes.

    After ``_STREAK`` chunks in a row that did not compress, only every
    ``_EVERY``-th chunk is probed; one that compresses resets the guess. ``dtype`` is
    what is known of the file's bytes for the float codec (:func:`file_dtype`).
    """

    _STREAK = 8
    _EVERY = 16

    def __init__(self, dtype: str | None = None) -> None:
        self.streak = 0
        self.seen = 0
        self.dtype = dtype

    def should_try(self) -> bool:
        self.seen += 1
        return self.streak < self._STREAK or self.seen % self._EVERY == 0

    def record(self, compressed: bool) -> None:  # races between workers only blur the guess
        self.streak = 0 if compressed else self.streak + 1

    def block(self) -> int:
        """How many bytes of a segment to cut before working on their chunks
        (``cut_piece``): a block that stays in the CPU's cache while its chunks are
        encoded, or the whole segment in one call while they are not (kept raw: nothing
        to gain from the cache, only more calls). A new 1 GiB bf16 save: CPU 2.06-2.11 ->
        2.00-2.02 s; an fp32 one with blocks throughout: 0.718 -> 0.778 s."""
        return BLOCK if self.streak < self._STREAK else SEGMENT


class _ChunkPipeline:
    """Cuts segments of a file and hashes and encodes their chunks in worker threads;
    stitches the segments and appends their chunks in order on a thread of its own."""

    def __init__(self, writer: PackWriter, workers: int | None = None) -> None:
        self.writer = writer
        from concurrent.futures import ThreadPoolExecutor

        workers = cpu_threads() if workers is None else workers
        # results waiting to be appended: ordered_pipeline then has up to window + 2
        # segments under way, enough for every worker and one finished being appended
        self.window = max(_WINDOW, workers - 1)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="modelvault-chunk")
        self.recut = 0  # bytes the stitcher cut itself, where segments did not agree
        self._local = threading.local()  # .lane: the pack-writer lane of a pool thread
        self._lanes = itertools.count(1)  # lane 0 is the drain thread's

    def _work(self, data: memoryview, oid: bytes, guess: _Compressibility) -> Result:
        """The result of one chunk: no payload if the store holds it, else its payload
        encoded."""
        absent: set[bytes] | None = getattr(self._local, "absent", None)
        if self.writer.has(oid, False if absent is not None and oid in absent else None):
            return oid, 0, len(data), None
        return self._encode(oid, data, guess)

    @staticmethod
    def _encode(oid: bytes, data: bytes | memoryview, guess: _Compressibility) -> Result:
        how: codec.Codec = codec.Codec.RAW
        payload: bytes | memoryview = data
        if guess.should_try():
            how, payload = codec.encode(data, dtype=guess.dtype)
            guess.record(how != codec.Codec.RAW)
        return oid, int(how), len(data), payload

    def _screen(self, oids: list[bytes]) -> None:
        """``cut_piece``'s ``before_work``: look a segment's chunks up in the store at
        once (:meth:`PackWriter.stored_many`), so :meth:`_work` need not search the
        index for each new chunk; the answer holds for this thread's piece only."""
        stored = self.writer.stored_many(oids)
        self._local.absent = {oid for oid, s in zip(oids, stored, strict=True) if not s}

    def _write_ahead(self, piece: Piece[Result]) -> None:
        """Append the new chunks of ``piece`` to the pack now, from the pool thread that
        cut it (to a pack of the thread's own), rather than later from the drain thread,
        which would otherwise copy every byte into the page cache alone.

        A piece is cut from a little before its segment (``chunking.LEAD``), or starts
        at a stored cut point (``_resume``), so its chunks are almost always the file's;
        where the stitcher finds otherwise, the chunks written here that the file does not
        use stay unreferenced until ``gc``.
        """
        piece.results = self._write_results(piece.results)

    def _write_results(self, results: list[Result]) -> list[Result]:
        """Append the new chunks of ``results`` to this pool thread's pack lane; returns
        the results without payloads. (``cut_piece`` calls it after each block of a new
        file's segment, while the block's payloads are in the cache: a worker holds one
        block's payloads, not a segment's.)"""
        lane: int | None = getattr(self._local, "lane", None)
        if lane is None:
            lane = self._local.lane = next(self._lanes)
        if any(payload is not None for *_, payload in results):
            self.writer.add_prepared_many(
                (
                    (ObjType.CHUNK, oid, how, size, payload)
                    for oid, how, size, payload in results
                    if payload is not None
                ),
                lane,
                checked=True,  # _work found each missing with has()
            )
        return [(oid, how, size, None) for oid, how, size, _ in results]

    def store(
        self,
        source: Source,
        progress: Progress | None,
        known: KnownChunks | None = None,
        dtype: str | None = None,
    ) -> FileObject:
        """Store every chunk of ``source`` and return its file object.

        With ``known`` (the stored chunks of the file's previous version) each segment
        compares the new bytes with the stored chunks as it cuts (:meth:`_cut`): byte for
        byte where a chunk is kept raw (``memcmp``, without the GIL), by hashing the new
        bytes where it is stored compressed. ``dtype`` is handed to the float codec for
        every chunk (:func:`file_dtype`).
        """
        guess = _Compressibility(dtype)

        def work(data: memoryview, oid: bytes) -> Result:
            return self._work(data, oid, guess)

        out: list[tuple[bytes, int]] = []

        def append(results: list[Result]) -> None:
            for i in range(0, len(results), _BATCH):
                batch = results[i : i + _BATCH]
                self.writer.add_prepared_many(
                    (
                        (ObjType.CHUNK, oid, how, size, payload)
                        for oid, how, size, payload in batch
                        if payload is not None
                    ),
                    checked=True,  # _work found each missing with has()
                )
                out.extend((oid, size) for oid, _, size, _ in batch)
                if progress:
                    progress(sum(size for _, _, size, _ in batch))

        self._cut(source, known, work, append, guess.block)
        if sum(n for _, n in out) != source.size:  # cannot happen: every piece ends where it should
            raise AssertionError(f"stored {sum(n for _, n in out)} of {source.size} bytes")
        return FileObject(source.size, out)

    def _cut(
        self,
        source: Source,
        known: KnownChunks | None,
        work: Work[Result],
        append: Callable[[list[Result]], None],
        block: Callable[[], int],
    ) -> None:
        """Store ``source``: the pool cuts segments, hashes, encodes and writes their
        chunks (a chunker of its own per segment, :meth:`_write_ahead`; ``block`` says how
        much of a segment to cut at a time, :meth:`_Compressibility.block`); the drain
        thread stitches them into the sequential cut, writes the chunks it cut itself and
        lets each segment's mapping go. With ``known``, each segment compares its cut
        points with the stored chunks too."""
        stitcher = Stitcher(work)
        spans = plan_segments(source.size)
        shift = _Shift(source, known) if known is not None and len(spans) > 1 else None

        def cut(span: tuple[int, int], in_pool: bool = True) -> Piece[Result]:
            """A pool thread writes each block's new chunks to its own lane as it goes;
            the calling thread (a file of one segment) leaves them to ``append``."""
            lead = 0 if span[0] == 0 else LEAD  # (the file's start is a cut point)
            if known is None:
                try:
                    piece = cut_piece(
                        source,
                        span[0],
                        span[1],
                        work,
                        lead=lead,
                        before_work=self._screen,
                        block=block,
                        after_work=self._write_results if in_pool else None,
                    )
                finally:
                    self._local.absent = None
            else:
                with known.matching() as match:
                    found = _found(match)
                    piece = cut_piece(
                        source,
                        span[0],
                        span[1],
                        _learning(work, match),
                        found,
                        lead,
                        resume=None if shift is None else _resume(match, found, shift),
                    )
                if shift is not None:
                    shift.saw(piece)
            return piece

        def cut_and_write(span: tuple[int, int]) -> Piece[Result]:
            piece = cut(span)
            self._write_ahead(piece)
            return piece

        if len(spans) == 1:  # a small file: handing off to threads costs more than it saves
            append(stitcher.feed(cut(spans[0], in_pool=False)))
        else:
            ordered_pipeline(
                self.pool, cut_and_write, spans, lambda p: append(stitcher.feed(p)), self.window
            )
        self.recut += stitcher.recut
        if stitcher.pos != source.size:  # cannot happen: every piece ends where it should
            raise AssertionError(f"stitched {stitcher.pos} of {source.size} bytes")

    def close(self) -> None:
        self.pool.shutdown()


def _learning(work: Work[Result], match: Match) -> Work[Result]:
    """``work`` that also tells ``match`` of each chunk it hashed: a chunk of the stored
    file puts the pass back in step with it after an edit."""

    def work_and_learn(data: memoryview, oid: bytes) -> Result:
        match.learn(oid)
        return work(data, oid)

    return work_and_learn


_SHIFT_TRIAL = 8  # chunks cut from the start of a new version to find its shift


class _Shift:
    """How far the new file's bytes have moved from the stored file's, as last seen: the
    offset of a chunk of the new file that is a stored chunk, minus its stored offset.
    (A safetensors header that grew moves every tensor by the same amount; a tensor
    rewritten in place moves nothing.) Segments read it and tell it what they found."""

    def __init__(self, source: Source, known: KnownChunks) -> None:
        """Start from the last of the file's first few chunks that is a stored chunk;
        None if none is."""
        self.known = known
        self.value: int | None = None
        pos = 0
        view = source.view(0, min(source.size, (_SHIFT_TRIAL + 2) * MAX_SIZE))
        for _ in range(_SHIFT_TRIAL):
            if source.size - pos <= MAX_SIZE:
                break
            size, oid = next_chunk(view[pos:])
            i = known.index(oid)
            if i is not None:
                self.value = pos - known.offset(i)
            pos += size

    def saw(self, piece: Piece[Result]) -> None:
        """Learn the shift from the last chunk of ``piece``, if it is a stored chunk."""
        if piece.results:
            i = self.known.index(piece.results[-1][0])
            if i is not None:
                self.value = piece.ends[-1] - self.known.offset(i + 1)


def _resume(match: Match, found: Known[Result], shift: _Shift) -> Resume[Result]:
    """``cut_piece``'s ``resume``: a segment of a new version starts at the first stored
    cut point in it, moved by the shift last seen (:class:`_Shift`), where the new bytes
    repeat the stored chunks from there, instead of cutting ``LEAD`` bytes before it to
    find a cut point (a 1 GiB file: 64 MiB cut)."""
    known = match.known

    def resume(
        view: memoryview, base: int, start: int, stop: int
    ) -> tuple[int, list[int], list[Result]] | None:
        moved = shift.value
        if moved is None:
            return None
        spot = known.chunk_at(start - moved)
        if spot is None or spot[1] + moved >= stop:
            return None
        at = spot[1] + moved
        match.expect(spot[0])
        hit = found(view, at - base, stop - base)
        return None if hit is None else (at, *hit)

    return resume


def _found(match: Match) -> Known[Result]:
    """``cut_piece``'s ``known`` for one pass: recognised chunks are stored already."""
    known = match.known
    chunks = known.chunks

    def found(view: memoryview, at: int, limit: int) -> tuple[list[int], list[Result]] | None:
        hit = match.run(view, at, limit)
        if hit is None:
            return None
        i, k, _ = hit
        return known.ends(i, k), [(oid, 0, n, None) for oid, n in chunks[i:k]]

    return found


class Parent:
    """The newest stored version of the model being saved, whose files' chunks a new
    version mostly repeats (``odb.known``). Damage or a missing object only means no
    shortcut: the file is then cut and hashed as usual."""

    MIN_SIZE = 4 * MAX_SIZE  # smaller files are cut and hashed: comparing saves little

    def __init__(self, db: PackDB, tree: bytes) -> None:
        self._db = db
        self._tree = tree
        self._trees: dict[bytes, dict[str, TreeEntry]] = {}

    def known(self, rel: tuple[str, ...]) -> KnownChunks | None:
        """The chunks of the file at ``rel`` in the parent, if it has one that large."""
        oid, kind = self._tree, KIND_TREE
        try:
            for name in rel:
                if kind != KIND_TREE:
                    return None
                entry = self._entries(oid).get(name)
                if entry is None:
                    return None
                oid, kind = entry.oid, entry.kind
            if kind == KIND_TREE:
                return None
            fobj = read_file_object(self._db, oid)
        except ModelVaultError:
            return None
        if fobj.size < self.MIN_SIZE:
            return None
        known = KnownChunks(self._db, fobj.chunks)
        if not len(known):
            known.close()
            return None
        return known

    def _entries(self, oid: bytes) -> dict[str, TreeEntry]:
        if oid not in self._trees:
            self._trees[oid] = {e.name: e for e in read_tree(self._db, oid).entries}
        return self._trees[oid]


_SAFETENSORS_HEADER_MAX = 100 * 1024 * 1024  # the safetensors library's own limit
_DOMINANT = 0.99  # a dtype holding this share of a file's tensor bytes is the file's


def _is_safetensors(path: Path) -> bool:
    return path.suffix.lower() == ".safetensors"


def safetensors_dtypes(fd: int, size: int) -> list[tuple[int, int, str]] | None:
    """The byte ranges of a safetensors file's tensors, ``(start, end, dtype)`` in file
    offsets, sorted; None if the file does not start with a well-formed header (an
    8-byte little-endian length, then that much JSON naming each tensor's ``dtype`` and
    ``data_offsets`` from the end of the header). Only a hint: nothing here is trusted
    beyond choosing how to compress."""
    import json

    if size < 8:
        return None
    head = os.pread(fd, 8, 0)
    length = int.from_bytes(head, "little") if len(head) == 8 else 0
    if not 2 <= length <= min(_SAFETENSORS_HEADER_MAX, size - 8):
        return None
    try:
        header = json.loads(os.pread(fd, length, 8))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    base = 8 + length
    out: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            return None
        dtype, offsets = info.get("dtype"), info.get("data_offsets")
        if (
            not isinstance(dtype, str)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= size - base
        ):
            return None
        out.append((base + offsets[0], base + offsets[1], dtype))
    return sorted(out)


def file_dtype(fd: int, size: int) -> str | None:
    """The dtype of (nearly) all tensor bytes of a safetensors file, for the float codec:
    ``F32``, ``BF16`` and ``F16`` fix its planes, any other (``I8``, ``F8_E4M3``, ...)
    turns it off; None (mixed dtypes, or no readable header): every chunk is probed.

    The hint is per file: the chunk workers do not see where a chunk lies in its file,
    so a chunk of another dtype (a small ``I64`` tensor in an ``F32`` file) gets the
    file's; the codec's own estimate still refuses planes that do not pay there.
    """
    ranges = safetensors_dtypes(fd, size)
    if not ranges:
        return None
    by_dtype: dict[str, int] = {}
    for start, end, dtype in ranges:
        by_dtype[dtype] = by_dtype.get(dtype, 0) + end - start
    total = sum(by_dtype.values())
    dtype, most = max(by_dtype.items(), key=lambda kv: kv[1])
    return dtype if total and most >= total * _DOMINANT else None


def _stat_followed(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise PathNotFound(f"{path} is a dangling symbolic link") from None
        raise PathNotFound(f"{path} does not exist") from None
    except OSError as exc:  # ELOOP and friends
        raise InvalidInput(f"cannot follow {path}: {exc.strerror}") from exc


class Ingester:
    """Stores files and folders into one PackWriter; links are followed."""

    def __init__(
        self, writer: PackWriter, progress: Progress | None = None, parent: Parent | None = None
    ) -> None:
        self.writer = writer
        self.progress = progress
        self.parent = parent
        self._pipeline = _ChunkPipeline(writer)

    def close(self) -> None:
        self._pipeline.close()

    def store_file(
        self, path: Path, rel: tuple[str, ...] = (), st: os.stat_result | None = None
    ) -> tuple[bytes, int]:
        """Store one regular file (at ``rel`` in the model's tree; ``st``: its stat, if
        the caller has it); returns (file object id, size)."""
        st = _stat_followed(path) if st is None else st
        if st.st_size == 0:
            fobj = FileObject(0, [])
        elif st.st_size < SMALL_FILE:
            fobj = self._store_small(path, st.st_size)
        else:
            known = self.parent.known(rel) if self.parent and rel else None
            try:
                with open(path, "rb", buffering=0) as f:
                    source = Source(os.fstat(f.fileno()).st_size, fd=f.fileno())
                    dtype = file_dtype(f.fileno(), source.size) if _is_safetensors(path) else None
                    fobj = self._pipeline.store(source, self.progress, known, dtype)
            finally:
                if known is not None:
                    known.close()
        if fobj.size != st.st_size:
            raise InvalidInput(f"{path} changed size while it was being saved")
        return self.writer.add(ObjType.FILE, fobj.encode(), probe=False), fobj.size

    def _store_small(self, path: Path, size: int) -> FileObject:
        """A file smaller than the chunker's minimum is one chunk whatever its bytes (the
        same id the chunker would give it): read it in one call and store that chunk here,
        without the chunk pipeline's per-file set-up (a folder of 100,000 small files)."""
        with open(path, "rb", buffering=0) as f:
            data = f.read(size + 1)
        if len(data) != size:
            raise InvalidInput(f"{path} changed size while it was being saved")
        oid = self.writer.add(ObjType.CHUNK, data)
        if self.progress:
            self.progress(size)
        return FileObject(size, [(oid, size)])

    def store_source(self, source: Source, rel: tuple[str, ...] = ()) -> tuple[bytes, int]:
        """Store one file's bytes from ``source`` (at ``rel`` in the model's tree); returns
        (file object id, size). Its views may wait for bytes still being written (an
        archive member being unpacked: ``archive.bentoml.reader``)."""
        if source.size == 0:
            return self.writer.add(ObjType.FILE, FileObject(0, []).encode(), probe=False), 0
        known = self.parent.known(rel) if self.parent and rel else None
        try:
            fobj = self._pipeline.store(source, self.progress, known)
        finally:
            if known is not None:
                known.close()
        return self.writer.add(ObjType.FILE, fobj.encode(), probe=False), fobj.size

    def store_bytes(self, data: bytes) -> bytes:
        """Store an in-memory buffer as a file object; returns its id."""
        fobj = self._pipeline.store(Source.of_bytes(data), None) if data else FileObject(0, [])
        return self.writer.add(ObjType.FILE, fobj.encode(), probe=False)

    def store_tree(
        self,
        folder: Path,
        _ancestors: frozenset[tuple[int, int]] = frozenset(),
        _rel: tuple[str, ...] = (),
    ) -> tuple[bytes, int]:
        """Store a folder recursively; returns (tree id, total file bytes).

        Raises:
            PathNotFound: a dangling link inside.
            InvalidInput: a link loop, or an entry that is not a file or folder.
        """
        st = _stat_followed(folder)
        key = (st.st_dev, st.st_ino)
        if key in _ancestors:
            raise InvalidInput(f"{folder} is a symbolic link loop (it contains itself)")
        ancestors = _ancestors | {key}
        entries: list[TreeEntry] = []
        total = 0
        for name in sorted(os.listdir(folder)):
            path = folder / name
            try:
                check_entry_name(name)
            except ValueError as exc:
                raise InvalidInput(f"cannot store {path}: {exc}") from exc
            entry = self._store_entry(path, name, ancestors, (*_rel, name))
            entries.append(entry)
            total += entry.size
        return self.writer.add(ObjType.TREE, TreeObject(entries).encode(), probe=False), total

    def _store_entry(
        self, path: Path, name: str, ancestors: frozenset[tuple[int, int]], rel: tuple[str, ...]
    ) -> TreeEntry:
        st = _stat_followed(path)
        if stat.S_ISDIR(st.st_mode):
            oid, size = self.store_tree(path, ancestors, rel)
            return TreeEntry(name, KIND_TREE, oid, size)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInput(f"{path} is neither a regular file nor a folder")
        oid, size = self.store_file(path, rel, st)
        kind = KIND_EXEC if st.st_mode & stat.S_IXUSR else KIND_FILE
        return TreeEntry(name, kind, oid, size)

    def store_path(self, path: Path) -> tuple[bytes, int]:
        """Store a folder as the model's tree, or a single file as a one-entry tree."""
        st = _stat_followed(path)
        if stat.S_ISDIR(st.st_mode):
            return self.store_tree(path)
        entry = self._store_entry(path, path.name, frozenset(), (path.name,))
        return self.writer.add(ObjType.TREE, TreeObject([entry]).encode(), probe=False), entry.size
