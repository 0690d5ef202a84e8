"""Aliases: ``name@alias`` -> one version, the one movable kind of ref.

Layout (docs/format.md section 3): ``aliases/<name>/<alias>`` holds a small JSON document
``{"version": "<version>", "model": "<hex model id>"}``. A move replaces the file with a
temp file + fsync + rename, so a reader sees the old or the new version, never neither.
The model id keeps what the alias reaches a gc root whatever happens to the version's
ref. A damaged alias file is one damaged alias: reading that alias raises IntegrityError
naming the file; listings skip it with a warning (as damaged refs, :mod:`modelvault.refs`).

Writers (set, remove) and ``delete`` of versions hold ``locks/aliases.lock``, so an alias
is never set on a version while that version is being deleted, and ``delete`` never
removes a version an alias names. Readers take no lock.

The alias name follows the version grammar (``Tag``'s: 1-63 of ``a-z 0-9 _ - .``);
``latest`` is refused (it already means the newest version).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from modelvault import _fsutil
from modelvault.errors import IntegrityError, InvalidTag, ModelExists, NotFound
from modelvault.refs import RefStore, RefValue
from modelvault.tags import LATEST, Tag

__all__ = [
    "MAX_ALIAS_BYTES",
    "SEP",
    "AliasStore",
    "AliasValue",
    "check_alias",
    "parse_alias",
]

logger = logging.getLogger("modelvault.aliases")

SEP = "@"
MAX_ALIAS_BYTES = 4096  # an alias document is ~100 bytes
_HEX_ID = re.compile(r"[0-9a-f]{64}")


def check_alias(alias: str) -> str:
    """The alias name folded to lowercase; InvalidTag if it breaks the version grammar."""
    if not isinstance(alias, str):
        raise InvalidTag(f"an alias must be a string, not {type(alias).__name__}")
    try:
        folded = Tag("x", alias).version
    except InvalidTag:
        raise InvalidTag(
            f"invalid alias {alias!r}: use 1-63 characters of a-z 0-9 _ - . "
            "starting with a letter or digit"
        ) from None
    assert folded is not None
    if folded == LATEST:
        raise InvalidTag("'latest' cannot be an alias: it already means the newest version")
    return folded


def parse_alias(text: object) -> tuple[str, str] | None:
    """``(name, alias)`` of a ``"name@alias"`` string, None for anything else (a Tag, a
    string without ``@``).

    Raises:
        InvalidTag: the name or the alias breaks the grammar (``"a@b:c"``, ``"@x"``).
    """
    if not isinstance(text, str) or SEP not in text:
        return None
    name, _, alias = text.partition(SEP)
    if ":" in alias or SEP in alias:
        raise InvalidTag(f"invalid tag {text!r}: use name@alias or name:version, not both")
    return Tag(name).name, check_alias(alias)


@dataclass(frozen=True)
class AliasValue:
    """What an alias names: a version of ``name`` and that version's model id."""

    name: str
    alias: str
    version: str
    model_id: bytes

    @property
    def tag(self) -> Tag:
        return Tag(self.name, self.version)

    @property
    def key(self) -> str:
        """``"name@alias"``."""
        return f"{self.name}{SEP}{self.alias}"

    def encode(self) -> bytes:
        return json.dumps({"version": self.version, "model": self.model_id.hex()}).encode()

    @classmethod
    def of(cls, alias: str, ref: RefValue) -> AliasValue:
        assert ref.tag.version is not None
        return cls(ref.tag.name, alias, ref.tag.version, ref.model_id)

    @classmethod
    def decode(cls, name: str, alias: str, data: bytes) -> AliasValue:
        """Parse an alias document; ValueError (only) for any other shape."""
        if len(data) > MAX_ALIAS_BYTES:
            raise ValueError(f"{len(data)} bytes long, not an alias")
        try:
            doc = json.loads(data)
        except RecursionError:
            raise ValueError("not a JSON object") from None
        if not isinstance(doc, dict):
            raise ValueError(f"a JSON {type(doc).__name__}, not an object")
        version, model = doc.get("version"), doc.get("model")
        if not isinstance(version, str):
            raise ValueError("version is not a string")
        try:
            tag = Tag(name, version)
        except InvalidTag:
            raise ValueError(f"version {version!r} breaks the version grammar") from None
        if tag.version != version or tag.is_latest:
            raise ValueError(f"version {version!r} is not an exact version")
        if not (isinstance(model, str) and _HEX_ID.fullmatch(model)):
            raise ValueError("model is not an id of 64 lowercase hex digits")
        return cls(name, alias, version, bytes.fromhex(model))


