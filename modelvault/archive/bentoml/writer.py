"""Export for BentoML: a tar + xz ``.bentomodel`` that ``bentoml models import`` reads.

The tar holds what BentoML's own export holds (``./``, ``./model.yaml``, then
``./custom_objects.pkl`` when there are custom objects, then the model's files and
folders), in the PAX format BentoML's ``shutil.make_archive`` writes. It is written in
one pass, straight from the stored chunks (no materialised folder, no temporary tar).

Compression: xz preset :data:`PRESET` (0, liblzma's fastest), each :data:`XZ_BLOCK` of
the tar compressed as an xz stream of its own on one of a few threads (one per CPU, 2 to
8; liblzma releases the GIL), the streams concatenated in order. A file of concatenated
xz streams is one valid ``.xz`` file (``xz -dc``, Python's ``lzma`` and so BentoML read
it whole). Preset 0 is several times faster than BentoML's default (6) on model weights,
which barely compress at any preset (docs/bentoml.md).
"""

from __future__ import annotations

import io
import lzma
import os
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

from modelvault import _fsutil
from modelvault.archive.bentoml.info import CUSTOM_OBJECTS, MODEL_YAML, dump_model_yaml
from modelvault.core.hashing import ObjType
from modelvault.core.objects import KIND_EXEC, KIND_TREE, FileObject, ModelObject
from modelvault.errors import InvalidInput
from modelvault.model import micros_to_datetime
from modelvault.odb.reading import read_file_object, read_model, read_tree
from modelvault.refs import RefValue
from modelvault.remote.transport import open_output
from modelvault.repo import Repository
from modelvault.tags import Tag

__all__ = ["PRESET", "SUFFIX", "XZ_BLOCK", "export_bentoml"]

PRESET = 0
XZ_BLOCK = 8 << 20  # tar bytes per xz stream (each compressed on a thread of its own)
SUFFIX = ".bentomodel"
_WORKERS = max(2, min(os.cpu_count() or 2, 8))  # xz streams compressed at once
_RECORD = tarfile.RECORDSIZE  # a tar ends on a multiple of this (20 blocks of 512)


class _ParallelXZ:
    """A write-only sink compressing blocks of what it is given as concatenated xz
    streams on a few threads, writing them to ``out`` in order."""

    def __init__(self, out: IO[bytes], pool: ThreadPoolExecutor) -> None:
        self._out = out
        # a local file is an unbuffered FileIO, whose write may write less than asked (on
        # a nearly full disk) and says so only in what it returns: write_all writes it all
        self._fd = out.fileno() if isinstance(out, io.FileIO) else None
        self._pool = pool
        self._buf = bytearray()
        self._pending: list[Future[bytes]] = []
        self.written = 0  # bytes of tar given so far

    def write(self, data: bytes | memoryview) -> None:
        self._buf += data
        self.written += len(data)
        while len(self._buf) >= XZ_BLOCK:
            self._submit(bytes(self._buf[:XZ_BLOCK]))
            del self._buf[:XZ_BLOCK]

    def _submit(self, block: bytes) -> None:
        self._pending.append(self._pool.submit(lzma.compress, block, preset=PRESET))
        while len(self._pending) > _WORKERS or (self._pending and self._pending[0].done()):
            self._put(self._pending.pop(0).result())

    def _put(self, stream: bytes) -> None:
        if self._fd is not None:
            _fsutil.write_all(self._fd, [stream])
        else:
            self._out.write(stream)

    def close(self) -> None:
        if self._buf or not self.written:
            self._submit(bytes(self._buf))
            self._buf.clear()
        while self._pending:
            self._put(self._pending.pop(0).result())

    def cancel(self) -> None:
        for fut in self._pending:
            fut.cancel()


def _entries(repo: Repository, tree: bytes, prefix: str) -> Iterator[tuple[str, str, bytes]]:
    """``(member name, kind, id)`` of every file and folder under ``tree``, depth first."""
    for entry in read_tree(repo.objects, tree).entries:
        name = f"{prefix}{entry.name}"
        yield name, entry.kind, entry.oid
        if entry.kind == KIND_TREE:
            yield from _entries(repo, entry.oid, f"{name}/")


