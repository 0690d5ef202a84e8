"""Every path of a local store and every key of a remote, in one place (docs/format.md
sections 3 and 11 are normative)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from modelvault.tags import Tag

__all__ = [
    "ALIASES",
    "CATALOGUE",
    "CATALOGUE_KEY",
    "CHECKED",
    "LOCKS",
    "MARKER",
    "PACKS",
    "PACK_INDEX_KEY",
    "REFS",
    "StoreLayout",
    "alias_key",
    "catalogue_key",
    "default_home",
    "index_key",
    "lock_key",
    "pack_key",
    "ref_key",
]


def default_home() -> Path:
    """The default store's folder: ``$MODELVAULT_HOME``, else ``~/modelvault`` (read at
    each call, so a process can point it elsewhere)."""
    home = os.environ.get("MODELVAULT_HOME")
    return Path(home) if home else Path.home() / "modelvault"


@dataclass(frozen=True)
class StoreLayout:
    """The paths of a local store under ``root`` (docs/format.md section 3)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    @property
    def quarantine(self) -> Path:
        """Damaged packs set aside by verify, freed by gc."""
        return self.objects / "quarantine"

    @property
    def refs(self) -> Path:
        return self.root / "refs"

    @property
    def aliases(self) -> Path:
        """Movable names: ``aliases/<name>/<alias>`` (issue 19; made on first use)."""
        return self.root / "aliases"

    @property
    def cache(self) -> Path:
        """Materialised model folders and their stat manifests."""
        return self.root / "cache"

    @property
    def tmp(self) -> Path:
        """Staging folders of models being created."""
        return self.root / "tmp"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def gc_lock(self) -> Path:
        """Writers hold it shared, gc exclusive."""
        return self.locks / "gc.lock"

    @property
    def config_lock(self) -> Path:
        return self.locks / "config.lock"

    @property
    def alias_lock(self) -> Path:
        """Alias writers and version deletes hold it (modelvault/aliases.py)."""
        return self.locks / "aliases.lock"

    @property
    def cache_locks(self) -> Path:
        """One writer of a materialised folder at a time: ``locks/cache/<model id>``."""
        return self.locks / "cache"

    @property
    def remotes(self) -> Path:
        """Local copies of remotes' indexes and refs: ``remotes/<key>/``."""
        return self.root / "remotes"

    def folders(self) -> tuple[Path, ...]:
        """The folders every store has (made when it is opened)."""
        return (self.objects, self.refs, self.cache, self.tmp, self.locks)


# -- remote keys, relative to the remote's URL prefix (docs/format.md section 11) -------

MARKER = "modelvault.json"  # {"format": 1}, written create-only by the first push
PACKS = "packs"
REFS = "refs"
ALIASES = "aliases"  # aliases/<name>/<alias>: which version a remote alias names
LOCKS = "locks"  # locks/<id>: remote gc (exclusive) and push (shared) locks
CATALOGUE = "index"  # consolidated index files of many packs (remote catalogue)
CHECKED = "checked"  # local cache only: refs whose values a pull read from their model
PACK_INDEX_KEY = re.compile(r"packs/([0-9a-f]{64})\.idx")


def pack_key(name: str) -> str:
    return f"{PACKS}/{name}.pack"


CATALOGUE_KEY = re.compile(r"index/([0-9a-f]{64})\.cat")


def catalogue_key(name: str) -> str:
    """A remote catalogue: the indexes of many packs in one file (docs/format.md 11.11)."""
    return f"{CATALOGUE}/{name}.cat"


def index_key(name: str) -> str:
    return f"{PACKS}/{name}.idx"


def ref_key(tag: Tag) -> str:
    return f"{REFS}/{tag.name}/{tag.version}"


def alias_key(name: str, alias: str) -> str:
    return f"{ALIASES}/{name}/{alias}"


def lock_key(lock_id: str) -> str:
    return f"{LOCKS}/{lock_id}"
