"""Store: the facade over one store folder — save, get, list, delete, gc, verify, stats.

Layout (docs/format.md is normative)::

    <store>/config.json      {"format": 1, "remotes": {...}}
    <store>/objects/         packs and their indexes (modelvault.odb)
    <store>/refs/            name/version -> model id (modelvault.refs)
    <store>/cache/<id>/      materialised model folders, read-only, dropped by gc
    <store>/tmp/             staging folders of models being created
    <store>/locks/gc.lock    writers hold it shared, gc exclusive
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import functools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from modelvault import _fsutil
from modelvault.cache import Cache
from modelvault.checkout import read_file_object, read_tree, write_tree
from modelvault.core.hashing import ObjType
from modelvault.core.objects import KIND_TREE, ModelObject
from modelvault.errors import (
    DiskFull,
    IntegrityError,
    InvalidInput,
    ModelExists,
    ModelVaultError,
    NotFound,
    PathNotFound,
)
from modelvault.ingest import Ingester, Parent, Progress
from modelvault.model import Model
from modelvault.modelinfo import (
    build_context,
    check_labels,
    check_storable,
    normalise_signatures,
)
from modelvault.odb import PackDB, PackWriter
from modelvault.odb.packs import verify_payload
from modelvault.refs import RefStore, RefValue, warn_damaged
from modelvault.tags import Tag, new_version

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from modelvault.archive import ArchiveSource
    from modelvault.remote.sync import TransferResult

FORMAT_VERSION = 1
# object id -> the (id, type) pairs it refers to, or None when it cannot be read
Children = dict[bytes, "builtins.list[tuple[bytes, ObjType]] | None"]
DEFAULT_SIGNATURES: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class StoreStats:
    """Sizes of a store: tags, logical bytes over all tags, bytes on disk."""

    models: int
    logical_bytes: int
    stored_bytes: int

    @property
    def dedup_ratio(self) -> float:
        """Logical over stored bytes (how many times the store saves over plain copies)."""
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else 1.0


@dataclass
class VerifyReport:
    """Result of :meth:`Store.verify`: ``ok`` is False when anything is damaged or missing."""

    ok: bool = True
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    broken_tags: list[Tag] = field(default_factory=list)
    objects_checked: int = 0
    damaged_files: dict[str, str] = field(default_factory=dict)  # store-relative path -> why
    # materialised folders (model id hex -> what differed) that were dropped: a cache,
    # written afresh on the next ``Model.path``, so they do not make ``ok`` False
    dropped_caches: dict[str, str] = field(default_factory=dict)
    # damaged packs moved to objects/quarantine/ once their sound objects were copied
    set_aside: list[str] = field(default_factory=list)
    # damaged packs whose every object was sound, written anew (say, a lost index)
    rebuilt: list[str] = field(default_factory=list)


@dataclass
class ModelRef:
    """What ``create()`` yields: an empty staging ``path`` to write the model's files into."""

    tag: Tag
    path: str
    model: Model | None = None

    def __str__(self) -> str:
        return str(self.tag)


@dataclass(frozen=True)
class SaveOptions:
    """Everything saved beside the files; checked before any byte is written."""

    labels: dict[str, str]
    metadata: dict[str, Any]
    signatures: dict[str, dict[str, Any]]
    options: dict[str, Any]
    context: dict[str, Any]
    module: str
    custom_objects: bytes | None


_F = TypeVar("_F", bound=Callable[..., Any])


