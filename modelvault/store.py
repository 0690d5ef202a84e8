"""Store: the façade over one store folder — save, get, list, delete, gc, verify, stats.

It resolves tags and remotes, wraps results into :class:`~modelvault.model.Model`\\ s, and
hands the work to the layers below, which work on its :class:`~modelvault.repo.Repository`
(``store.repo``: ``.objects``, ``.refs``, ``.config``, ``.cache``, ``.layout``).
The layout is in docs/format.md (normative).
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from modelvault import _fsutil
from modelvault.aliases import AliasStore, check_alias, parse_alias
from modelvault.checkout import reader_pool, write_tree
from modelvault.errors import InvalidInput, InvalidTag, NotFound, PathNotFound
from modelvault.ingest import Progress
from modelvault.model import Model, find
from modelvault.refs import warn_damaged
from modelvault.repo import Repository, maintenance
from modelvault.repo.config import FORMAT_VERSION
from modelvault.repo.layout import default_home
from modelvault.repo.maintenance import StoreStats, VerifyReport
from modelvault.saving import commit, new_tag, save_options
from modelvault.tags import Tag

if TYPE_CHECKING:
    from modelvault.archive import ArchiveSource
    from modelvault.archive.bentoml.migrate import StoreStep as BentoStoreStep
    from modelvault.remote.maintenance import RemoteVerifyReport
    from modelvault.remote.sync import TransferResult

__all__ = ["FORMAT_VERSION", "ModelRef", "Store", "StoreStats", "VerifyReport"]


@dataclass
class ModelRef:
    """What ``create()`` yields: an empty staging ``path`` to write the model's files into."""

    tag: Tag
    path: str
    model: Model | None = None

    def __str__(self) -> str:
        return str(self.tag)


_F = TypeVar("_F", bound=Callable[..., Any])


def _space_checked(op: str) -> Callable[[_F], _F]:
    """Report a full disk during the method as DiskFull naming ``op`` (formatted with the
    call's positional arguments); see ``_fsutil.reports_disk_full``."""

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def checked(self: Store, *args: Any, **kwargs: Any) -> Any:
            with _fsutil.reports_disk_full(op.format(*args), self.path):
                return fn(self, *args, **kwargs)

        return checked  # type: ignore[return-value]

    return wrap


def _usable_path(what: str, path: object) -> Path:
    """``path`` as a Path; InvalidInput when it is not a path or is empty (``Path("")``
    would mean the current folder, which nobody means by an empty string)."""
    if not isinstance(path, str | os.PathLike) or isinstance(path, bytes):
        raise InvalidInput(f"{what} needs a folder path (str or os.PathLike), not {path!r}")
    if not os.fspath(path):
        raise InvalidInput(f"{what} got an empty path: give a folder, e.g. '.' for this one")
    return Path(path)


