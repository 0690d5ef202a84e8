"""The store's config document (``config.json``): format check, atomic updates."""

from __future__ import annotations

import json
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


class Config:
    """``config.json`` of one store: ``{"format": 4, "remotes": {...}}``."""

    def __init__(self, path: Path, lock: Path) -> None:
        self.path = path
        self._lock = lock
        self.format = FORMAT_VERSION  # as read by ensure()

    def ensure(self, store: Path) -> None:
        """Create the config if it is missing, then refuse a store of another format.

        Raises:
            IntegrityError: the config is unreadable or has no numeric format.
            UnsupportedFormat: a newer modelvault wrote the store.
        """
        if not self.path.exists():
            _fsutil.create_only(self.path, json.dumps({"format": FORMAT_VERSION}).encode())
        fmt = self.read().get("format")
        if isinstance(fmt, bool) or not isinstance(fmt, int):
            raise IntegrityError(
                f'{self.path} is damaged: its "format" is {fmt!r}, not a number; '
                f'restore it from a backup, or write {{"format": {FORMAT_VERSION}}} and add '
                "the remotes again (`mv remote add`)"
            )
        if fmt not in READABLE:
            raise UnsupportedFormat(f"the store at {store}", fmt, FORMAT_VERSION)
        self.format = fmt

    def make_current(self) -> None:
        """Mark the store as of :data:`FORMAT_VERSION` before writing objects of it (the
        config keeps its remotes; no-op when it is current already)."""
        if self.format == FORMAT_VERSION:
            return

        def bump(doc: dict[str, Any]) -> None:
            doc["format"] = max(FORMAT_VERSION, int(doc.get("format", 0)))

        self.update(bump)
        self.format = FORMAT_VERSION

    def read(self) -> dict[str, Any]:
        """The config document.

        Raises:
            IntegrityError: it is unreadable or not a JSON object.
        """
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"{self.path} is unreadable: {exc}") from exc
        if not isinstance(doc, dict):
            raise IntegrityError(f"{self.path} is not a JSON object")
        return doc

    def update(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``change`` to the config under a lock and replace it atomically."""
        with _fsutil.file_lock(self._lock, shared=False):
            doc = self.read()
            change(doc)
            _fsutil.atomic_write(self.path, json.dumps(doc, indent=2).encode())
