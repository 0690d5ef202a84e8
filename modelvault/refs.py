"""Refs: ``name:version`` -> model id, written once and never changed.

Layout: ``refs/<name>/<version>`` holds a small JSON document
``{"model": "<hex id>", "created": <microseconds since the epoch>, "module": str,
"size": int}`` (the last two are a summary of the model object, optional). A ref is
created with a hard link from a complete, fsync'd temp file, so it appears
whole or not at all, and a second writer of the same ref fails instead of
overwriting. ``latest`` is derived: the newest ``created`` (ties: the greater version).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from modelvault import _fsutil
from modelvault.core.hashing import parse_hex_id
from modelvault.core.objects import ModelObject
from modelvault.errors import IntegrityError, NotFound
from modelvault.tags import Tag


@dataclass(frozen=True)
class RefValue:
    """What a ref points at, with the creation time used to order versions.

    ``module`` and ``size`` repeat the model object's, so listing needs no pack
    reads; None when the ref was written without them.
    """

    tag: Tag
    model_id: bytes
    created: int  # microseconds since the Unix epoch
    module: str | None = None
    size: int | None = None

    @classmethod
    def of(cls, tag: Tag, model_id: bytes, model: ModelObject) -> RefValue:
        """The ref of a model object, with its summary."""
        return cls(tag, model_id, model.creation_time, model.module, model.size)

    def encode(self) -> bytes:
        doc: dict[str, object] = {"model": self.model_id.hex(), "created": self.created}
        if self.module is not None:
            doc["module"] = self.module
        if self.size is not None:
            doc["size"] = self.size
        return json.dumps(doc).encode()

    @classmethod
    def decode(cls, tag: Tag, data: bytes) -> RefValue:
        """Parse a ref document; raises ValueError (or KeyError, TypeError) if malformed."""
        doc = json.loads(data)
        module, size = doc.get("module"), doc.get("size")
        if not (module is None or isinstance(module, str)):
            raise ValueError("module is not a string")
        if not (size is None or (isinstance(size, int) and size >= 0)):
            raise ValueError("size is not a non-negative integer")
        return cls(tag, parse_hex_id(doc["model"]), int(doc["created"]), module, size)


class RefStore:
    """The refs of one store (a ``refs/`` folder)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, tag: Tag) -> Path:
        assert tag.version is not None
        return self.root / tag.name / tag.version

    def create(self, value: RefValue) -> bool:
        """Publish a ref; False (changing nothing) if that ``name:version`` exists."""
        folder = self.root / value.tag.name
        for _ in range(5):  # a concurrent delete may remove the folder between our steps
            fresh = not folder.exists()
            folder.mkdir(exist_ok=True)
            if fresh:
                _fsutil.fsync_dir(self.root)
            with contextlib.suppress(FileNotFoundError):
                return _fsutil.create_only(self._path(value.tag), value.encode())
        raise NotFound(f"could not create ref folder {folder}")

    def read(self, tag: Tag) -> RefValue:
        """The ref of an exact ``name:version``.

        Raises:
            NotFound: no such ref.
            IntegrityError: the ref file is damaged.
        """
        try:
            data = self._path(tag).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(
                f"model {tag} not found: `mv list {tag.name}` shows the versions stored"
            ) from None
        try:
            return RefValue.decode(tag, data)
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(
                f"the ref of {tag} is damaged ({exc}): delete the tag and import or pull it again"
            ) from exc

    def resolve(self, tag: Tag) -> RefValue:
        """The ref a tag means: its exact version, or the newest when it names latest.

        Raises:
            NotFound: no such name or version.
        """
        if not tag.is_latest:
            return self.read(tag)
        versions = self.versions(tag.name)
        if not versions:
            raise NotFound(f"no model named {tag.name!r} in the store: `mv list` shows the models")
        return versions[0]

    def versions(self, name: str, damaged: list[Tag] | None = None) -> list[RefValue]:
        """Every version of ``name``, newest first.

        Raises:
            IntegrityError: a ref file is damaged (unless ``damaged`` collects its tag).
        """
        folder = self.root / name
        try:
            files = [p for p in folder.iterdir() if not p.name.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            return []
        refs = []
        for p in files:
            try:
                refs.append(self.read(Tag(name, p.name)))
            except NotFound:  # deleted meanwhile
                continue
            except IntegrityError:
                if damaged is None:
                    raise
                damaged.append(Tag(name, p.name))
        return sorted(refs, key=lambda r: (r.created, r.tag.version), reverse=True)

    def names(self) -> list[str]:
        """Every model name that has at least one ref folder."""
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith("."))

    def all(self, damaged: list[Tag] | None = None) -> list[RefValue]:
        """Every ref of the store, newest first (``damaged`` as in :meth:`versions`)."""
        refs = [r for name in self.names() for r in self.versions(name, damaged)]
        return sorted(refs, key=lambda r: (r.created, r.tag.version), reverse=True)

    def delete(self, tag: Tag) -> None:
        """Remove one version's ref.

        Raises:
            NotFound: no such ref.
        """
        try:
            self._path(tag).unlink()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(
                f"model {tag} not found: `mv list {tag.name}` shows the versions stored"
            ) from None
        _fsutil.fsync_dir(self.root / tag.name)
        with contextlib.suppress(OSError):  # not empty: another version remains or arrived
            os.rmdir(self.root / tag.name)
