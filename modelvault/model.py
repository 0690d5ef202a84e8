"""Model: one saved version, read lazily from the store."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelvault import _fsutil
from modelvault.aliases import AliasStore, parse_alias
from modelvault.checkout import FileReader, materialise, reader_pool
from modelvault.core.objects import KIND_TREE, ModelObject
from modelvault.errors import IntegrityError, InvalidInput, NotFound
from modelvault.odb.reading import lookup, read_file_object, read_model
from modelvault.refs import RefValue
from modelvault.repo import Repository
from modelvault.tags import Tag

if TYPE_CHECKING:
    from modelvault.runner import Runner

__all__ = ["Model", "ModelInfo", "find", "micros_to_datetime"]


@dataclass(frozen=True)
class ModelInfo:
    """What was saved with a model besides its files (read-only)."""

    name: str
    version: str
    module: str
    labels: dict[str, str]
    metadata: dict[str, Any]
    options: dict[str, Any]
    context: dict[str, Any]
    signatures: dict[str, dict[str, Any]]
    api_version: str
    creation_time: dt.datetime

    @property
    def tag(self) -> Tag:
        return Tag(self.name, self.version)


def micros_to_datetime(micros: int) -> dt.datetime:
    """A timezone-aware UTC datetime from microseconds since the epoch."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return epoch + dt.timedelta(microseconds=micros)


class Model:
    """A saved model: ``tag``, ``info``, ``path``, ``custom_objects``, ``id``, ``size``, ``open()``.

    Its metadata is read from the store on first use; its files are written out
    (once, into the store's cache) only when ``path`` is asked for.
    """

    def __init__(self, repo: Repository, ref: RefValue) -> None:
        self.repo = repo
        self.tag: Tag = ref.tag
        self._oid = ref.model_id
        self.ref = ref

    def __repr__(self) -> str:
        return f"Model(tag={str(self.tag)!r}, path={str(self.repo.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and (self.tag, self._oid) == (other.tag, other._oid)

    def __hash__(self) -> int:
        return hash((self.tag, self._oid))

    @property
    def id(self) -> str:
        """Hex content id of the model object: equal ids mean the same model, byte for byte."""
        return self._oid.hex()

    @cached_property
    def object(self) -> ModelObject:
        """The decoded model object (read from the store on first use)."""
        try:
            return read_model(self.repo.objects, self._oid)
        except IntegrityError as exc:
            raise IntegrityError(f"model object of {self.tag}: {exc}") from exc

    @cached_property
    def info(self) -> ModelInfo:
        """Name, version, module, labels, metadata, options, context, signatures, times."""
        o = self.object
        return ModelInfo(
            name=o.name,
            version=o.version,
            module=o.module,
            labels=dict(o.labels),
            metadata=dict(o.metadata),
            options=dict(o.options),
            context=dict(o.context),
            signatures={k: dict(v) for k, v in o.signatures.items()},
            api_version=o.api_version,
            creation_time=micros_to_datetime(o.creation_time),
        )

    @property
    def creation_time(self) -> dt.datetime:
        """When the model was saved (UTC); read from the ref, no pack access."""
        return micros_to_datetime(self.ref.created)

    @property
    def module(self) -> str:
        """The flavour that saved the model (``info.module``), from the ref when it says."""
        return self.ref.module if self.ref.module is not None else self.object.module

    @property
    def size(self) -> int:
        """Logical bytes: the sum of the sizes of the model's files."""
        return self.ref.size if self.ref.size is not None else self.object.size

    @property
    def path(self) -> str:
        """A read-only local folder holding the model's files exactly as saved.

        Written into the store's cache on first access and reused afterwards, unless its
        files changed since: then it is written afresh (see ``repo.cache``).
        """
        with (
            _fsutil.reports_disk_full("writing out the model folder (Model.path)", self.repo.path),
            reader_pool() as pool,
        ):
            folder = materialise(
                self.repo.cache, self.repo.objects, self._oid, lambda: self.object.tree, pool
            )
        return str(folder)

    def path_of(self, relpath: str) -> str:
        """The local path of one of the model's files (materialising the folder)."""
        return str(Path(self.path) / relpath)

    def open(self, relpath: str) -> FileReader:
        """A binary stream of one of the model's files, without materialising the folder.

        Raises:
            NotFound: no such file in the model.
        """
        if not isinstance(relpath, str) or not relpath:
            raise InvalidInput(f"open() takes the relative path of a file, not {relpath!r}")
        db = self.repo.objects
        kind, oid = lookup(db, self.object.tree, relpath)
        if kind == KIND_TREE:
            raise NotFound(f"{relpath!r} is a folder in {self.tag}, not a file")
        return FileReader(db, read_file_object(db, oid), relpath)

    @cached_property
    def custom_objects(self) -> dict[str, Any]:
        """The custom objects saved with the model, unpickled on first access."""
        oid = self.object.custom_objects
        if oid is None:
            return {}
        import cloudpickle

        db = self.repo.objects
        with FileReader(db, read_file_object(db, oid)) as f:
            loaded = cloudpickle.load(f)
        if not isinstance(loaded, dict):
            raise IntegrityError(f"custom objects of {self.tag} are not a dict")
        return loaded

    def to_runner(self, *, max_batch_size: int = 100, max_latency_ms: int = 10000) -> Runner:
        """A Runner serving this exact version (see docs/runner.md)."""
        from modelvault.runner import Runner

        return Runner(self, max_batch_size=max_batch_size, max_latency_ms=max_latency_ms)


def find(repo: Repository, tag: str | Tag | Model) -> Model:
    """The model a tag names in ``repo``: ``name`` or ``name:latest`` the newest version,
    ``name:version`` that version (or the one version it is a unique prefix of),
    ``name@alias`` the version the alias names now; a Model is returned as it is.

    Raises:
        InvalidTag: bad tag syntax.
        NotFound: no such name, version or alias.
    """
    if isinstance(tag, Model):
        return tag
    named = parse_alias(tag)  # name@alias: the version it names now
    if named is not None:
        layout = repo.layout
        return Model(repo, AliasStore(layout.aliases, layout.alias_lock, repo.refs).resolve(*named))
    return Model(repo, repo.refs.resolve(Tag.coerce(tag)))
