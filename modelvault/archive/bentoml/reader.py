"""Import of the archives BentoML writes (``bentoml models export``), told apart by content.

::

    xz / gz / bz2 / tar   read as one tar stream: each regular member is copied into a
                          staging file in the store's ``tmp/`` and saved from there through
                          the normal ingest path (so it dedups), then deleted at once: no
                          full extracted copy of the model is ever on disk. A member of
                          :data:`OVERLAP_MIN` bytes or more is saved while it is unpacked
                          (``_Growing``: the ingest's views wait for the bytes), on three
                          threads: unpacking, writing the staging file, saving
    zip                   the same, member by member (needs a seekable source)
    folder                a local folder holding ``model.yaml``: its files are saved in place

``model.yaml`` becomes the model's info (``info.BentoInfo``); ``custom_objects.pkl`` is
kept, as its bytes, as the model's custom objects (BentoML and modelvault both store a
cloudpickle of a dict), so nothing is unpickled while importing. Every other file is the
model's tree. The model object is written, the packs committed and only then the ref
published: any error leaves the store as it was (the packs stay hidden until commit).

Hostile input raises ArchiveError: member names that are absolute or climb out (``..``),
links (symbolic or hard), devices and other special files, a member that claims more
bytes than the store's disk has free, decompression beyond :data:`MAX_EXPANSION` times the
bytes read (plus :data:`EXPANSION_SLACK`), a tar cut short (also before its end-of-archive
block, where one of several xz streams ends), more than :data:`MAX_MEMBERS` members, a PAX
or GNU long-name header over :data:`MAX_HEADER` bytes, and a missing or malformed
``model.yaml``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from modelvault import _fsutil
from modelvault.archive.bentoml.containers import (
    _BLOCK,
    EXPANSION_SLACK,
    MAX_EXPANSION,
    Progress,
    Readable,
    _Budget,
    _import_tar,
    _import_zip,
    _member_path,
)
from modelvault.archive.bentoml.info import (
    CUSTOM_OBJECTS,
    MAX_YAML_BYTES,
    MODEL_YAML,
    BentoInfo,
    parse_model_yaml,
)
from modelvault.core.chunking import Source
from modelvault.core.hashing import ObjType
from modelvault.core.objects import (
    KIND_EXEC,
    KIND_FILE,
    KIND_TREE,
    ModelObject,
    TreeEntry,
    TreeObject,
)
from modelvault.errors import ArchiveError, ModelExists, ModelVaultError, NotFound
from modelvault.ingest import Ingester, Parent
from modelvault.odb import PackWriter
from modelvault.odb.reading import read_model
from modelvault.refs import RefValue
from modelvault.repo import Repository

__all__ = [
    "EXPANSION_SLACK",
    "MAX_EXPANSION",
    "MAX_MEMBERS",
    "OVERLAP_MIN",
    "TAR_KINDS",
    "import_bentoml",
    "import_bentoml_folder",
    "sniff",
]

MAX_MEMBERS = 100_000
OVERLAP_MIN = 32 << 20  # members this large are saved while they are unpacked
XZ_MAGIC = b"\xfd7zXZ\x00"
TAR_KINDS = ("xz", "gz", "bz2", "tar")


def sniff(head: bytes) -> str | None:
    """The BentoML archive kind the first 512 bytes of a file show (``xz``, ``gz``,
    ``bz2``, ``zip`` or ``tar``), or None (modelvault's own format, or unknown)."""
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(b"\x1f\x8b"):
        return "gz"
    if head.startswith(b"BZh") and len(head) > 3 and head[3:4].isdigit():
        return "bz2"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


class _Unfinished(ArchiveError):
    """A view of a :class:`_Growing` file whose unpacking failed: a consequence, never the
    cause (the caller reports the staging's own error where there is one)."""


class _Growing(Source):
    """A file still being written by the unpacking thread: a view waits until its bytes
    are there, and fails once the unpacking has failed."""

    def __init__(self, size: int, fd: int) -> None:
        super().__init__(size, fd=fd)
        self._ready = threading.Condition()
        self._have = 0
        self._failed = False

    def grew(self, have: int) -> None:
        with self._ready:
            self._have = have
            self._ready.notify_all()

    def fail(self) -> None:
        with self._ready:
            self._failed = True
            self._ready.notify_all()

    def view(self, start: int, stop: int) -> memoryview:
        with self._ready:
            self._ready.wait_for(lambda: self._have >= stop or self._failed)
            if self._have < stop:
                raise _Unfinished("archive member was not unpacked whole (the import failed)")
        return super().view(start, stop)


class _Model:
    """The files of one BentoML model as they are saved: the tree in memory, the staging
    folder for one member at a time, model.yaml and the custom objects."""

    def __init__(
        self, repo: Repository, writer: PackWriter, staging: Path, progress: Progress | None
    ):
        self.repo = repo
        self.writer = writer
        self.staging = staging
        self.ingester = Ingester(writer, progress)
        self.saver = ThreadPoolExecutor(1, thread_name_prefix="modelvault-bentoml-save")
        self.stager = ThreadPoolExecutor(1, thread_name_prefix="modelvault-bentoml-stage")
        self.root: dict[str, Any] = {}  # name -> sub-dict (folder) or TreeEntry (file)
        self.yaml: bytes | None = None
        self.custom_objects: bytes | None = None
        self.members = 0
        self.files: set[tuple[str, ...]] = set()

    def _count(self) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise ArchiveError(f"archive holds more than {MAX_MEMBERS} members")

    def _folder(self, parts: tuple[str, ...], name: str) -> dict[str, Any]:
        node = self.root
        for part in parts:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ArchiveError(f"archive member {name!r} lies under a file")
            node = child
        return node

    def add_dir(self, parts: tuple[str, ...], name: str) -> None:
        self._count()
        self._folder(parts, name)

    def _place(self, parts: tuple[str, ...], name: str) -> None:
        if not parts:
            raise ArchiveError(f"archive member {name!r} is a file where the model folder is")
        if parts in self.files:
            raise ArchiveError(f"archive holds {name!r} twice")
        self.files.add(parts)
        folder = self._folder(parts[:-1], name)
        if isinstance(folder.get(parts[-1]), dict):
            raise ArchiveError(f"archive member {name!r} is both a folder and a file")

    def add_file(
        self,
        parts: tuple[str, ...],
        name: str,
        size: int,
        executable: bool,
        stream: Readable,
        budget: _Budget,
    ) -> None:
        """Save one member's bytes (``size`` of them from ``stream``)."""
        self._count()
        self._place(parts, name)
        if parts == (MODEL_YAML,):
            if size > MAX_YAML_BYTES:
                raise ArchiveError(f"{MODEL_YAML} is {size} bytes, more than {MAX_YAML_BYTES}")
            self.yaml = _read_exactly(stream, size, name, budget)
            with contextlib.suppress(ArchiveError):  # if unsound, finish() says so
                self.learn_parent(parse_model_yaml(self.yaml))
            return
        budget.claim(name, size)
        suffix = Path(parts[-1]).suffix[:16]  # ingest looks at suffixes (.safetensors)
        path = self.staging / f"member{suffix}"
        if size >= OVERLAP_MIN:
            try:
                self._unpack_while_saving(parts, name, size, executable, stream, budget, path)
            finally:
                path.unlink(missing_ok=True)
            return
        try:
            with open(path, "wb") as out:
                left = size
                while left:
                    block = stream.read(min(_BLOCK, left))
                    if not block:
                        raise ArchiveError(f"archive member {name!r} is cut short")
                    budget.take(name, len(block))
                    out.write(block)
                    left -= len(block)
                if stream.read(1):
                    raise ArchiveError(f"archive member {name!r} is longer than it says")
            self._store(parts, name, path, size, executable)
        finally:
            path.unlink(missing_ok=True)

    def add_path(self, parts: tuple[str, ...], path: Path, size: int, executable: bool) -> None:
        """Save a file already on disk (the folder format) in place."""
        self._count()
        self._place(parts, str(path))
        if parts == (MODEL_YAML,):
            if size > MAX_YAML_BYTES:
                raise ArchiveError(f"{MODEL_YAML} is {size} bytes, more than {MAX_YAML_BYTES}")
            self.yaml = path.read_bytes()
            return
        self._store(parts, str(path), path, size, executable)

    def _unpack_while_saving(
        self,
        parts: tuple[str, ...],
        name: str,
        size: int,
        executable: bool,
        stream: Readable,
        budget: _Budget,
        path: Path,
    ) -> None:
        """Unpack a large member on this thread while another writes it into ``path``
        (:func:`_stage`) and a third saves it from there (its views wait for the bytes:
        :class:`_Growing`), so unpacking and saving overlap instead of following each
        other, and the unpacking (the slowest step: xz) does nothing else."""
        blocks: queue.Queue[bytes | None] = queue.Queue(_STAGED_BLOCKS)
        with open(path, "wb", buffering=0) as out, open(path, "rb", buffering=0) as back:
            source = _Growing(size, back.fileno())
            saving = self.saver.submit(self.ingester.store_source, source, parts)
            staging = self.stager.submit(_stage, out, blocks, source)
            try:
                done = 0
                while done < size:
                    for step in (saving, staging):
                        if step.done():  # it failed (it cannot finish before the bytes)
                            step.result()
                    block = stream.read(min(_BLOCK, size - done))
                    if not block:
                        raise ArchiveError(f"archive member {name!r} is cut short")
                    budget.take(name, len(block))
                    _hand(blocks, block, staging)
                    done += len(block)
                _hand(blocks, None, staging)
                staging.result()
            except BaseException as exc:
                source.fail()
                with contextlib.suppress(queue.Empty):
                    while True:  # only this thread puts: after this, None fits
                        blocks.get_nowait()
                blocks.put(None)
                for step in (staging, saving):
                    with contextlib.suppress(BaseException):
                        step.result()
                cause = staging.exception()  # (finished: waited for above)
                if isinstance(exc, _Unfinished) and cause is not None:
                    # the save stopped because the staging file's writes did (a full disk):
                    # that is the error to report, whichever of the two was seen first
                    raise cause from exc
                raise
            oid, stored = saving.result()
        if stored != size:  # cannot happen: the source has exactly size bytes
            raise ArchiveError(f"archive member {name!r} changed size while it was read")
        self._record(parts, name, oid, size, executable)

    def _store(self, parts: tuple[str, ...], name: str, path: Path, size: int, ex: bool) -> None:
        oid, stored = self.ingester.store_file(path, parts)
        if stored != size:
            raise ArchiveError(f"archive member {name!r} changed size while it was read")
        self._record(parts, name, oid, size, ex)

    def _record(self, parts: tuple[str, ...], name: str, oid: bytes, size: int, ex: bool) -> None:
        if parts == (CUSTOM_OBJECTS,):
            self.custom_objects = oid
            return
        self._folder(parts[:-1], name)[parts[-1]] = TreeEntry(
            parts[-1], KIND_EXEC if ex else KIND_FILE, oid, size
        )

    def learn_parent(self, info: BentoInfo) -> None:
        """Compare later files with the newest stored version of the name (dedup shortcut)."""
        with contextlib.suppress(ModelVaultError, ValueError):
            versions = self.repo.refs.versions(info.tag.name, damaged=[])
            if versions:
                tree = read_model(self.repo.objects, versions[0].model_id).tree
                self.ingester.parent = Parent(self.repo.objects, tree)

    def _tree(self, node: dict[str, Any]) -> tuple[bytes, int]:
        entries: list[TreeEntry] = []
        total = 0
        for name, child in sorted(node.items()):
            if isinstance(child, dict):
                oid, size = self._tree(child)
                entries.append(TreeEntry(name, KIND_TREE, oid, size))
            else:
                entries.append(child)
                size = child.size
            total += size
        return self.writer.add(ObjType.TREE, TreeObject(entries).encode(), probe=False), total

    def finish(self) -> RefValue:
        """Write the model object, commit the packs and publish the ref."""
        if self.yaml is None:
            raise ArchiveError(
                f"archive has no {MODEL_YAML} at its top: it is not a model BentoML exported"
            )
        info = parse_model_yaml(self.yaml)
        tree, size = self._tree(self.root)
        obj = ModelObject(
            name=info.tag.name,
            version=str(info.tag.version),
            module=info.module,
            tree=tree,
            size=size,
            creation_time=info.creation_time,
            labels=info.labels,
            metadata=info.metadata,
            options=info.options,
            signatures=info.signatures,
            context=info.context,
            api_version=info.api_version,
            custom_objects=self.custom_objects,
        )
        oid = self.writer.add(ObjType.MODEL, obj.encode(), probe=False)
        try:
            ref = RefValue.of(info.tag, oid, obj).check()
        except ValueError as exc:
            raise ArchiveError(f"{MODEL_YAML} of {info.tag} is unusable: {exc}") from None
        _check_free(self.repo, ref)
        self.writer.commit()  # invariant 1: objects durable before the ref exists
        if not self.repo.refs.create(ref):
            _check_free(self.repo, ref)  # created meanwhile: the same model, or ModelExists
        return ref


_STAGED_BLOCKS = 8  # blocks unpacked ahead of the staging file's writes, at most


def _hand(blocks: queue.Queue[bytes | None], block: bytes | None, staging: Future[None]) -> None:
    """Put ``block`` for :func:`_stage`, raising its error if it has stopped."""
    while True:
        try:
            blocks.put(block, timeout=0.1)
            return
        except queue.Full:
            if staging.done():
                staging.result()


def _stage(out: Any, blocks: queue.Queue[bytes | None], source: _Growing) -> None:
    """Write the blocks into the staging file ``out`` until None, telling ``source``."""
    done = 0
    try:
        while (block := blocks.get()) is not None:
            _fsutil.write_all(out.fileno(), [block])
            done += len(block)
            source.grew(done)
    except BaseException:
        source.fail()
        raise


def _read_exactly(stream: Readable, size: int, name: str, budget: _Budget) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < size and (block := stream.read(size - got)):
        budget.take(name, len(block))
        parts.append(block)
        got += len(block)
    if got != size or stream.read(1):
        raise ArchiveError(f"archive member {name!r} does not hold the {size} bytes it says")
    return b"".join(parts)


def _check_free(repo: Repository, ref: RefValue) -> None:
    """Raise ModelExists if ``ref.tag`` holds another model (the same one is fine)."""
    try:
        held = repo.refs.read(ref.tag).model_id
    except NotFound:
        return
    if held != ref.model_id:
        raise ModelExists(
            f"model {ref.tag} already exists as {held.hex()}; the BentoML archive holds "
            f"{ref.model_id.hex()}: versions are immutable"
        )


@contextlib.contextmanager
def _model(repo: Repository, progress: Progress | None) -> Iterator[_Model]:
    with repo.writing() as writer, repo.staging() as staging:
        writer.publish_at_commit()  # packs stay hidden until commit; abort drops them
        staging.mkdir()
        model = _Model(repo, writer, staging, progress)
        try:
            yield model
        finally:
            model.saver.shutdown()
            model.stager.shutdown()
            model.ingester.close()
            shutil.rmtree(staging, ignore_errors=True)


def import_bentoml(
    repo: Repository, f: IO[bytes], kind: str, *, progress: Progress | None = None
) -> RefValue:
    """Import a BentoML archive of ``kind`` (``sniff``) from the stream ``f``.

    Raises:
        ArchiveError: truncated, corrupt or hostile, or no sound ``model.yaml`` (the
            store is left as it was).
        ModelExists: the tag holds a different model already.
    """
    with _model(repo, None) as model:  # progress counts the archive's bytes read
        if kind == "zip":
            _import_zip(model, f, progress)
        else:
            _import_tar(model, f, kind, progress)
        return model.finish()


def import_bentoml_folder(
    repo: Repository, folder: Path, *, progress: Progress | None = None
) -> RefValue:
    """Import a model folder BentoML wrote (``model.yaml`` at its top): the ``folder``
    export format, or one version folder of a BentoML model store. Files are saved in
    place; links and special files are refused (ArchiveError)."""
    if not (folder / MODEL_YAML).is_file():
        raise ArchiveError(
            f"{folder} has no {MODEL_YAML}: it is not a model folder BentoML wrote (to "
            "store a folder of files, save it: `mv save DIR NAME`, models.save)"
        )
    with _model(repo, progress) as model:  # progress counts the files' bytes saved
        yaml_path = folder / MODEL_YAML
        if yaml_path.stat().st_size > MAX_YAML_BYTES:
            raise ArchiveError(f"{MODEL_YAML} is larger than {MAX_YAML_BYTES} bytes")
        model.learn_parent(parse_model_yaml(yaml_path.read_bytes()))
        _walk(model, folder, ())
        return model.finish()


def _walk(model: _Model, folder: Path, rel: tuple[str, ...]) -> None:
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        parts = (*rel, entry.name)
        path = Path(entry.path)
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise ArchiveError(f"{path} is a symbolic link: links are refused")
        if stat.S_ISDIR(st.st_mode):
            model.add_dir(_member_path("/".join(parts)), str(path))
            _walk(model, path, parts)
        elif stat.S_ISREG(st.st_mode):
            model.add_path(
                _member_path("/".join(parts)), path, st.st_size, bool(st.st_mode & stat.S_IXUSR)
            )
        else:
            raise ArchiveError(f"{path} is a device, fifo or other special file: refused")