def _header(name: str, size: int, mtime: int, *, folder: bool = False, mode: int = 0o644) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o755 if folder else mode
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _pad(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def _file(
    repo: Repository, sink: _ParallelXZ, fobj: FileObject, progress: Callable[[int], None] | None
) -> None:
    for cid, n in fobj.chunks:
        sink.write(repo.objects.read(cid, ObjType.CHUNK))
        if progress is not None:
            progress(n)
    sink.write(_pad(fobj.size))


def _model_yaml(tag: Tag, obj: ModelObject) -> bytes:
    created = micros_to_datetime(obj.creation_time)
    return dump_model_yaml(
        tag=tag,
        module=obj.module,
        labels=obj.labels,
        options=obj.options,
        metadata=obj.metadata,
        context=obj.context,
        signatures=obj.signatures,
        api_version=obj.api_version,
        creation_time=created,
    )


def _write_tar(
    repo: Repository,
    tag: Tag,
    obj: ModelObject,
    sink: _ParallelXZ,
    progress: Callable[[int], None] | None,
) -> None:
    mtime = obj.creation_time // 1_000_000
    sink.write(_header("./", 0, mtime, folder=True))
    yaml = _model_yaml(tag, obj)
    sink.write(_header(f"./{MODEL_YAML}", len(yaml), mtime))
    sink.write(yaml + _pad(len(yaml)))
    if obj.custom_objects is not None:  # their cloudpickle, as stored: nothing unpickled
        fobj = read_file_object(repo.objects, obj.custom_objects)
        sink.write(_header(f"./{CUSTOM_OBJECTS}", fobj.size, mtime))
        _file(repo, sink, fobj, None)
    for name, kind, oid in _entries(repo, obj.tree, "./"):
        if kind == KIND_TREE:
            sink.write(_header(name, 0, mtime, folder=True))
            continue
        fobj = read_file_object(repo.objects, oid)
        mode = 0o755 if kind == KIND_EXEC else 0o644
        sink.write(_header(name, fobj.size, mtime, mode=mode))
        _file(repo, sink, fobj, progress)
    sink.write(b"\0" * (2 * tarfile.BLOCKSIZE))  # end of archive
    sink.write(b"\0" * (-sink.written % _RECORD))


def export_bentoml(
    repo: Repository,
    ref: RefValue,
    dest: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> str:
    """Write ``ref``'s model as a ``.bentomodel`` BentoML imports; returns its path or URL.

    ``dest`` is a file, or a folder (existing, or ending in ``/``) that receives
    ``<name>-<version>.bentomodel`` (BentoML's own name for it). ``progress`` is called
    with each number of the model's file bytes written. The file appears only complete.

    Raises:
        InvalidInput: the model has a top-level file BentoML's layout reserves
            (``model.yaml``, or ``custom_objects.pkl`` beside custom objects).
        IntegrityError: a stored object is damaged (nothing is left at ``dest``).
        RemoteError: the URL's backend failed.
    """
    obj = read_model(repo.objects, ref.model_id)
    top = {e.name for e in read_tree(repo.objects, obj.tree).entries}
    reserved = {MODEL_YAML} | ({CUSTOM_OBJECTS} if obj.custom_objects is not None else set())
    if top & reserved:
        raise InvalidInput(
            f"model {ref.tag} has a file {sorted(top & reserved)[0]!r} at its top, which "
            "BentoML's layout keeps for the model's info or custom objects: it cannot be "
            "exported for BentoML (export it in modelvault's format instead)"
        )
    name = f"{ref.tag.name}-{ref.tag.version}{SUFFIX}"
    with (
        ThreadPoolExecutor(_WORKERS, thread_name_prefix="modelvault-xz") as pool,
        open_output(dest, name) as (out, where),
    ):
        sink = _ParallelXZ(out, pool)
        try:
            _write_tar(repo, ref.tag, obj, sink, progress)
            sink.close()
        except BaseException:
            sink.cancel()
            raise
    return where
