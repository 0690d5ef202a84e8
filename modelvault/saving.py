"""Saving a model: what is saved beside the files checked before any byte is written,
the files ingested, the model object written, and only then the ref published."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from modelvault.core.hashing import ObjType
from modelvault.core.objects import ModelObject
from modelvault.errors import InvalidInput, ModelExists, ModelVaultError, NotFound
from modelvault.ingest import Ingester, Parent, Progress
from modelvault.modelinfo import build_context, check_labels, check_storable, normalise_signatures
from modelvault.odb.reading import read_model
from modelvault.refs import RefValue
from modelvault.repo import Repository
from modelvault.tags import Tag, new_version

__all__ = ["SaveOptions", "commit", "new_tag", "save_options"]

StoreFiles = Callable[[Ingester], tuple[bytes, int]]  # -> (tree id, logical size)


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


def save_options(
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
    """Check and normalise what is saved beside the files.

    Raises:
        InvalidInput: something that cannot be stored (also a ValueError).
    """
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
        signatures=normalise_signatures(signatures, default_signatures or {}),
        options=check_storable("options", options),
        context=check_storable("context", context or build_context()),
        module=module,
        custom_objects=pickled,
    )


def new_tag(repo: Repository, tag: str | Tag) -> Tag:
    """The tag a save publishes: a new version for a bare name.

    Raises:
        InvalidTag: bad syntax.
        ModelExists: that ``name:version`` exists already.
    """
    t = Tag.coerce(tag)
    t = Tag(t.name, new_version()) if t.is_latest else t
    with contextlib.suppress(NotFound):
        repo.refs.read(t)
        raise ModelExists(
            f"model {t} already exists: versions are immutable; "
            "save without a version to get a new one"
        )
    return t


def _parent(repo: Repository, name: str) -> Parent | None:
    """The newest version of ``name``: a new version's files are compared with its
    files' chunks (``odb.known``). None if there is none or it cannot be read."""
    try:
        versions = repo.refs.versions(name, damaged=[])
        if not versions:
            return None
        model = read_model(repo.objects, versions[0].model_id)
    except (ModelVaultError, ValueError):
        return None
    return Parent(repo.objects, model.tree)


def commit(
    repo: Repository,
    tag: Tag,
    opts: SaveOptions,
    store_files: StoreFiles,
    progress: Progress | None = None,
) -> RefValue:
    """Store the files, then the model object, then publish the ref; returns the ref.

    Raises:
        ModelExists: the same ``name:version`` was saved concurrently.
    """
    with repo.writing() as writer:
        ingester = Ingester(writer, progress, _parent(repo, tag.name))
        try:
            tree, size = store_files(ingester)
            co = ingester.store_bytes(opts.custom_objects) if opts.custom_objects else None
        finally:
            ingester.close()
        obj = ModelObject(
            name=tag.name,
            version=str(tag.version),
            module=opts.module,
            tree=tree,
            size=size,
            creation_time=time.time_ns() // 1000,
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
        if not repo.refs.create(ref):
            raise ModelExists(f"model {tag} already exists (saved concurrently)")
    return ref
