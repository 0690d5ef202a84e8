"""Refs: ``name:version`` -> model id, written once and never changed.

Layout: ``refs/<name>/<version>`` holds a small JSON document
``{"model": "<hex id>", "created": <microseconds since the epoch>, "module": str,
"size": int}`` (the last two are a summary of the model object, optional). A ref is
created with a hard link from a complete, fsync'd temp file, so it appears
whole or not at all, and a second writer of the same ref fails instead of
overwriting. ``latest`` is derived: the newest ``created`` (ties: the greater version).

A damaged ref is one damaged ref: a ref file that is not such a document (truncated,
another JSON shape, a time out of range) raises IntegrityError when that exact tag is
read; listings and ``latest`` skip it and report it (:func:`warn_damaged`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from modelvault import _fsutil
from modelvault.core.objects import ModelObject
from modelvault.errors import IntegrityError, InvalidTag, NotFound
from modelvault.tags import LATEST, Tag, is_version

__all__ = [
    "MAX_CREATED",
    "MAX_REF_BYTES",
    "MAX_SIZE",
    "RefStore",
    "RefValue",
    "damaged_message",
    "warn_damaged",
]

logger = logging.getLogger("modelvault.refs")

MAX_REF_BYTES = 64 * 1024  # a ref is ~150 bytes; anything this long is not one
# microseconds of 9999-12-31T23:59:59.999999Z, the last instant a datetime holds
MAX_CREATED = 253_402_300_799_999_999
MAX_SIZE = 2**63 - 1
_HEX_ID = re.compile(r"[0-9a-f]{64}")


def _is_int(value: object, top: int) -> bool:
    """A JSON integer (never a bool or float) in ``0..top``."""
    return type(value) is int and 0 <= value <= top


def damaged_message(tags: list[Tag], where: str = "", lead: str = "skipped") -> str:
    """One line naming damaged refs (of the store, or of the remote ``where``) and the fix."""
    tags = sorted(tags, key=str)
    more = f" (+{len(tags) - 5} more)" if len(tags) > 5 else ""
    shown = ", ".join(str(t) for t in tags[:5]) + more
    if where:
        return (
            f"{lead} {len(tags)} damaged ref(s) on {where}: {shown}; pull another version, "
            "or have the ref removed there and the tag pushed again"
        )
    it = "it" if len(tags) == 1 else "each"
    return (
        f"{lead} {len(tags)} damaged ref(s): {shown}; delete {it} (`mv delete {tags[0]} -y`) "
        "and pull or import it again"
    )


def warn_damaged(tags: list[Tag], where: str = "") -> None:
    """Log one warning naming the damaged refs a listing skipped (nothing if none)."""
    if tags:
        logger.warning(damaged_message(tags, where))


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

    def check(self) -> RefValue:
        """This value, if it makes a sound ref document; else ValueError (a model object
        from an archive or a remote may carry a time or size no ref can hold)."""
        return RefValue.decode(self.tag, self.encode())

    def encode(self) -> bytes:
        doc: dict[str, object] = {"model": self.model_id.hex(), "created": self.created}
        if self.module is not None:
            doc["module"] = self.module
        if self.size is not None:
            doc["size"] = self.size
        return json.dumps(doc).encode()

    @classmethod
    def decode(cls, tag: Tag, data: bytes) -> RefValue:
        """Parse a ref document; raises ValueError (only) if it has any other shape."""
        if len(data) > MAX_REF_BYTES:
            raise ValueError(f"{len(data)} bytes long, not a ref")
        try:  # (a document that starts with "{" is UTF-8, as refs are written: decoded
            # directly; json.loads would first guess its encoding, ~25 ms per 10,000 refs)
            doc = _JSON.decode(data.decode()) if data[:1] == b"{" else json.loads(data)
        except RecursionError:  # nested thousands deep
            raise ValueError("not a JSON object") from None
        if not isinstance(doc, dict):
            raise ValueError(f"a JSON {type(doc).__name__}, not an object")
        model = doc.get("model")
        if not (isinstance(model, str) and _HEX_ID.fullmatch(model)):
            raise ValueError("model is not an id of 64 lowercase hex digits")
        created = doc.get("created")
        if not (type(created) is int and _is_int(created, MAX_CREATED)):
            raise ValueError("created is not an integer time in microseconds")
        module, size = doc.get("module"), doc.get("size")
        if not (module is None or isinstance(module, str)):
            raise ValueError("module is not a string")
        if not (size is None or _is_int(size, MAX_SIZE)):
            raise ValueError("size is not a non-negative integer")
        return cls(tag, bytes.fromhex(model), created, module, size)


_JSON = json.JSONDecoder()


class RefStore:
    """The refs of one store (a ``refs/`` folder)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = os.fspath(root)
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
        try:  # plain strings and os calls: listing 10,000 tags reads 10,000 files
            fd = os.open(f"{self._root}/{tag.name}/{tag.version}", os.O_RDONLY)
            try:
                data = os.read(fd, MAX_REF_BYTES + 1)
                while len(data) <= MAX_REF_BYTES and (
                    more := os.read(fd, MAX_REF_BYTES + 1 - len(data))
                ):
                    data += more
            finally:
                os.close(fd)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(
                f"model {tag} not found: `mv list {tag.name}` shows the versions stored"
            ) from None
        except IsADirectoryError:
            data = b"<a folder>"
        try:
            return RefValue.decode(tag, data)
        except ValueError as exc:
            raise IntegrityError(
                f"the ref of {tag} (refs/{tag.name}/{tag.version}) is damaged ({exc}): "
                f"delete it (`mv delete {tag} -y`) and pull or import {tag} again"
            ) from exc

    def resolve(self, tag: Tag) -> RefValue:
        """The ref a tag means: its exact version, or the newest when it names latest.

        The newest is the newest readable version: damaged refs of the name are
        skipped with a warning (:func:`warn_damaged`).

        Raises:
            NotFound: no such name or version.
            IntegrityError: the exact version's ref is damaged, or every ref of the name.
        """
        if not tag.is_latest:
            try:
                return self.read(tag)
            except NotFound:
                return self._by_prefix(tag)
        damaged: list[Tag] = []
        versions = self.versions(tag.name, damaged)
        if not versions and damaged:
            raise IntegrityError(
                damaged_message(damaged, lead=f"{tag.name}: no readable version, only")
            )
        warn_damaged(damaged)
        if not versions:
            raise NotFound(f"no model named {tag.name!r} in the store: `mv list` shows the models")
        return versions[0]

    def _by_prefix(self, tag: Tag) -> RefValue:
        """The one version of ``tag.name`` that starts with ``tag.version`` (as BentoML
        resolves an abbreviated version); NotFound when none or several do."""
        assert tag.version is not None
        matches = sorted(
            (t for t in self._tags(tag.name) if (t.version or "").startswith(tag.version)), key=str
        )
        if len(matches) == 1:
            return self.read(matches[0])
        if not matches:
            raise NotFound(f"model {tag} not found: `mv list {tag.name}` shows the versions stored")
        shown = ", ".join(t.version or "" for t in matches[:10])
        more = f" (+{len(matches) - 10} more)" if len(matches) > 10 else ""
        raise NotFound(
            f"version {tag.version!r} of {tag.name} is ambiguous: {len(matches)} versions start "
            f"with it ({shown}{more}); give more of the version"
        )

    def versions(self, name: str, damaged: list[Tag] | None = None) -> list[RefValue]:
        """Every version of ``name``, newest first.

        Raises:
            IntegrityError: a ref file is damaged (unless ``damaged`` collects its tag).
        """
        refs = []
        for tag in self._tags(name):
            try:
                refs.append(self.read(tag))
            except NotFound:  # deleted meanwhile
                continue
            except IntegrityError:
                if damaged is None:
                    raise
                damaged.append(tag)
        return sorted(refs, key=lambda r: (r.created, r.tag.version), reverse=True)

    def _tags(self, name: str) -> list[Tag]:
        """The tags of the ref files of ``name`` (files whose names no tag has are not refs)."""
        if not is_version(name):  # (no ref folder has a name a tag would spell otherwise)
            return []
        try:
            files = [f for f in os.listdir(os.path.join(self.root, name)) if f[:1] != "."]
        except (FileNotFoundError, NotADirectoryError):
            return []
        # a file is a ref when its name is a version as a tag spells it (lowercase:
        # Tag would fold another spelling), other than latest
        return [Tag.checked(name, v) for v in files if is_version(v) and v != LATEST]

    def names(self) -> list[str]:
        """Every model name that has at least one ref folder."""
        names = []
        for p in self.root.iterdir():
            with contextlib.suppress(InvalidTag):
                if not p.name.startswith(".") and Tag(p.name).name == p.name:
                    names.append(p.name)
        return sorted(names)

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
        except IsADirectoryError:  # a damaged ref: a folder where the file should be
            shutil.rmtree(self._path(tag))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(
                f"model {tag} not found: `mv list {tag.name}` shows the versions stored"
            ) from None
        _fsutil.fsync_dir(self.root / tag.name)
        with contextlib.suppress(OSError):  # not empty: another version remains or arrived
            os.rmdir(self.root / tag.name)