def _space_checked(op: str) -> Callable[[_F], _F]:
    """Turn a disk-full ``OSError`` of the operation into :class:`DiskFull` saying which
    operation failed (``op`` is formatted with the call's positional arguments), where,
    and what to free (the store itself stays as it was)."""

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def checked(self: Store, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except DiskFull:
                raise
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                where = Path(exc.filename) if exc.filename else self.path
                raise DiskFull(
                    exc.errno,
                    f"{op.format(*args)} failed: no space left on the disk holding {where} "
                    f"({_free(where)} free); nothing was published and the store is as it "
                    "was. Free space there (`mv delete` old versions, then `mv gc`; `mv du` "
                    "shows what each model holds) and try again",
                    exc.filename,
                ) from exc

        return checked  # type: ignore[return-value]

    return wrap


def _free(path: Path) -> str:
    for p in (path, *path.parents):
        with contextlib.suppress(OSError):
            st = os.statvfs(p)
            return f"{st.f_bavail * st.f_frsize / 2**20:.1f} MiB"
    return "unknown"


def _usable_path(what: str, path: object) -> Path:
    """``path`` as a Path; InvalidInput when it is not a path or is empty (``Path("")``
    would mean the current folder, which nobody means by an empty string)."""
    if not isinstance(path, str | os.PathLike) or isinstance(path, bytes):
        raise InvalidInput(f"{what} needs a folder path (str or os.PathLike), not {path!r}")
    if not os.fspath(path):
        raise InvalidInput(f"{what} got an empty path: give a folder, e.g. '.' for this one")
    return Path(path)


def _default_home() -> Path:
    home = os.environ.get("MODELVAULT_HOME")
    return Path(home) if home else Path.home() / "modelvault"


class Store:
    """A modelvault store in one folder (created on first use)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = (
            _usable_path("Store", path).expanduser().absolute()
            if path is not None
            else (_default_home().expanduser().absolute())
        )
        if self.path.exists() and not self.path.is_dir():
            raise InvalidInput(f"{self.path} exists and is not a folder")
        for sub in ("objects", "refs", "cache", "tmp", "locks"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        self._init_config()
        self._db = PackDB(self.path / "objects")
        self._refs = RefStore(self.path / "refs")
        self._cache = Cache(self.path / "cache", self._db, self.path / "locks" / "cache")

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- config ----------------------------------------------------------------
    @property
    def _config_path(self) -> Path:
        return self.path / "config.json"

    def _init_config(self) -> None:
        if not self._config_path.exists():
            _fsutil.create_only(self._config_path, json.dumps({"format": FORMAT_VERSION}).encode())
        fmt = self.read_config().get("format")
        if isinstance(fmt, bool) or not isinstance(fmt, int):
            raise IntegrityError(
                f"{self._config_path} is damaged: its \"format\" is {fmt!r}, not a number; "
                f"restore it from a backup, or write {{\"format\": {FORMAT_VERSION}}} and add "
                "the remotes again (`mv remote add`)"
            )
        if fmt != FORMAT_VERSION:
            raise InvalidInput(
                f"{self.path} is a store of format {fmt}; this modelvault reads format "
                f"{FORMAT_VERSION}: upgrade modelvault"
            )

    def read_config(self) -> dict[str, Any]:
        """The store's config document."""
        try:
            doc = json.loads(self._config_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"{self._config_path} is unreadable: {exc}") from exc
        if not isinstance(doc, dict):
            raise IntegrityError(f"{self._config_path} is not a JSON object")
        return doc

    def update_config(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``change`` to the config under a lock and replace it atomically."""
        with _fsutil.file_lock(self.path / "locks" / "config.lock", shared=False):
            doc = self.read_config()
            change(doc)
            _fsutil.atomic_write(self._config_path, json.dumps(doc, indent=2).encode())

    # -- writing ---------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator[PackWriter]:
        """A pack writer, holding the gc lock shared so gc never frees what it reaches.

        (An import keeps all its packs hidden until commit with
        ``PackWriter.publish_at_commit()``.)
        """
        with _fsutil.file_lock(self.path / "locks" / "gc.lock", shared=True):
            self._db.refresh()
            writer = self._db.writer()
            with writer:
                yield writer

    def _options(
        self,
        *,
        labels: Mapping[str, str] | None,
        metadata: Mapping[str, Any] | None,
        custom_objects: Mapping[str, Any] | None,
        signatures: Mapping[str, Mapping[str, Any]] | None,
        module: str,
        options: Mapping[str, Any] | None,
        context: Mapping[str, Any] | None,
        default_signatures: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> SaveOptions:
        pickled = None
        if custom_objects:
            if not isinstance(custom_objects, Mapping):
                raise InvalidInput("custom_objects must be a dict: name -> object")
            import cloudpickle

            pickled = cloudpickle.dumps(dict(custom_objects))
        if not isinstance(module, str):
            raise InvalidInput("module must be a string")
        return SaveOptions(
            labels=check_labels(labels),
            metadata=check_storable("metadata", metadata),
            signatures=normalise_signatures(signatures, default_signatures or DEFAULT_SIGNATURES),
            options=check_storable("options", options),
            context=check_storable("context", context or build_context()),
            module=module,
            custom_objects=pickled,
        )

    def _new_tag(self, tag: str | Tag) -> Tag:
        t = Tag.coerce(tag)
        t = Tag(t.name, new_version()) if t.is_latest else t
        with contextlib.suppress(NotFound):
            self._refs.read(t)
            raise ModelExists(
                f"model {t} already exists: versions are immutable; "
                "save without a version to get a new one"
            )
        return t

    def _parent(self, name: str) -> Parent | None:
        """The newest version of ``name``: a new version's files are compared with its
        files' chunks (``odb.known``). None if there is none or it cannot be read."""
        try:
            versions = self._refs.versions(name, damaged=[])
            if not versions:
                return None
            model = ModelObject.decode(self._db.read(versions[0].model_id, ObjType.MODEL))
        except (ModelVaultError, ValueError):
            return None
        return Parent(self._db, model.tree)

    @_space_checked("saving {0}")
    def _commit(
        self,
        tag: Tag,
        opts: SaveOptions,
        store_files: Callable[[Ingester], tuple[bytes, int]],
        progress: Progress | None = None,
    ) -> Model:
        with self.writing() as writer:
            ingester = Ingester(writer, progress, self._parent(tag.name))
            try:
                tree, size = store_files(ingester)
                co = ingester.store_bytes(opts.custom_objects) if opts.custom_objects else None
            finally:
                ingester.close()
            created = time.time_ns() // 1000
            obj = ModelObject(
                name=tag.name,
                version=str(tag.version),
                module=opts.module,
                tree=tree,
                size=size,
                creation_time=created,
                labels=opts.labels,
                metadata=opts.metadata,
                options=opts.options,
                signatures=opts.signatures,
                context=opts.context,
                custom_objects=co,
            )
            oid = writer.add(ObjType.MODEL, obj.encode(), probe=False)
            writer.commit()  # invariant 1: objects durable before the ref exists
            ref = RefValue.of(tag, oid, obj)
            if not self._refs.create(ref):
                raise ModelExists(f"model {tag} already exists (saved concurrently)")
        return Model(self, ref)

    def save(
        self,
        path: str | os.PathLike[str],
        tag: str | Tag,
        *,
        labels: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        custom_objects: Mapping[str, Any] | None = None,
        signatures: Mapping[str, Mapping[str, Any]] | None = None,
        module: str = "",
        options: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
        _default_signatures: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Model:
        """Store a folder (or one file) already on disk as ``tag`` and return the Model.

        Symbolic links are followed: the files they point to are stored.

        Raises:
            InvalidTag: bad name or version.
            ModelExists: ``name:version`` exists already.
            PathNotFound: ``path`` (or a link inside) does not exist.
            InvalidInput: a link loop, a special file, or info that cannot be stored.
        """
        src = _usable_path("save", path)
        if not src.exists():
            raise PathNotFound(
                f"cannot save {src}: no such file or folder; give the path of an existing one"
            )
        t = self._new_tag(tag)
        opts = self._options(
            labels=labels,
            metadata=metadata,
            custom_objects=custom_objects,
            signatures=signatures,
            module=module,
            options=options,
            context=context,
            default_signatures=_default_signatures,
        )
        return self._commit(t, opts, lambda ing: ing.store_path(src), progress)

    @contextlib.contextmanager
    def create(
        self,
        tag: str | Tag,
        *,
        labels: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        custom_objects: Mapping[str, Any] | None = None,
        signatures: Mapping[str, Mapping[str, Any]] | None = None,
        module: str = "",
        options: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        _default_signatures: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Iterator[ModelRef]:
        """Yield a ModelRef whose empty ``path`` receives the model's files.

        On normal exit the files are stored and the model committed (``ref.model``);
        on an exception nothing is committed. The staging folder is removed either way.
        """
        t = self._new_tag(tag)
        opts = self._options(
            labels=labels,
            metadata=metadata,
            custom_objects=custom_objects,
            signatures=signatures,
            module=module,
            options=options,
            context=context,
            default_signatures=_default_signatures,
        )
        # in flight: gc in any process of the host leaves the staging folder alone
        with _fsutil.in_flight(self.path / "tmp", ".staging") as staging:
            staging.mkdir()
            try:
                ref = ModelRef(t, str(staging))
                yield ref
                ref.model = self._commit(t, opts, lambda ing: ing.store_tree(staging))
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    # -- reading ---------------------------------------------------------------
    def get(self, tag: str | Tag) -> Model:
        """The model a tag names (``name`` or ``name:latest`` = newest).

        Raises:
            InvalidTag: bad tag syntax.
            NotFound: no such name or version.
        """
        if isinstance(tag, Model):
            return tag
        return Model(self, self._refs.resolve(Tag.coerce(tag)))

    def list(self, name: str | Tag | None = None) -> builtins.list[Model]:
        """Every model (or every version of ``name``), newest first.

        Damaged refs are skipped and named in one logged warning (``modelvault.refs``).
        """
        damaged: builtins.list[Tag] = []
        if name is None:
            refs = self._refs.all(damaged)
        else:
            refs = self._refs.versions(Tag.coerce(name).name, damaged)
        warn_damaged(damaged)
        return [Model(self, r) for r in refs]

    def delete(self, tag: str | Tag) -> None:
        """Remove one version's ref, or every version of a bare name.

        Stored bytes are freed by :meth:`gc`, never while another ref reaches them.

        Raises:
            NotFound: no such name or version.
        """
        t = Tag.coerce(tag)
        if t.version is not None and t.version != "latest":
            self._refs.delete(t)
            return
        if t.version == "latest":
            self._refs.delete(self._refs.resolve(t).tag)
            return
        damaged: builtins.list[Tag] = []  # a bare name removes its damaged refs too
        targets = [r.tag for r in self._refs.versions(t.name, damaged)] + damaged
        if not targets:
            raise NotFound(f"no model named {t.name!r} in the store: `mv list` shows the models")
        for target in targets:
            with contextlib.suppress(NotFound):
                self._refs.delete(target)

    @_space_checked("writing out the model folder (Model.path)")
    def _materialise(self, model_id: bytes, tree_id: Callable[[], bytes]) -> Path:
        """The cache folder of a model, written on first use (``tree_id`` read only then)
        and written afresh whenever its files changed since (see modelvault.cache)."""
        with _reader_pool() as pool:
            return self._cache.materialise(model_id, tree_id, pool)

    @_space_checked("checkout of {0}")
    def checkout(
        self, tag: str | Tag, dest: str | os.PathLike[str], progress: Progress | None = None
    ) -> Path:
        """Write a model's files into the new folder ``dest`` (writable copies).

        The files are written into a temporary sibling folder renamed to ``dest``
        at the end, so a failure (a damaged object, Ctrl-C) leaves no partial ``dest``.

        Raises:
            InvalidInput: ``dest`` exists already.
            IntegrityError: a stored object is damaged.
        """
        model = self.get(tag)
        target = Path(dest).absolute()
        if target.exists():
            raise InvalidInput(f"{target} exists already: checkout writes a new folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _fsutil.temp_name(target.parent, ".checkout")
        try:
            with _reader_pool() as pool:
                write_tree(self._db, model._object.tree, tmp, pool, progress)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsutil.fsync_dir(target.parent)
        return target

    # -- reachability ----------------------------------------------------------
    def _children(self, oid: bytes, kind: ObjType) -> builtins.list[tuple[bytes, ObjType]]:
        """The ids a model, tree or file object refers to (raises if absent or unreadable)."""
        if kind == ObjType.MODEL:
            obj = ModelObject.decode(self._db.read(oid, ObjType.MODEL))
            kids = [(obj.tree, ObjType.TREE)]
            return kids + ([(obj.custom_objects, ObjType.FILE)] if obj.custom_objects else [])
        if kind == ObjType.TREE:
            return [
                (e.oid, ObjType.TREE if e.kind == KIND_TREE else ObjType.FILE)
                for e in read_tree(self._db, oid).entries
            ]
        return [(cid, ObjType.CHUNK) for cid, _ in read_file_object(self._db, oid).chunks]

    def reachable(
        self, model_ids: builtins.list[bytes], cache: Children | None = None
    ) -> tuple[set[bytes], set[bytes]]:
        """``(every id the models reach, ids among them that are absent or unreadable)``.

        Chunks are not read. ``cache`` keeps the decoded children of each object (None:
        unreadable) across calls, so walking many tags that share files reads each once.
        """
        cache = {} if cache is None else cache
        seen: set[bytes] = set()
        missing: set[bytes] = set()
        todo = [(oid, ObjType.MODEL) for oid in model_ids]
        while todo:
            oid, kind = todo.pop()
            if oid in seen:
                continue
            seen.add(oid)
            if kind == ObjType.CHUNK:
                continue
            if oid not in cache:
                try:
                    cache[oid] = self._children(oid, kind)
                except (NotFound, IntegrityError, ValueError):
                    cache[oid] = None
            kids = cache[oid]
            if kids is None:
                missing.add(oid)
            else:
                todo.extend(kids)
        missing |= {c for c in seen if self._db.entry(c) is None}
        return seen, missing

    # -- maintenance -----------------------------------------------------------
    def stats(self) -> StoreStats:
        """Tags, logical bytes over all tags, and bytes the objects take on disk."""
        models = self.list()
        logical = sum(m.size for m in models)
        return StoreStats(len(models), logical, self._db.stored_bytes())

    @_space_checked("verify")
    def verify(self) -> VerifyReport:
        """Re-hash every stored object; report damaged ids and the tags they break.

        Checks under the gc lock held shared, so a gc elsewhere cannot delete packs being
        checked. Then, if packs are damaged, takes it exclusively to copy their sound
        objects into a new pack and set the damaged ones aside (``objects/quarantine/``,
        freed by gc): what was corrupt is then missing, and pulling or importing a
        healthy copy of the broken tags restores it (docs/architecture.md, Repair).
        """
        with _fsutil.file_lock(self.path / "locks" / "gc.lock", shared=True):
            report, damaged = self._verify()
        if damaged:
            with _fsutil.file_lock(self.path / "locks" / "gc.lock", shared=False):
                report.set_aside = self._set_aside(damaged)
            report.rebuilt = sorted(damaged - set(report.set_aside))
        return report

    def _lost_in_quarantine(self) -> set[bytes]:
        """Damaged objects of the packs set aside that no healthy copy has replaced yet:
        still reported as corrupt, until a pull or an import repairs their tags."""
        quarantine = self.path / "objects" / "quarantine"
        if not quarantine.is_dir():
            return set()
        lost = set()
        for name in {p.stem for p in quarantine.iterdir() if p.suffix == ".pack"}:
            for oid, _, _, sound in self._db.records(name, quarantine):
                if not sound and not self._db.has(oid):
                    lost.add(oid)
        return lost

    def _set_aside(self, packs: set[str]) -> builtins.list[str]:
        """Copy the sound objects of damaged packs into a new pack, then move those packs
        that are still damaged into ``objects/quarantine/``; returns their names."""
        self._db.refresh()
        packs &= set(self._db.packs()) | set(self._db.damaged_indexes())
        with self._db.writer(repack=True) as writer:
            for pack in sorted(packs):
                for kind, oid, how, raw_len, payload in self._db.salvage(pack):
                    writer.add_prepared(kind, oid, how, raw_len, payload)
        self._db.refresh()
        aside = []
        for pack in sorted(packs):
            # a pack whose every object was sound comes out of the salvage with its own
            # name (names cover headers), so the copy replaced it: then it is sound again
            sound = (
                pack not in self._db.damaged_indexes()
                and self._db.check_pack_file(pack) is None
                and not self._db.verify_pack(pack)
            )
            if not sound:
                self._db.set_aside(pack, self.path / "objects" / "quarantine")
                aside.append(pack)
        self._db.refresh()
        return aside

    def _verify(self) -> tuple[VerifyReport, set[str]]:
        """The report, and the packs to set aside (damaged payloads, headers or index)."""
        self._db.refresh()
        report = VerifyReport()
        corrupt: set[bytes] = set()
        damaged: set[str] = set()
        for pack in self._db.packs():
            bad_ids = self._db.verify_pack(pack)
            corrupt.update(bad_ids)
            why = self._db.check_pack_file(pack)
            if why:
                report.damaged_files[f"objects/packs/{pack}.pack"] = why
            if bad_ids or why:
                damaged.add(pack)
        for pack, why in self._db.damaged_indexes().items():
            report.damaged_files[f"objects/packs/{pack}.idx"] = why
            damaged.add(pack)
        corrupt |= self._lost_in_quarantine()
        report.objects_checked = len(self._db.ids())
        damaged_refs: list[Tag] = []
        refs = self._refs.all(damaged=damaged_refs)
        for tag in damaged_refs:
            report.broken_tags.append(tag)
            report.damaged_files[f"refs/{tag.name}/{tag.version}"] = "unreadable ref"
        cache: Children = {}
        for ref in refs:
            reach, missing = self.reachable([ref.model_id], cache)
            bad = (reach & corrupt) | missing
            if bad:
                report.broken_tags.append(ref.tag)
                report.missing.extend(m.hex() for m in missing - corrupt)
        self._verify_caches(refs, report)
        why = self._config_damage()
        if why:
            report.damaged_files["config.json"] = why
        report.corrupt = sorted(c.hex() for c in corrupt)
        report.missing = sorted(set(report.missing))
        report.ok = not (report.corrupt or report.broken_tags or report.damaged_files)
        return report, damaged

    def _config_damage(self) -> str | None:
        """What is wrong with config.json's remotes, or None (the format was checked
        when the store opened)."""
        from modelvault import remotes  # above the store: only when verifying

        try:
            remotes.list(store=self)
        except (InvalidInput, IntegrityError) as exc:
            return str(exc)
        return None

    def _verify_caches(self, refs: builtins.list[RefValue], report: VerifyReport) -> None:
        """Re-hash the materialised folders; drop those whose bytes or files changed."""
        for ref in refs:
            if not self._cache.folder(ref.model_id).is_dir():
                continue
            try:
                tree = ModelObject.decode(self._db.read(ref.model_id, ObjType.MODEL)).tree
            except (ModelVaultError, ValueError):
                continue  # reported as a broken tag
            why = self._cache.check_content(ref.model_id, tree)
            if why:
                self._cache.drop(ref.model_id)
                report.dropped_caches[ref.model_id.hex()] = why

    @_space_checked("gc")
    def gc(self) -> int:
        """Free what no tag reaches; returns the bytes freed (packs and caches).

        Holds the gc lock exclusively: saves, imports and pulls in flight finish first.

        Raises:
            IntegrityError: a tag reaches a missing or damaged object (nothing is freed).
        """
        with _fsutil.file_lock(self.path / "locks" / "gc.lock", shared=False):
            self._db.refresh()
            refs = self._refs.all()
            cache: Children = {}
            live, missing = self.reachable([r.model_id for r in refs], cache)
            if missing:  # what lies below an unreadable object is unknown: free nothing
                broken = [str(r.tag) for r in refs if self.reachable([r.model_id], cache)[1]]
                raise IntegrityError(
                    f"gc stopped, nothing freed: {', '.join(broken)} reach {len(missing)} "
                    "missing or damaged objects; run verify, then delete or restore those tags"
                )
            freed = self._gc_packs(live)
            freed += self._gc_leftovers({r.model_id.hex() for r in refs})
        return freed

    def _gc_packs(self, live: set[bytes]) -> int:
        """Copy the live objects of every pack holding dead ones into new packs (one
        writer: full-sized packs, durable before anything goes), then delete those packs
        and reload the index once."""
        doomed: builtins.list[str] = []
        keep: builtins.list[bytes] = []
        for pack in self._db.packs():
            entries = self._db.entries_of(pack)
            alive = [oid for oid in entries if oid in live]
            if len(alive) < len(entries):
                doomed.append(pack)
                keep += alive
        if keep:
            self._repack(keep)
        freed = sum(self._db.delete_pack(pack) for pack in doomed)
        if doomed:
            self._db.refresh()
        return freed

    def _repack(self, ids: builtins.list[bytes]) -> None:
        with self._db.writer(repack=True) as writer:
            for oid in ids:
                e, payload = self._db.read_stored(oid)
                verify_payload(oid, e, payload, None)  # never copy damage forward
                writer.add_prepared(e.kind, oid, e.codec, e.raw_len, payload)

    def _gc_leftovers(self, live_models: set[str]) -> int:
        """Remove what no tag and no in-flight work needs: packs without index and
        temporaries under ``objects/`` (no writer runs while gc holds its lock), the
        cache folders of models no tag reaches, and dead temporaries elsewhere (those
        whose in-flight lock nobody holds: see ``_fsutil.in_flight``)."""
        freed = 0
        quarantine = self.path / "objects" / "quarantine"  # packs verify set aside
        orphans = [*self._db.orphan_files(), *(quarantine.iterdir() if quarantine.is_dir() else [])]
        for path in orphans:
            with contextlib.suppress(FileNotFoundError):
                freed += path.stat().st_size
                path.unlink()
        freed += self._cache.sweep(live_models)

        def remove(path: Path) -> None:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

        _fsutil.sweep_temps(self.path / "tmp", remove)
        _fsutil.sweep_temps(self.path, remove)  # config writes
        for folder in (self.path / "refs").iterdir():  # ref writes
            _fsutil.sweep_temps(folder, remove)
        for sub, _, _ in os.walk(self.path / "remotes"):  # local copies of remote indexes
            _fsutil.sweep_temps(Path(sub), remove)
        return freed

    # -- archives and remotes (modelvault.archive, modelvault.remote) ----------
    @_space_checked("exporting {0}")
    def export_model(
        self,
        tag: str | Tag,
        dest: str,
        *,
        base: str | Tag | None = None,
        progress: Progress | None = None,
    ) -> str:
        """Write one ``.bentomodel`` archive of ``tag``; see modelvault.archive."""
        from modelvault.archive import export_model

        return export_model(self, tag, dest, base=base, progress=progress)

    @_space_checked("importing {0}")
    def import_model(self, src: ArchiveSource, *, progress: Progress | None = None) -> Model:
        """Import a ``.bentomodel`` archive; see modelvault.archive."""
        from modelvault.archive import import_model

        return import_model(self, src, progress=progress)

    def push(self, tag: str | Tag, remote: str | None = None, **kw: Any) -> TransferResult:
        """Send a model to a remote; see modelvault.remote."""
        from modelvault.remote.sync import push

        return push(self, tag, remote, **kw)

    @_space_checked("pulling {0}")
    def pull(self, tag: str | Tag, remote: str | None = None, **kw: Any) -> TransferResult:
        """Fetch a model from a remote; see modelvault.remote."""
        from modelvault.remote.sync import pull

        return pull(self, tag, remote, **kw)


def _reader_pool() -> ThreadPoolExecutor:
    """Threads that fetch and verify chunks while the caller writes them out."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(2, thread_name_prefix="modelvault-read")
