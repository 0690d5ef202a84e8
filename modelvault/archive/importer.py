"""Import: an archive staged into packs of the repository, its model's closure checked,
and only then the packs published and the tag created.

Raw and zstd payloads are stored as they arrive and byte-planes payloads raw (the bytes
decoded to check the id), so the local store keeps codecs 0 and 1 only. The archive is
read in one pass (``reader``); the file is opened through ``modelvault.remote.transport``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, BinaryIO

from modelvault.archive.format import MAGIC, Manifest, need
from modelvault.archive.pipeline import SINK_DEPTH, Progress, stored_info
from modelvault.archive.reader import (
    ArchiveReader,
    Buffers,
    Received,
    Staged,
    read_header,
    read_trailer,
    receive,
)
from modelvault.core.graph import Info, walk
from modelvault.core.hashing import ObjType
from modelvault.core.objects import ModelObject
from modelvault.errors import ArchiveError, InvalidInput, ModelExists, NotFound, PathNotFound
from modelvault.odb.reading import read_model
from modelvault.refs import RefValue
from modelvault.remote.transport import open_input
from modelvault.repo import Repository

__all__ = ["ArchiveSource", "import_model"]

ArchiveSource = str | os.PathLike[str] | BinaryIO

_LANES = 2  # import stages into this many packs at once, one thread each
_PEEK = 512  # bytes read to tell the formats apart (a tar header's "ustar" is at 257)


@contextlib.contextmanager
def _input(src: ArchiveSource) -> Iterator[IO[bytes]]:
    """A binary stream over ``src``: a file object as is, a local path, or an fsspec URL."""
    if not isinstance(src, (str, os.PathLike)):
        yield src
        return
    text = os.fspath(src)
    with contextlib.ExitStack() as stack:
        try:
            f = stack.enter_context(open_input(text))
        except PathNotFound:
            raise PathNotFound(f"cannot import {text}: no such file") from None
        yield f


def import_model(
    repo: Repository, src: ArchiveSource, *, progress: Callable[[int], None] | None = None
) -> RefValue:
    """Import one ``.bentomodel`` archive (local path, fsspec URL or binary file object)
    into ``repo``; return the ref of its tag.

    Every object is verified against its id and the whole file against its checksum,
    and the model must be whole (a thin archive's base in the store) before anything
    is committed and the tag published; importing the identical model again is a no-op.
    ``progress``, if given, is called with each number of archive bytes read and
    verified (they add up to its size).

    Importing a model whose tag the store holds already writes every object of it the
    store lacks (so an import restores objects the store lost) and leaves the ref as it is.

    The archives BentoML writes (tar + xz ``.bentomodel``, ``gz``, ``xz``, ``bz2``, ``tar``,
    ``zip``, and a local ``folder``) are told apart from modelvault's own by their first
    bytes and imported by :mod:`modelvault.archive.bentoml` (same errors).

    Raises:
        InvalidInput: ``src`` is neither a path, a URL nor a binary file object.
        PathNotFound: ``src`` is a local path that does not exist.
        ArchiveError: the archive is truncated, corrupt, of an unknown version, hostile
            or incomplete; the store is left exactly as it was.
        ModelExists: the tag already holds a different model (the store is unchanged).
        RemoteError: the URL's backend failed (the store is unchanged).
    """
    if not isinstance(src, (str, os.PathLike)) and not callable(getattr(src, "read", None)):
        raise InvalidInput(
            "import_model reads a .bentomodel path, an fsspec URL or a binary file object, "
            f"not {type(src).__name__}"
        )
    text = os.fspath(src) if isinstance(src, (str, os.PathLike)) else None
    if text is not None and "://" not in text and os.path.isdir(text):  # BentoML's "folder"
        from modelvault.archive.bentoml import import_bentoml_folder

        return import_bentoml_folder(repo, Path(text), progress=progress)
    with _input(src) as raw:
        f, head = _peek(raw)
        kind = _bentoml_kind(head)
        if kind is not None:  # told apart by content: BentoML's tar (+xz, gz, bz2) or zip
            from modelvault.archive.bentoml import import_bentoml

            return import_bentoml(repo, f, kind, progress=progress)
        return _import_own(repo, f, progress)


def _bentoml_kind(head: bytes) -> str | None:
    if head.startswith(MAGIC):
        return None
    from modelvault.archive.bentoml import sniff

    return sniff(head)


class _Replay(io.RawIOBase):
    """A non-seekable stream whose first bytes were read already: they come first."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(b))
        b[: len(data)] = data
        return len(data)


def _peek(f: IO[bytes]) -> tuple[IO[bytes], bytes]:
    """The first 512 bytes of ``f`` (fewer if it is shorter), and a stream that still
    starts where it did: ``f`` itself, sought back, when it can seek."""
    seekable = getattr(f, "seekable", None)
    start = f.tell() if callable(seekable) and seekable() else None
    head = b""
    while len(head) < _PEEK:
        block = f.read(_PEEK - len(head))
        if not block:
            break
        head += block
    if start is not None:
        f.seek(start)
        return f, head
    return io.BufferedReader(_Replay(head, f)), head


def _import_own(repo: Repository, f: IO[bytes], progress: Callable[[int], None] | None) -> RefValue:
    """Import modelvault's own archive format from ``f``."""
    with (
        repo.writing() as writer,
        ThreadPoolExecutor(2, thread_name_prefix="modelvault-import") as pool,
        ThreadPoolExecutor(1, thread_name_prefix="modelvault-import-hash") as hasher,
    ):
        writer.publish_at_commit()  # sealed packs stay hidden until commit; abort drops them
        r = ArchiveReader(f, hasher)
        version, manifest = read_header(r)
        staging: deque[Future[None]] = deque()
        stagers = [  # one per pack lane: copies into the page cache run in parallel
            ThreadPoolExecutor(1, thread_name_prefix=f"modelvault-import-stage{lane}")
            for lane in range(_LANES)
        ]
        staged = itertools.count()
        buffers = Buffers()
        checked = Progress(progress)  # bytes of the file verified, from its start

        def write(batch: list[Staged], taken: list[bytearray], lane: int) -> None:
            writer.add_prepared_many(batch, lane)
            buffers.give(taken)  # written (copied): nothing reads those bytes again

        def stage(batch: list[Staged], taken: list[bytearray]) -> None:
            lane = next(staged) % _LANES  # batches take turns: each lane has its stager
            staging.append(stagers[lane].submit(write, batch, taken, lane))
            while len(staging) > SINK_DEPTH or (staging and staging[0].done()):
                staging.popleft().result()

        try:
            got = receive(r, version, stage, pool, buffers, checked.to)
            while staging:
                staging.popleft().result()
        finally:
            for fut in staging:  # after an error: stop staging before the writer aborts
                fut.cancel()
            for stager in stagers:
                stager.shutdown()
        read_trailer(r, got)
        checked.to(r.pos)
        model = _check_closure(repo, manifest, got)
        try:
            ref = RefValue.of(manifest.tag, manifest.model_id, model).check()
        except ValueError as exc:
            raise ArchiveError(
                f"archive model object of {manifest.tag} is unusable: {exc}"
            ) from None
        _check_free(repo, ref)
        writer.commit()  # invariant 1: objects durable before the ref exists
        if not repo.refs.create(ref):
            _check_free(repo, ref)  # created meanwhile: the same model, or ModelExists
    return ref


def _check_closure(repo: Repository, manifest: Manifest, got: Received) -> ModelObject:
    """The model must be whole (archive + store), consistent, and the archive hold no extra."""
    infos: dict[bytes, Info] = {}
    missing: list[bytes] = []

    def info(oid: bytes) -> Info | None:
        return got.info[oid] if oid in got.info else stored_info(repo, oid)

    for oid, found in walk(manifest.model_id, set(), info):
        if found is None:
            missing.append(oid)
        else:
            infos[oid] = found
    if missing:
        raise ArchiveError(_missing_message(repo, manifest, missing))
    extra = len(set(got.info) - set(infos))
    need(not extra, f"archive holds {extra} objects its model does not reach")
    root_kind = infos[manifest.model_id][0]
    need(root_kind == ObjType.MODEL, f"archive model id names a {root_kind.name.lower()}")
    for oid, (kind, _, children) in infos.items():
        for want_kind, child, want_size in children:
            have_kind, size, _ = infos[child]
            what = f"{kind.name.lower()} {oid.hex()}"
            need(have_kind == want_kind, f"{what} refers to {child.hex()} with the wrong type")
            need(want_size in (None, size), f"{what} gives {child.hex()} a wrong size")
    model = got.models.get(manifest.model_id)
    if model is None:
        model = read_model(repo.objects, manifest.model_id)
    named = f"{model.name}:{model.version}"
    need(named == str(manifest.tag), f"archive tag {manifest.tag} holds the model {named}")
    return model


def _missing_message(repo: Repository, manifest: Manifest, missing: list[bytes]) -> str:
    first = f"{len(missing)} objects of {manifest.tag} (first {missing[0].hex()})"
    if manifest.base is None:
        return f"archive is incomplete: {first} are neither in it nor in the store"
    base, base_id = manifest.base
    try:
        present = repo.refs.read(base).model_id == base_id
    except NotFound:
        present = False
    if not present:
        return (
            f"thin archive needs its base {base} (model {base_id.hex()}) in the store: "
            f"import {base} first ({first} are missing)"
        )
    return f"thin archive is incomplete: {first} are neither in it nor in the store nor in {base}"


def _check_free(repo: Repository, ref: RefValue) -> None:
    """Raise ModelExists if ``ref.tag`` holds another model (the same one is fine)."""
    try:
        held = repo.refs.read(ref.tag).model_id
    except NotFound:
        return
    if held != ref.model_id:
        raise ModelExists(
            f"model {ref.tag} already exists as {held.hex()}; the archive holds "
            f"{ref.model_id.hex()}: versions are immutable"
        )
