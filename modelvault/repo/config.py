"""The store's config document (``config.json``): format check, atomic updates."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelvault import _fsutil
from modelvault.errors import IntegrityError, UnsupportedFormat

__all__ = ["FORMAT_VERSION", "READABLE", "Config"]

# 4: float-codec chunks may be of sub-format 2 (Huffman planes coding mantissa bits with
# the exponent), which a format-3 reader cannot decode (the float codec is written by
# default for bf16 safetensors chunks). 3: objects/packs/ may hold multi-pack index files
# (multi-<hex>.midx) and the store may have an aliases/ folder (gc roots); 2: chunks may be
# stored with the float codec (codec 3); 1: codecs 0-2 only. A store of format 1, 2 or 3
# is read as it is (the packs' own indexes serve until a multi-pack index covers them) and
# becomes format 4 on its first write (Repository.writing), so an older modelvault says
# "upgrade" instead of failing on a chunk it cannot decode or running a gc that knows no
# aliases.
FORMAT_VERSION = 4
READABLE = frozenset({1, 2, 3, 4})

logger = logging.getLogger(__name__)


class Config:
    """``config.json`` of one store: ``{"format": 4, "remotes": {...}}``.

    A damaged config (not JSON, not a JSON object, or no numeric ``format``) does not stop
    the store opening: every read checks each object against its id, so models read as
    usual; ``verify`` reports the file (:meth:`damage`), and what needs the config (a save,
    import, pull, alias or gc, the remotes) raises the IntegrityError that says how to
    repair it.
    """

    def __init__(self, path: Path, lock: Path) -> None:
        self.path = path
        self._lock = lock
        self.format: int | None = FORMAT_VERSION  # as read by ensure(); None: damaged
        self.damaged: str | None = None  # what ensure() found wrong with it

    def ensure(self, store: Path) -> None:
        """Create the config if it is missing, then refuse a store of another format. A
        damaged config is logged and kept in :attr:`damaged` (:meth:`check` refuses).

        Raises:
            IntegrityError: the config cannot be read at all (an OSError).
            UnsupportedFormat: a newer modelvault wrote the store.
        """
        if not self.path.exists():
            _fsutil.create_only(self.path, json.dumps({"format": FORMAT_VERSION}).encode())
        doc, self.damaged = self._load()
        if doc is None:
            self.format = None
            logger.warning(
                "%s; until then models read as usual, but saves, imports, pulls, aliases, "
                "gc and remotes are refused",
                self.damaged,
            )
            return
        self.format = doc["format"]
        if self.format not in READABLE:
            raise UnsupportedFormat(f"the store at {store}", self.format, FORMAT_VERSION)

    def damage(self) -> str | None:
        """What is wrong with the config as it is now (``verify`` reports it), or None."""
        try:
            return self._load()[1]
        except IntegrityError as exc:
            return str(exc)

    def check(self) -> None:
        """Refuse what needs the store's format when :meth:`ensure` found the config
        damaged.

        Raises:
            IntegrityError: the config is damaged (the message says how to repair it).
        """
        if self.damaged is not None:
            raise IntegrityError(self.damaged)

    def make_current(self) -> None:
        """Mark the store as of :data:`FORMAT_VERSION` before writing objects of it (the
        config keeps its remotes; no-op when it is current already).

        Raises:
            IntegrityError: the config is damaged.
        """
        self.check()
        if self.format == FORMAT_VERSION:
            return

        def bump(doc: dict[str, Any]) -> None:
            doc["format"] = max(FORMAT_VERSION, int(doc.get("format", 0)))

        self.update(bump)
        self.format = FORMAT_VERSION

    def read(self) -> dict[str, Any]:
        """The config document (a JSON object with a numeric ``format``).

        Raises:
            IntegrityError: it is unreadable or damaged.
        """
        doc, why = self._load()
        if doc is None:
            raise IntegrityError(why)
        return doc

    def update(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``change`` to the config under a lock and replace it atomically.

        Raises:
            IntegrityError: the config is unreadable or damaged (nothing is written).
        """
        with _fsutil.file_lock(self._lock, shared=False):
            doc = self.read()
            change(doc)
            _fsutil.atomic_write(self.path, json.dumps(doc, indent=2).encode())

    def _load(self) -> tuple[dict[str, Any], None] | tuple[None, str]:
        """``(document, None)``, or ``(None, what is wrong with it)``.

        Raises:
            IntegrityError: the config cannot be read (an OSError).
        """
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise IntegrityError(f"{self.path} is unreadable: {exc}") from exc
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:
            return None, self._damaged(f"it is not JSON ({exc})")
        if not isinstance(doc, dict):
            return None, self._damaged(
                f"it holds {_KINDS.get(type(doc), 'a value')}, not an object"
            )
        fmt = doc.get("format")
        if isinstance(fmt, bool) or not isinstance(fmt, int):
            return None, self._damaged(f'its "format" is {fmt!r}, not a number')
        return doc, None

    def _damaged(self, why: str) -> str:
        return (
            f"{self.path} is damaged: {why}; restore it from a backup, or write "
            f'{{"format": {FORMAT_VERSION}}} and add the remotes again (`mv remote add`)'
        )


_KINDS: dict[type, str] = {
    list: "a JSON list",
    str: "a JSON string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}
