"""Model functions on the default store (``$MODELVAULT_HOME``, else ``~/modelvault``).

The store is looked up at each call, so changing ``$MODELVAULT_HOME`` takes
effect immediately (tests point it at a temporary folder).
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelvault.model import Model
from modelvault.repo.layout import default_home
from modelvault.store import ModelRef, Store
from modelvault.tags import Tag

if TYPE_CHECKING:
    from modelvault.archive import ArchiveSource
    from modelvault.remote.maintenance import RemoteVerifyReport
    from modelvault.remote.sync import TransferResult

__all__ = [
    "aliases",
    "aliases_remote",
    "create",
    "default_store",
    "delete",
    "delete_remote",
    "export_model",
    "gc_remote",
    "get",
    "import_bentoml_store",
    "import_model",
    "list",
    "list_remote",
    "pull",
    "push",
    "remove_alias",
    "save",
    "set_alias",
    "verify_remote",
]

_stores: dict[Path, Store] = {}


def default_store() -> Store:
    """The Store at ``$MODELVAULT_HOME`` (else ``~/modelvault``), opened once per path."""
    path = default_home().expanduser().absolute()
    store = _stores.get(path)
    if store is None or not store.path.is_dir():
        store = _stores[path] = Store(path)
    return store


@contextlib.contextmanager
def create(
    tag: str | Tag,
    *,
    labels: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    custom_objects: Mapping[str, Any] | None = None,
    signatures: Mapping[str, Mapping[str, Any]] | None = None,
    module: str = "",
    options: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> Iterator[ModelRef]:
    """See :meth:`Store.create`."""
    with default_store().create(
        tag,
        labels=labels,
        metadata=metadata,
        custom_objects=custom_objects,
        signatures=signatures,
        module=module,
        options=options,
        context=context,
    ) as ref:
        yield ref


def save(
    path: str | os.PathLike[str],
    tag: str | Tag,
    *,
    labels: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    custom_objects: Mapping[str, Any] | None = None,
    signatures: Mapping[str, Mapping[str, Any]] | None = None,
    module: str = "",
) -> Model:
    """See :meth:`Store.save`."""
    return default_store().save(
        path,
        tag,
        labels=labels,
        metadata=metadata,
        custom_objects=custom_objects,
        signatures=signatures,
        module=module,
    )


def get(tag: str | Tag) -> Model:
    """See :meth:`Store.get`."""
    return default_store().get(tag)


def list(name: str | Tag | None = None) -> builtins.list[Model]:
    """See :meth:`Store.list`."""
    return default_store().list(name)


def delete(tag: str | Tag) -> None:
    """See :meth:`Store.delete`."""
    default_store().delete(tag)


def export_model(
    tag: str | Tag,
    dest: str,
    *,
    base: str | Tag | None = None,
    progress: Callable[[int], None] | None = None,
    output_format: str = "modelvault",
) -> str:
    """See :meth:`Store.export_model` (``output_format="bentoml"``: an archive BentoML
    reads)."""
    return default_store().export_model(
        tag, dest, base=base, progress=progress, output_format=output_format
    )


def import_model(src: ArchiveSource, *, progress: Callable[[int], None] | None = None) -> Model:
    """See :func:`modelvault.archive.import_model`."""
    return default_store().import_model(src, progress=progress)


def import_bentoml_store(path: str | os.PathLike[str] | None = None) -> builtins.list[Model]:
    """See :meth:`Store.import_bentoml_store`: import every model of a BentoML model store
    (default ``$BENTOML_HOME/models``, else ``~/bentoml/models``)."""
    return default_store().import_bentoml_store(path)


def push(tag: str | Tag, remote: str | None = None, **kw: Any) -> TransferResult:
    """See :meth:`Store.push`."""
    return default_store().push(tag, remote, **kw)


def pull(tag: str | Tag, remote: str | None = None, **kw: Any) -> TransferResult:
    """See :meth:`Store.pull`."""
    return default_store().pull(tag, remote, **kw)


def list_remote(remote: str | None = None, name: str | None = None) -> builtins.list[Tag]:
    """See :meth:`Store.list_remote`: the tags a remote holds (``[]`` for an empty or new
    remote)."""
    return default_store().list_remote(remote, name)


def set_alias(tag: str | Tag, alias: str) -> Tag:
    """See :meth:`Store.set_alias`: point ``name@alias`` at the version ``tag`` names now."""
    return default_store().set_alias(tag, alias)


def aliases(name: str | Tag | None = None) -> dict[str, Tag]:
    """See :meth:`Store.aliases`: ``{"name@alias": Tag}``."""
    return default_store().aliases(name)


def remove_alias(alias: str) -> None:
    """See :meth:`Store.remove_alias`."""
    default_store().remove_alias(alias)


def aliases_remote(remote: str | None = None, name: str | Tag | None = None) -> dict[str, Tag]:
    """See :meth:`Store.aliases_remote`: a remote's ``{"name@alias": Tag}``."""
    return default_store().aliases_remote(remote, name)


def delete_remote(tag: str | Tag, remote: str | None = None) -> builtins.list[str]:
    """See :meth:`Store.delete_remote`: remove a tag (or ``name@alias``) from a remote."""
    return default_store().delete_remote(tag, remote)


def gc_remote(remote: str | None = None, **kw: Any) -> int:
    """See :meth:`Store.gc_remote`: free what no remote tag or alias reaches."""
    return default_store().gc_remote(remote, **kw)


def verify_remote(remote: str | None = None, **kw: Any) -> RemoteVerifyReport:
    """See :meth:`Store.verify_remote`: re-hash a remote's objects."""
    return default_store().verify_remote(remote, **kw)