class Store:
    """A modelvault store in one folder (created on first use).

    ``store.repo`` is its :class:`~modelvault.repo.Repository`, whose parts the layers
    below work through.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        folder = default_home() if path is None else _usable_path("Store", path)
        self.path = folder.expanduser().absolute()
        self.repo = Repository(self.path)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- config ----------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """The store's config document."""
        return self.repo.config.read()

    def update_config(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``change`` to the config under a lock and replace it atomically."""
        self.repo.config.update(change)

    # -- writing ---------------------------------------------------------------
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
            DiskFull: the disk filled up (nothing was published).
        """
        src = _usable_path("save", path)
        if not src.exists():
            raise PathNotFound(
                f"cannot save {src}: no such file or folder; give the path of an existing one"
            )
        t = new_tag(self.repo, tag)
        opts = save_options(
            labels=labels,
            metadata=metadata,
            custom_objects=custom_objects,
            signatures=signatures,
            module=module,
            options=options,
            context=context,
            default_signatures=_default_signatures,
        )
        with _fsutil.reports_disk_full(f"saving {t}", self.path):
            ref = commit(self.repo, t, opts, lambda ing: ing.store_path(src), progress)
        return Model(self.repo, ref)

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
        t = new_tag(self.repo, tag)
        opts = save_options(
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
        with self.repo.staging() as staging:
            staging.mkdir()
            try:
                ref = ModelRef(t, str(staging))
                yield ref
                with _fsutil.reports_disk_full(f"saving {t}", self.path):
                    value = commit(self.repo, t, opts, lambda ing: ing.store_tree(staging))
                ref.model = Model(self.repo, value)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    # -- reading ---------------------------------------------------------------
    def get(self, tag: str | Tag) -> Model:
        """The model a tag names (``name`` or ``name:latest`` = newest; ``name@alias`` =
        the version the alias names now).

        Raises:
            InvalidTag: bad tag syntax.
            NotFound: no such name or version.
        """
        return find(self.repo, tag)

    def list(self, name: str | Tag | None = None) -> builtins.list[Model]:
        """Every model (or every version of ``name``), newest first.

        Damaged refs are skipped and named in one logged warning (``modelvault.refs``).
        """
        damaged: builtins.list[Tag] = []
        if name is None:
            refs = self.repo.refs.all(damaged)
        else:
            refs = self.repo.refs.versions(Tag.coerce(name).name, damaged)
        warn_damaged(damaged)
        return [Model(self.repo, r) for r in refs]

    def delete(self, tag: str | Tag) -> None:
        """Remove one version's ref, or every version of a bare name.

        Stored bytes are freed by :meth:`gc`, never while another ref reaches them.

        Raises:
            NotFound: no such name or version.
            ModelExists: an alias names the version (or one of the name's versions):
                nothing is deleted.
            InvalidInput: ``tag`` is ``name@alias`` (use :meth:`remove_alias`).
        """
        if parse_alias(tag) is not None:
            raise InvalidInput(
                f"{tag} is an alias: remove it with remove_alias (`mv alias remove {tag}`); "
                "delete takes NAME or NAME:VERSION"
            )
        refs = self.repo.refs
        t = Tag.coerce(tag)
        if t.version is not None and t.version != "latest":
            with self._aliases().deleting([t]):
                refs.delete(t)
            return
        if t.version == "latest":
            target = refs.resolve(t).tag
            with self._aliases().deleting([target]):
                refs.delete(target)
            return
        damaged: builtins.list[Tag] = []  # a bare name removes its damaged refs too
        targets = [r.tag for r in refs.versions(t.name, damaged)] + damaged
        if not targets:
            raise NotFound(f"no model named {t.name!r} in the store: `mv list` shows the models")
        with self._aliases().deleting(targets):
            for target in targets:
                with contextlib.suppress(NotFound):
                    refs.delete(target)

    # -- aliases (modelvault.aliases) ------------------------------------------
    def _aliases(self) -> AliasStore:
        layout = self.repo.layout
        return AliasStore(layout.aliases, layout.alias_lock, self.repo.refs)

    def set_alias(self, tag: str | Tag, alias: str) -> Tag:
        """Point ``name@alias`` at the version ``tag`` names now (``name``: the newest) and
        return that version's Tag; an existing alias is replaced atomically.

        Raises:
            InvalidTag: the alias breaks the version grammar.
            NotFound: no such version.
        """
        alias = check_alias(alias)
        exact = self.get(tag).tag
        self.repo.config.make_current()  # a modelvault that knows no aliases refuses the store
        return self._aliases().set(exact, alias).tag

    def aliases(self, name: str | Tag | None = None) -> dict[str, Tag]:
        """``{"name@alias": Tag}`` of every alias (of ``name``), sorted; damaged aliases
        are skipped and named in one logged warning (``modelvault.aliases``)."""
        only = None if name is None else Tag.coerce(name).name
        return {v.key: v.tag for v in self._aliases().all(only)}

    def remove_alias(self, alias: str) -> None:
        """Remove ``name@alias`` (the version stays).

        Raises:
            InvalidTag: not a ``name@alias``.
            NotFound: no such alias.
        """
        named = parse_alias(alias)
        if named is None:
            raise InvalidTag(f"{alias!r} is not an alias: give name@alias, e.g. iris_clf@prod")
        self._aliases().remove(*named)

    def aliases_remote(
        self, remote: str | None = None, name: str | Tag | None = None
    ) -> dict[str, Tag]:
        """``{"name@alias": Tag}`` of a remote's aliases (as :meth:`push` names it), of
        ``name`` if given; ``{}`` for an empty or new remote."""
        from modelvault import remotes
        from modelvault.remote.aliases import aliases_remote

        url, options = remotes.resolve(remote, store=self)
        only = None if name is None else Tag.coerce(name).name
        return aliases_remote(self.repo, url, options, name=only, spec=remotes.chosen(remote))

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
            with reader_pool() as pool:
                write_tree(self.repo.objects, model.object.tree, tmp, pool, progress)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsutil.fsync_dir(target.parent)
        return target

    # -- maintenance -----------------------------------------------------------
    def stats(self) -> StoreStats:
        """Tags, logical bytes over all tags, and bytes the objects take on disk."""
        damaged: builtins.list[Tag] = []
        refs = self.repo.refs.all(damaged)
        warn_damaged(damaged)
        return maintenance.stats(self.repo, refs)

    @_space_checked("verify")
    def verify(self, *, progress: maintenance.StepCallback | None = None) -> VerifyReport:
        """Re-hash every stored object; report damaged ids and the tags they break
        (``ok``, ``corrupt``, ``missing``, ``broken_tags``, ``damaged_files``); damaged
        packs are set aside once their sound objects are copied (see repo.maintenance).
        ``progress`` hears of each pack checked (``maintenance.Step``)."""
        return maintenance.verify(self.repo, self._config_damage, progress)

    def _config_damage(self) -> str | None:
        """What is wrong with config.json's remotes, or None."""
        from modelvault import remotes

        return remotes.damage(store=self)

    @_space_checked("gc")
    def gc(self, *, progress: maintenance.StepCallback | None = None) -> int:
        """Free what no tag reaches; returns the bytes freed (packs and caches).
        ``progress`` hears of marking, repacking and deleting (``maintenance.Step``).

        Raises:
            IntegrityError: a tag reaches a missing or damaged object (nothing is freed).
        """
        return maintenance.gc(self.repo, progress)

    # -- archives and remotes (modelvault.archive, modelvault.remote) ----------
    def export_model(
        self,
        tag: str | Tag,
        dest: str,
        *,
        base: str | Tag | None = None,
        progress: Progress | None = None,
        output_format: str = "modelvault",
    ) -> str:
        """Write one ``.bentomodel`` archive of ``tag``; see modelvault.archive.

        ``output_format="modelvault"`` (the default) writes modelvault's own verified
        packfile archive, which BentoML cannot read; ``"bentoml"`` writes the tar + xz
        archive ``bentoml models import`` reads (modelvault.archive.bentoml.writer).

        Raises:
            InvalidInput: an unknown ``output_format``, or ``base`` with ``"bentoml"``.
            DiskFull: the destination's disk filled up (no partial archive is left).
        """
        from modelvault.archive import export_model

        if output_format not in ("modelvault", "bentoml"):
            raise InvalidInput(
                f"output_format {output_format!r} is unknown: use 'modelvault' (the default) "
                "or 'bentoml'"
            )
        if output_format == "bentoml" and base is not None:
            raise InvalidInput("a BentoML archive is always whole: export it without base")
        ref = self.get(tag).ref
        base_ref = None if base is None else self.get(base).ref
        local = "://" not in str(dest) or str(dest).startswith("file://")
        where = Path(str(dest).removeprefix("file://")).absolute() if local else self.path
        with _fsutil.reports_disk_full(
            f"exporting {ref.tag} to {dest}",
            where,
            "Free space at the destination, or export to another disk, and try again",
        ):
            if output_format == "bentoml":
                from modelvault.archive.bentoml.writer import export_bentoml

                return export_bentoml(self.repo, ref, dest, progress=progress)
            return export_model(self.repo, ref, dest, base=base_ref, progress=progress)

    @_space_checked("importing {0}")
    def import_model(self, src: ArchiveSource, *, progress: Progress | None = None) -> Model:
        """Import a ``.bentomodel`` archive, modelvault's own or any format BentoML's
        ``models export`` writes (told apart by content); see modelvault.archive."""
        from modelvault.archive import import_model

        return Model(self.repo, import_model(self.repo, src, progress=progress))

    @_space_checked("importing the BentoML model store")
    def import_bentoml_store(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        step: Callable[[BentoStoreStep], None] | None = None,
        progress: Progress | None = None,
    ) -> builtins.list[Model]:
        """Import every model of a BentoML model store (default ``$BENTOML_HOME/models``,
        else ``~/bentoml/models``) with its version and creation time; returns the models
        imported now (a second run imports nothing). See modelvault.archive.bentoml.migrate.
        """
        from modelvault.archive.bentoml.migrate import import_bentoml_store

        refs = import_bentoml_store(self.repo, path, step=step, progress=progress)
        return [Model(self.repo, ref) for ref in refs]

    def push(self, tag: str | Tag, remote: str | None = None, **kw: Any) -> TransferResult:
        """Send a model to a remote (a configured name or a URL; by default
        ``$MODELVAULT_REMOTE``, else ``origin``); see modelvault.remote.sync.push."""
        from modelvault import remotes
        from modelvault.remote.sync import push

        named = parse_alias(tag)  # name@alias: push its version, then move the remote alias
        model = self.get(tag)
        url, options = remotes.resolve(remote, store=self)
        if named is not None:
            kw["alias"] = named[1]
        return push(self.repo, model.tag, url, options, spec=remotes.chosen(remote), **kw)

    @_space_checked("pulling {0}")
    def pull(self, tag: str | Tag, remote: str | None = None, **kw: Any) -> TransferResult:
        """Fetch a model from a remote (as :meth:`push` names it); see
        modelvault.remote.sync.pull."""
        from modelvault import remotes
        from modelvault.remote.sync import pull

        named = parse_alias(tag)  # name@alias: the version the remote's alias names
        t = Tag(named[0]) if named is not None else Tag.coerce(tag)
        url, options = remotes.resolve(remote, store=self)
        if named is not None:
            kw["alias"] = named[1]
        return pull(self.repo, t, url, options, spec=remotes.chosen(remote), **kw)

    def list_remote(self, remote: str | None = None, name: str | None = None) -> builtins.list[Tag]:
        """The tags a remote (as :meth:`push` names it) holds, of ``name`` if given, newest
        first; ``[]`` for an empty or new remote."""
        from modelvault import remotes
        from modelvault.remote.sync import list_remote

        url, options = remotes.resolve(remote, store=self)
        return list_remote(self.repo, url, options, name=name, spec=remotes.chosen(remote))

    # -- remote maintenance (modelvault.remote.maintenance, .locks) -------------
    def delete_remote(self, tag: str | Tag, remote: str | None = None) -> builtins.list[str]:
        """Remove a tag from a remote (as :meth:`push` names it): ``name:version``,
        ``name`` (all its versions) or ``name@alias`` (that alias only); returns what
        was removed. Its objects are freed by :meth:`gc_remote`.

        Raises:
            NotFound: the remote holds no such tag or alias.
            ModelExists: an alias there points at a version to remove (nothing removed).
        """
        from modelvault import remotes
        from modelvault.remote.maintenance import delete_remote

        url, options = remotes.resolve(remote, store=self)
        return delete_remote(self.repo, tag, url, options, spec=remotes.chosen(remote))

    def gc_remote(self, remote: str | None = None, **kw: Any) -> int:
        """Free a remote's objects no remote tag or alias reaches; returns the bytes freed
        (given back when it returns). Safe beside pushes from other machines (remote
        locks, docs/remotes.md); see modelvault.remote.maintenance.gc_remote."""
        from modelvault import remotes
        from modelvault.remote.maintenance import gc_remote

        url, options = remotes.resolve(remote, store=self)
        return gc_remote(self.repo, url, options, spec=remotes.chosen(remote), **kw)

    def verify_remote(self, remote: str | None = None, **kw: Any) -> RemoteVerifyReport:
        """Re-hash a remote's objects; a report like :meth:`verify`'s (``ok``,
        ``corrupt``, ``broken_tags``; also ``broken_aliases`` and ``damaged_files``)."""
        from modelvault import remotes
        from modelvault.remote.verify import verify_remote

        url, options = remotes.resolve(remote, store=self)
        return verify_remote(self.repo, url, options, spec=remotes.chosen(remote), **kw)

    def unlock_remote(self, remote: str | None = None, *, everything: bool = False) -> int:
        """Remove a remote's stale locks (``everything``: all its locks, to break the lock
        of a machine known to be dead); returns how many. See docs/remotes.md, Locks."""
        from modelvault import remotes
        from modelvault.remote.locks import unlock
        from modelvault.remote.session import open_session

        url, options = remotes.resolve(remote, store=self)
        s = open_session(self.repo, url, options, remotes.chosen(remote), 1)
        return len(unlock(s.repo.t, everything=everything))
