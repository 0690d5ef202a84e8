"""The remote side as a repository: format marker, refs, and the catalogue of packs.

Layout under the remote's URL prefix (docs/format-remote.md is normative)::

    <prefix>/modelvault.json            {"format": 1}, written create-only by the first push
    <prefix>/packs/<hex>.pack           same bytes as a local pack; <hex> = BLAKE3 of the file
    <prefix>/packs/<hex>.idx            its index; a pack without its index is invisible
    <prefix>/refs/<name>/<version>      {"model": "<hex id>", "created": <µs>}, create-only

Packs, indexes and refs never change once written, so the local cache under
``<store>/remotes/<key>/`` (a copy of every index and ref seen) never goes stale: a
refresh lists ``packs/`` (one request per 1000 packs) and fetches only new indexes.
A ref's ``created``, ``module`` and ``size`` are only what the remote says: a pull
takes them from the model object instead, and keeps what it read under ``checked/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelvault import _fsutil
from modelvault.core.packfmt import Entry, PackFormatError, decode_index
from modelvault.errors import IntegrityError, InvalidTag, NotFound, RemoteError
from modelvault.refs import RefValue
from modelvault.remote.transport import Transport
from modelvault.tags import Tag

FORMAT = 1
MARKER = "modelvault.json"
PACKS = "packs"
REFS = "refs"
CHECKED = "checked"  # local cache only: refs whose values a pull read from their model
_PACK_KEY = re.compile(r"packs/([0-9a-f]{64})\.idx")


def pack_key(name: str) -> str:
    return f"{PACKS}/{name}.pack"


def index_key(name: str) -> str:
    return f"{PACKS}/{name}.idx"


def ref_key(tag: Tag) -> str:
    return f"{REFS}/{tag.name}/{tag.version}"


def decode_ref(tag: Tag, data: bytes, where: str) -> RefValue:
    """Parse a ref document; IntegrityError if damaged (any other shape)."""
    try:
        return RefValue.decode(tag, data)
    except ValueError as exc:
        raise IntegrityError(
            f"the ref of {tag} ({where}) is damaged: {exc}; pull another version, "
            "or have the ref removed there and the tag pushed again"
        ) from exc


def cache_key(url: str, options: Mapping[str, Any]) -> str:
    """Folder name of a remote's local cache: what identifies the bytes behind the URL."""
    endpoint = options.get("endpoint_url") or (options.get("client_kwargs") or {}).get(
        "endpoint_url"
    )
    if endpoint is None and url.startswith(("s3://", "s3a://")):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    ident = json.dumps([url.rstrip("/"), endpoint])
    return hashlib.sha256(ident.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class RemoteIndex:
    """What a remote holds: object id -> where (pack names are the remote's)."""

    entries: dict[bytes, Entry]
    packs: frozenset[str]


class RemoteRepo:
    """One remote, seen through a transport, with its local cache folder."""

    def __init__(self, transport: Transport, cache_dir: Path, jobs: int = 4) -> None:
        self.t = transport
        self.url = transport.url
        self.cache = cache_dir
        self.jobs = jobs
        (cache_dir / PACKS).mkdir(parents=True, exist_ok=True)
        (cache_dir / REFS).mkdir(parents=True, exist_ok=True)

    # -- format ------------------------------------------------------------------
    def check_format(self, *, create: bool) -> bool:
        """Check the format marker; with ``create``, write it if absent.

        Returns whether the remote has been initialised. Raises RemoteError for a
        remote of another format.
        """
        try:
            data = self.t.get(MARKER)
        except NotFound:
            if not create:
                return False
            self.t.put_if_absent(MARKER, json.dumps({"format": FORMAT}).encode())
            data = self.t.get(MARKER)
        try:
            fmt = json.loads(data).get("format")
        except (ValueError, AttributeError) as exc:
            raise RemoteError(f"{self.url}/{MARKER} is damaged: {exc}") from exc
        if fmt != FORMAT:
            raise RemoteError(
                f"{self.url} holds a modelvault remote of format {fmt}; this modelvault "
                f"reads format {FORMAT}: upgrade modelvault"
            )
        return True

    # -- refs --------------------------------------------------------------------
    def read_ref(self, tag: Tag) -> RefValue | None:
        """The ref of an exact ``name:version`` on the remote, or None.

        Raises:
            IntegrityError: the remote's ref is damaged.
        """
        cached = self.cache / REFS / tag.name / str(tag.version)
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, IntegrityError):
            return decode_ref(tag, cached.read_bytes(), str(cached))  # damaged: read again
        try:
            data = self.t.get(ref_key(tag))
        except NotFound:
            return None
        value = decode_ref(tag, data, f"{self.url}/{ref_key(tag)}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        _fsutil.atomic_write(cached, value.encode())
        return value

    def create_ref(self, value: RefValue) -> bool:
        """Publish a ref create-only; False if that ``name:version`` exists on the remote."""
        return self.t.put_if_absent(ref_key(value.tag), value.encode())

    def tags(self, name: str | None = None) -> list[Tag]:
        """Every tag the remote holds (of ``name``), in no particular order."""
        prefix = f"{REFS}/{name}" if name else REFS
        out = []
        for key in self.t.list(prefix):
            parts = key.split("/")
            if len(parts) != 3:
                continue
            with contextlib.suppress(InvalidTag):
                tag = Tag(parts[1], parts[2])
                if not tag.is_latest and str(tag) == f"{parts[1]}:{parts[2]}":
                    out.append(tag)
        return out

    def refs(self, name: str | None = None, damaged: list[Tag] | None = None) -> list[RefValue]:
        """Every ref (of ``name``) on the remote, newest by their ``created`` first.

        Raises:
            IntegrityError: a ref is damaged (unless ``damaged`` collects its tag).
        """
        tags = self.tags(name)

        def read(tag: Tag) -> RefValue | Tag | None:
            try:
                return self.read_ref(tag)
            except IntegrityError:
                if damaged is None:
                    raise
                return tag

        with ThreadPoolExecutor(self.jobs, thread_name_prefix="modelvault-refs") as pool:
            got = list(pool.map(read, tags))
        if damaged is not None:
            damaged.extend(v for v in got if isinstance(v, Tag))
        values = [v for v in got if isinstance(v, RefValue)]
        return sorted(values, key=lambda r: (r.created, r.tag.version), reverse=True)

    def read_exact(self, tag: Tag) -> RefValue:
        """The ref of an exact ``name:version`` on the remote.

        Raises:
            NotFound: no such version on the remote.
            IntegrityError: its ref is damaged.
        """
        value = self.read_ref(tag)
        if value is None:
            raise NotFound(f"model {tag} not found on {self.url}")
        return value

    # -- refs checked against their model objects (pull) ---------------------------
    def checked_ref(self, ref: RefValue) -> RefValue | None:
        """The values of ``ref`` as its model object gave them when a pull last checked
        it (``created``, ``module``, ``size``), or None if never checked."""
        path = self.cache / CHECKED / ref.tag.name / str(ref.tag.version)
        try:
            value = RefValue.decode(ref.tag, path.read_bytes())
        except (OSError, ValueError):
            return None
        return value if value.model_id == ref.model_id else None

    def remember_checked(self, value: RefValue) -> None:
        """Keep a ref's values as its model object gives them (see :meth:`checked_ref`)."""
        path = self.cache / CHECKED / value.tag.name / str(value.tag.version)
        path.parent.mkdir(parents=True, exist_ok=True)
        _fsutil.atomic_write(path, value.encode())

    # -- packs -------------------------------------------------------------------
    def index(self) -> RemoteIndex:
        """Every object the remote's visible packs hold: one listing plus new indexes."""
        names = {m.group(1) for k in self.t.list(PACKS) if (m := _PACK_KEY.fullmatch(k))}
        cached = {p.stem for p in (self.cache / PACKS).glob("*.idx")}
        for gone in cached - names:  # removed from the remote by hand: forget it
            (self.cache / PACKS / f"{gone}.idx").unlink(missing_ok=True)
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="modelvault-idx") as pool:
            loaded = list(pool.map(self._load_index, sorted(names)))
        entries: dict[bytes, Entry] = {}
        for part in loaded:
            for oid, e in part.items():
                entries.setdefault(oid, e)
        return RemoteIndex(entries, frozenset(names))

    def _load_index(self, name: str) -> dict[bytes, Entry]:
        cached = self.cache / PACKS / f"{name}.idx"
        try:
            return self._decode_index(name, cached.read_bytes())
        except (FileNotFoundError, IntegrityError):
            pass
        data = self.t.get(index_key(name))
        entries = self._decode_index(name, data)
        self.remember_index(name, data)
        return entries

    def _decode_index(self, name: str, data: bytes) -> dict[bytes, Entry]:
        try:
            entries, digest = decode_index(name, data)
        except PackFormatError as exc:
            raise IntegrityError(f"{self.url}: {exc}") from exc
        if digest.hex() != name:
            raise IntegrityError(f"{self.url}: the index of pack {name} names another pack")
        return entries

    def remember_index(self, name: str, data: bytes) -> None:
        """Keep an index in the local cache (indexes never change once written)."""
        _fsutil.atomic_write(self.cache / PACKS / f"{name}.idx", data)
