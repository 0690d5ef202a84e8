"""Repository: one local store's parts, handed out as public attributes.

The way dulwich's ``BaseRepo`` hands over ``object_store`` and ``refs``: the layers above
(archive, remote, ingest, checkout, model, store) work through these parts, and nothing
here knows of them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from modelvault import _fsutil
from modelvault.errors import InvalidInput
from modelvault.odb import PackDB, PackWriter
from modelvault.refs import RefStore
from modelvault.repo.cache import Cache
from modelvault.repo.config import Config
from modelvault.repo.layout import StoreLayout

__all__ = ["Repository"]


class Repository:
    """The parts of the store in folder ``path`` (created on first use).

    Attributes:
        path: the store's folder (absolute).
        layout: every path of the store (:class:`StoreLayout`).
        objects: the pack database (:class:`modelvault.odb.PackDB`).
        refs: the refs (:class:`modelvault.refs.RefStore`).
        config: ``config.json`` (:class:`Config`).
        cache: the materialised model folders (:class:`modelvault.repo.cache.Cache`).

    Raises:
        InvalidInput: ``path`` is not a folder.
        UnsupportedFormat: a newer modelvault wrote the store.
        IntegrityError: the config cannot be read (a damaged one opens: ``config.damaged``).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.layout = StoreLayout(path)
        if path.exists() and not path.is_dir():
            raise InvalidInput(f"{path} exists and is not a folder")
        for folder in self.layout.folders():
            folder.mkdir(parents=True, exist_ok=True)
        self.config = Config(self.layout.config, self.layout.config_lock)
        self.config.ensure(path)
        self.objects = PackDB(self.layout.objects)
        self.refs = RefStore(self.layout.refs)
        self.cache = Cache(self.layout.cache, self.objects, self.layout.cache_locks)

    def __repr__(self) -> str:
        return f"Repository({str(self.path)!r})"

    @contextlib.contextmanager
    def gc_lock(self, *, shared: bool) -> Iterator[None]:
        """Hold the gc lock: shared by writers and verify, exclusive by gc."""
        with _fsutil.file_lock(self.layout.gc_lock, shared=shared):
            yield

    @contextlib.contextmanager
    def writing(self) -> Iterator[PackWriter]:
        """A pack writer, holding the gc lock shared so gc never frees what it reaches.

        The writer commits when the block ends normally and aborts otherwise. (An import
        keeps all its packs hidden until commit with ``PackWriter.publish_at_commit()``.)
        """
        self.config.make_current()  # what it writes may need the current format
        with self.gc_lock(shared=True):
            self.objects.refresh()
            with self.objects.writer() as writer:
                yield writer

    def remote_cache(self, key: str) -> Path:
        """The folder of a remote's local copies of indexes and refs (``remotes/<key>``)."""
        return self.layout.remotes / key

    def staging(self) -> contextlib.AbstractContextManager[Path]:
        """A fresh in-flight temporary path in ``tmp/`` (gc in any process leaves it)."""
        return _fsutil.in_flight(self.layout.tmp, ".staging")


def open_repository(path: str | os.PathLike[str]) -> Repository:
    """The repository in ``path`` (absolute, ``~`` expanded)."""
    return Repository(Path(path).expanduser().absolute())