def _warn_damaged(keys: list[str], where: str) -> None:
    if keys:
        shown = ", ".join(sorted(keys)[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
        logger.warning(
            f"skipped {len(keys)} damaged alias(es) {where}: {shown}; set each again "
            "(`mv alias set NAME@ALIAS TAG`) or remove it (`mv alias remove NAME@ALIAS`)"
        )


class AliasStore:
    """The aliases of one store (an ``aliases/`` folder, made on first write), beside its
    refs; ``lock`` serialises alias writes and version deletes."""

    def __init__(self, root: Path, lock: Path, refs: RefStore) -> None:
        self.root = root
        self.lock = lock
        self.refs = refs

    def _path(self, name: str, alias: str) -> Path:
        return self.root / name / alias

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the alias lock (every process of the host sees it)."""
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        with _fsutil.file_lock(self.lock, shared=False):
            yield

    # -- reading -------------------------------------------------------------------
    def read(self, name: str, alias: str) -> AliasValue:
        """The alias ``name@alias``.

        Raises:
            NotFound: no such alias.
            IntegrityError: its file is damaged.
        """
        path = self._path(name, alias)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(
                f"no alias {name}{SEP}{alias} in the store: `mv alias list {name}` shows them"
            ) from None
        except IsADirectoryError:
            data = b"<a folder>"
        try:
            return AliasValue.decode(name, alias, data)
        except ValueError as exc:
            raise IntegrityError(
                f"the alias {name}{SEP}{alias} (aliases/{name}/{alias}) is damaged ({exc}): "
                f"set it again (`mv alias set {name}{SEP}{alias} TAG`) or remove it"
            ) from exc

    def resolve(self, name: str, alias: str) -> RefValue:
        """The ref of the version ``name@alias`` names now.

        Raises:
            NotFound: no such alias, or its version is gone.
            IntegrityError: the alias is damaged, or its version now holds another model.
        """
        value = self.read(name, alias)
        try:
            ref = self.refs.read(value.tag)
        except NotFound:
            raise NotFound(
                f"the alias {value.key} names {value.tag}, which is not in the store: pull "
                f"it, or move the alias (`mv alias set {value.key} TAG`)"
            ) from None
        if ref.model_id != value.model_id:
            raise IntegrityError(
                f"the alias {value.key} names {value.tag} as model {value.model_id.hex()[:12]}, "
                f"but {value.tag} now holds {ref.model_id.hex()[:12]}: set the alias again"
            )
        return ref

    def all(self, name: str | None = None, damaged: list[str] | None = None) -> list[AliasValue]:
        """Every alias (of ``name``), sorted by ``name@alias``; damaged ones are collected
        in ``damaged`` (``"name@alias"``) when given, else logged in one warning."""
        names = [name] if name is not None else self._names()
        bad: list[str] = []
        out = []
        for n in names:
            for alias in self._aliases_of(n):
                try:
                    out.append(self.read(n, alias))
                except NotFound:  # removed meanwhile
                    continue
                except IntegrityError:
                    bad.append(f"{n}{SEP}{alias}")
        if damaged is None:
            _warn_damaged(bad, "in the store")
        else:
            damaged.extend(bad)
        return sorted(out, key=lambda v: v.key)

    def _names(self) -> list[str]:
        try:
            entries = [p.name for p in self.root.iterdir() if not p.name.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = []
        for n in entries:
            with contextlib.suppress(InvalidTag):
                if Tag(n).name == n:
                    names.append(n)
        return sorted(names)

    def _aliases_of(self, name: str) -> list[str]:
        try:
            entries = [p.name for p in (self.root / name).iterdir()]
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for a in entries:
            with contextlib.suppress(InvalidTag):
                if not a.startswith(".") and check_alias(a) == a:
                    out.append(a)
        return sorted(out)

    def model_ids(self) -> set[bytes]:
        """The model ids every readable alias reaches (gc roots)."""
        return {v.model_id for v in self.all()}

    def naming(self, tags: Iterable[Tag]) -> list[AliasValue]:
        """The aliases that name any of ``tags`` (exact versions)."""
        wanted = {(t.name, t.version) for t in tags}
        names = {name for name, _ in wanted}
        return [v for n in sorted(names) for v in self.all(n) if (v.name, v.version) in wanted]

    # -- writing -------------------------------------------------------------------
    def set(self, tag: Tag, alias: str) -> RefValue:
        """Point ``name@alias`` at ``tag`` (``name`` or ``name:latest``: the newest now).

        Raises:
            InvalidTag: the alias breaks the grammar.
            NotFound: no such version.
        """
        alias = check_alias(alias)
        with self.locked():
            ref = self.refs.resolve(tag)
            self.write(AliasValue.of(alias, ref))
        return ref

    def write(self, value: AliasValue) -> None:
        """Replace the alias file atomically (callers hold :meth:`locked` and know the
        version is in the store)."""
        folder = self.root / value.name
        if not folder.is_dir():
            fresh_root = not self.root.is_dir()
            folder.mkdir(parents=True, exist_ok=True)
            if fresh_root:
                _fsutil.fsync_dir(self.root.parent)
            _fsutil.fsync_dir(self.root)
        _fsutil.atomic_write(folder / value.alias, value.encode())

    def remove(self, name: str, alias: str) -> AliasValue | None:
        """Remove ``name@alias``; the value it had (None if it was damaged).

        Raises:
            NotFound: no such alias.
        """
        with self.locked():
            path = self._path(name, alias)
            value: AliasValue | None
            try:
                value = self.read(name, alias)
            except IntegrityError:
                value = None
            try:
                path.unlink()
            except IsADirectoryError:
                shutil.rmtree(path)
            _fsutil.fsync_dir(path.parent)
            with contextlib.suppress(OSError):  # another alias of the name remains
                path.parent.rmdir()
        return value

    @contextlib.contextmanager
    def deleting(self, tags: list[Tag]) -> Iterator[None]:
        """Hold the alias lock while ``tags`` (exact versions) are deleted; ModelExists
        naming the aliases if any of them names one of ``tags`` (nothing is deleted)."""
        with self.locked():
            held = self.naming(tags)
            if held:
                shown = ", ".join(f"{v.key} -> {v.tag}" for v in held[:5])
                more = f" (+{len(held) - 5} more)" if len(held) > 5 else ""
                raise ModelExists(
                    f"cannot delete: the alias(es) {shown}{more} point there; remove or move "
                    f"them first (`mv alias remove {held[0].key}`)"
                )
            yield
