"""The remote side as a repository: format marker, refs, and the catalogue of packs.

Layout under the remote's URL prefix (docs/format.md section 11 is normative; the keys
are made by :mod:`modelvault.repo.layout`, the one place for local paths and remote keys)::

    <prefix>/modelvault.json            {"format": 3}, written create-only by the first push
    <prefix>/packs/<hex>.pack           same bytes as a local pack; <hex> = BLAKE3 of the file
    <prefix>/packs/<hex>.idx            its index; a pack without its index is invisible
    <prefix>/refs/<name>/<version>      {"model": "<hex id>", "created": <µs>}, create-only
    <prefix>/aliases/<name>/<alias>     a remote alias (modelvault.remote.aliases)
    <prefix>/locks/<id>                 push and remote gc locks (modelvault.remote.locks)

Packs and indexes never change once written, so the local cache under
``<store>/remotes/<key>/`` (a copy of every index and ref seen) keeps indexes until their
pack leaves the remote (remote gc): a refresh lists ``packs/`` (one request per 1000
packs) and fetches only new indexes. Refs never change but may be deleted
(``delete_remote``): a cached ref serves only a listing that shows its key with the
modification time the copy was read at.
A ref's ``created``, ``module`` and ``size`` are only what the remote says: a pull
takes them from the model object instead, and keeps what it read under ``checked/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelvault import _fsutil
from modelvault.core.packfmt import Entry, PackFormatError, decode_index
from modelvault.errors import IntegrityError, InvalidTag, NotFound, RemoteError, UnsupportedFormat
from modelvault.refs import RefValue
from modelvault.remote.catalogue import CatalogueError, decode_catalogue, encode_catalogue
from modelvault.remote.transport import Transport
from modelvault.repo.layout import (
    CATALOGUE,
    CATALOGUE_KEY,
    CHECKED,
    MARKER,
    PACK_INDEX_KEY,
    PACKS,
    REFS,
    catalogue_key,
    index_key,
    ref_key,
)
from modelvault.tags import Tag

logger = logging.getLogger("modelvault.remote")

__all__ = [
    "FORMAT",
    "READABLE",
    "RemoteFormatError",
    "RemoteIndex",
    "RemoteRepo",
    "cache_key",
    "damaged_index",
    "decode_ref",
]

FORMAT = 4  # 4: float chunks of sub-format 2; 3: writers hold locks/ (remote gc);
# 2: float-codec chunks; 1: codecs 0-2
READABLE = frozenset({1, 2, 3, 4})
CATALOGUE_MIN = 8  # visible packs no catalogue covers before a push writes one
CATALOGUE_MAX = 8  # catalogues before a push merges them all into one


class RemoteFormatError(UnsupportedFormat, RemoteError):
    """A remote of a format this modelvault does not read (a newer one wrote it)."""

    def __init__(self, url: str, found: object) -> None:
        UnsupportedFormat.__init__(self, f"the remote at {url}", found, FORMAT)


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
    """What a remote holds: object id -> where (pack names are the remote's).

    ``damaged`` names the packs whose index is unreadable (name -> why): like a local
    damaged ``.idx`` (``PackDB.damaged_indexes``), each is one damaged file; its objects
    are invisible, and every other pack still serves its own.
    """

    url: str
    entries: dict[bytes, Entry]
    packs: frozenset[str]
    damaged: Mapping[str, str] = field(default_factory=dict)

    def lacks(self, oid: bytes, tag: Tag | None = None) -> IntegrityError:
        """The error for an object a pull of ``tag`` needs and no readable index lists."""
        if not self.damaged:
            return IntegrityError(f"{self.url} lacks object {oid.hex()}: the remote is damaged")
        return IntegrityError(
            f"cannot pull {tag or 'from ' + self.url}: object {oid.hex()[:12]} is in no "
            f"readable index; {self.damage('it')}"
        )

    def damage(self, what: str) -> str:
        """The damaged indexes (a few), which may list ``what``, and what to do."""
        names = sorted(self.damaged)
        shown = ", ".join(damaged_index(self.url, n, self.damaged[n]) for n in names[:3])
        more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
        which = "that index" if len(names) == 1 else "those indexes"
        copy = f"{names[0]}.idx" if len(names) == 1 else "<P>.idx"
        return (
            f"{shown}{more} and may list {what}: restore {which} there from a store that "
            f"used this remote (which keeps a copy as remotes/*/packs/{copy}), or push the "
            "model there again under a new version"
        )


def damaged_index(url: str, name: str, why: str) -> str:
    """One phrase naming a remote's damaged index and what is wrong with it."""
    short = why.removeprefix(f"index of pack {name}").lstrip(": ") or why
    return f"{url}/{index_key(name)} is damaged ({short})"


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
        """Check the format marker; with ``create`` (a push, remote gc), write it if absent
        and bring a remote of format 1 or 2 to format 3 first (a push may send float-codec
        chunks, and a writer that takes no lock must not work beside remote gc).

        Returns whether the remote has been initialised.

        Raises:
            UnsupportedFormat: a remote of a newer format (also a RemoteError).
            RemoteError: the marker is damaged.
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
        if fmt not in READABLE:
            raise RemoteFormatError(self.url, fmt)
        if create and fmt != FORMAT:  # an older modelvault must refuse, not misread, it
            self.t.put(MARKER, json.dumps({"format": FORMAT}).encode())
        return True

    # -- refs --------------------------------------------------------------------
    def read_ref(
        self, tag: Tag, *, listed: bool = False, stamp: float | None = None
    ) -> RefValue | None:
        """The ref of an exact ``name:version`` on the remote, or None.

        Refs can be deleted (``delete_remote``), so the local copy serves only a tag
        the caller has just seen ``listed`` on the remote, and only if the listing's
        modification time ``stamp`` (when the backend gives one) is the one the copy was
        made from (a version deleted and pushed again is read again); otherwise the
        remote is read.

        Raises:
            IntegrityError: the remote's ref is damaged.
        """
        cached = self.cache / REFS / tag.name / str(tag.version)
        if listed:
            with contextlib.suppress(OSError, IntegrityError):
                if stamp is None or cached.stat().st_mtime == stamp:
                    return decode_ref(tag, cached.read_bytes(), str(cached))  # damaged: again
        try:
            data = self.t.get(ref_key(tag))
        except NotFound:
            self.forget_ref(tag)
            return None
        value = decode_ref(tag, data, f"{self.url}/{ref_key(tag)}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        _fsutil.atomic_write(cached, value.encode())
        if stamp is not None:  # the listing's time of the key this copy was read from
            with contextlib.suppress(OSError):
                os.utime(cached, (stamp, stamp))
        return value

    def forget_ref(self, tag: Tag) -> None:
        """Drop the local copies of a ref the remote no longer holds."""
        for top in (REFS, CHECKED):
            (self.cache / top / tag.name / str(tag.version)).unlink(missing_ok=True)

    def create_ref(self, value: RefValue) -> bool:
        """Publish a ref create-only; False if that ``name:version`` exists on the remote."""
        return self.t.put_if_absent(ref_key(value.tag), value.encode())

    def tags(self, name: str | None = None) -> list[Tag]:
        """Every tag the remote holds (of ``name``), in no particular order."""
        return list(self._listed(name))

    def _listed(self, name: str | None) -> dict[Tag, float | None]:
        """The remote's tags (of ``name``) with their refs' modification times (None
        where the backend lists none): one listing."""
        prefix = f"{REFS}/{name}" if name else REFS
        out: dict[Tag, float | None] = {}
        for key, stamp in self.t.list_times(prefix).items():
            parts = key.split("/")
            if len(parts) != 3:
                continue
            with contextlib.suppress(InvalidTag):
                tag = Tag(parts[1], parts[2])
                if not tag.is_latest and str(tag) == f"{parts[1]}:{parts[2]}":
                    out[tag] = stamp
        return out

    def refs(
        self, name: str | None = None, damaged: list[Tag] | None = None, *, fresh: bool = False
    ) -> list[RefValue]:
        """Every ref (of ``name``) on the remote, newest by their ``created`` first.

        Local copies serve the refs listed (``fresh``: every ref is read from the remote,
        as remote gc does); copies of refs no longer listed are dropped.

        Raises:
            IntegrityError: a ref is damaged (unless ``damaged`` collects its tag).
        """
        stamps = self._listed(name)
        tags = list(stamps)
        listed = {(t.name, str(t.version)) for t in tags}
        top = self.cache / REFS
        for path in (top / name).glob("*") if name else top.glob("*/*"):
            if (path.parent.name, path.name) not in listed and not path.name.startswith("."):
                with contextlib.suppress(InvalidTag):
                    self.forget_ref(Tag(path.parent.name, path.name))

        def read(tag: Tag) -> RefValue | Tag | None:
            try:
                return self.read_ref(tag, listed=not fresh, stamp=stamps[tag])
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
        """Every object the remote's visible packs hold: one listing plus new indexes.

        A damaged index (on the remote, and in the cache) is skipped with one warning
        naming it: its pack's objects are invisible (a push sends them again, a pull
        that needs one raises ``IntegrityError`` naming the index), the others serve.
        """
        names = self._visible()

        def load(name: str) -> dict[bytes, Entry] | str | None:
            try:
                return self._load_index(name)
            except NotFound:  # removed since the listing: the pack is not visible
                return None
            except IntegrityError as exc:
                return str(exc)

        with ThreadPoolExecutor(self.jobs, thread_name_prefix="modelvault-idx") as pool:
            loaded = dict(zip(sorted(names), pool.map(load, sorted(names)), strict=True))
        entries: dict[bytes, Entry] = {}
        damaged: dict[str, str] = {}
        for name, part in loaded.items():
            if isinstance(part, str):
                damaged[name] = part
                logger.warning(
                    f"{damaged_index(self.url, name, part)}: skipped it, so the objects only "
                    "its pack holds cannot be pulled; restore it there from a store that used "
                    f"this remote (which keeps a copy as remotes/*/packs/{name}.idx)"
                )
            elif part is not None:
                for oid, e in part.items():
                    entries.setdefault(oid, e)
        visible = frozenset(n for n, part in loaded.items() if isinstance(part, dict))
        return RemoteIndex(self.url, entries, visible, damaged)

    def pack_indexes(self) -> tuple[dict[str, dict[bytes, Entry]], dict[str, str]]:
        """Each visible pack's own entries (not merged: remote gc and verify work pack
        by pack), and the damaged indexes (name -> why); one listing, new indexes read."""
        names = self._visible()

        def load(name: str) -> dict[bytes, Entry] | str | None:
            try:
                return self._load_index(name)
            except NotFound:
                return None
            except IntegrityError as exc:
                return str(exc)

        with ThreadPoolExecutor(self.jobs, thread_name_prefix="modelvault-idx") as pool:
            loaded = dict(zip(sorted(names), pool.map(load, sorted(names)), strict=True))
        packs = {n: part for n, part in loaded.items() if isinstance(part, dict)}
        damaged = {n: part for n, part in loaded.items() if isinstance(part, str)}
        return packs, damaged

    def _visible(self) -> set[str]:
        """The visible packs (one listing of ``packs/``): local copies of indexes whose
        pack left the remote are dropped, and those missing are taken from catalogues
        not read yet (11.11) before any index is read one by one."""
        names = {m.group(1) for k in self.t.list(PACKS) if (m := PACK_INDEX_KEY.fullmatch(k))}
        cached = {p.stem for p in (self.cache / PACKS).glob("*.idx")}
        for gone in cached - names:  # removed from the remote (remote gc): forget it
            self.forget_index(gone)
        if names - cached:
            self._read_catalogues(names)
        return names

    def _catalogues(self) -> list[str]:
        return [m.group(1) for k in self.t.list(CATALOGUE) if (m := CATALOGUE_KEY.fullmatch(k))]

    def _read_catalogues(self, listed: set[str], keys: list[str] | None = None) -> None:
        """Read the catalogues not read before; keep the indexes of ``listed`` packs the
        cache lacks, and each catalogue's pack names (what it covers). A damaged one is
        skipped with a warning: the indexes it would give are read one by one."""
        top = self.cache / CATALOGUE
        top.mkdir(exist_ok=True)
        for name in sorted(self._catalogues() if keys is None else keys):
            seen = top / name
            if seen.exists():
                continue
            try:
                data = self.t.get(catalogue_key(name))
            except NotFound:  # replaced since the listing
                continue
            try:
                blobs = decode_catalogue(name, data)
            except CatalogueError as exc:
                logger.warning(f"{self.url}/{catalogue_key(name)} is damaged ({exc}): skipped")
                continue
            for pack, blob in blobs.items():
                if pack in listed and not (self.cache / PACKS / f"{pack}.idx").exists():
                    self.remember_index(pack, blob)
            _fsutil.atomic_write(seen, "\n".join(sorted(blobs)).encode())

    def update_catalogue(self, visible: set[str] | None = None, *, rewrite: bool = False) -> None:
        """Keep the catalogue short (11.11): write one of the visible packs no catalogue
        covers once there are :data:`CATALOGUE_MIN` of them; with :data:`CATALOGUE_MAX`
        catalogues or more, merge all but the largest into one (all of them once those
        outgrow it, so each pack's index is rewritten O(log packs) times); with
        ``rewrite`` (remote gc), one of every visible pack. The catalogues merged are
        then removed. ``visible`` defaults to the packs whose indexes the cache holds
        (the visible ones after a push's refresh and uploads)."""
        if visible is None:
            visible = {p.stem for p in (self.cache / PACKS).glob("*.idx")}
        keys = self._catalogues()
        self._read_catalogues(visible, keys)
        covers: dict[str, set[str]] = {}
        for name in keys:
            with contextlib.suppress(OSError):
                covers[name] = set((self.cache / CATALOGUE / name).read_text().split())
        covered = set().union(*covers.values())
        uncovered = visible - covered
        if rewrite or len(keys) >= CATALOGUE_MAX:
            if not keys and len(visible) < CATALOGUE_MIN:
                return
            merged, packs = keys, visible
            largest = max(covers, key=lambda n: (len(covers[n]), n), default=None)
            if not rewrite and largest is not None:
                rest = set().union(*(c for n, c in covers.items() if n != largest)) | uncovered
                if len(rest & visible) < len(covers[largest] & visible):
                    merged, packs = [n for n in keys if n != largest], rest & visible
            made = self._write_catalogue(packs)
            for name in merged:
                if name != made:
                    self.t.delete(catalogue_key(name))
                    (self.cache / CATALOGUE / name).unlink(missing_ok=True)
        elif len(uncovered) >= CATALOGUE_MIN:
            self._write_catalogue(uncovered)

    def _write_catalogue(self, packs: set[str]) -> str | None:
        blobs: dict[str, bytes] = {}
        for pack in packs:
            with contextlib.suppress(OSError):
                blobs[pack] = (self.cache / PACKS / f"{pack}.idx").read_bytes()
        if not blobs:
            return None
        name, data = encode_catalogue(blobs)
        self.t.put(catalogue_key(name), data)
        (self.cache / CATALOGUE).mkdir(exist_ok=True)
        _fsutil.atomic_write(self.cache / CATALOGUE / name, "\n".join(sorted(blobs)).encode())
        return name

    def forget_index(self, name: str) -> None:
        """Drop the local copy of a pack's index (the pack left the remote)."""
        (self.cache / PACKS / f"{name}.idx").unlink(missing_ok=True)

    def _load_index(self, name: str) -> dict[bytes, Entry]:
        """The entries of one pack's index: the cached copy when it is sound, else the
        remote's (cached when sound; read twice before it is called damaged).

        Raises:
            IntegrityError: the remote's copy is damaged (why, without the URL).
            NotFound: the index is no longer on the remote.
        """
        cached = self.cache / PACKS / f"{name}.idx"
        try:
            return self._decode_index(name, cached.read_bytes())
        except (OSError, IntegrityError):  # absent or damaged here: the remote's copy
            pass
        data = self.t.get(index_key(name))
        try:
            entries = self._decode_index(name, data)
        except IntegrityError:  # a body cut short in flight reads whole the second time
            data = self.t.get(index_key(name))
            entries = self._decode_index(name, data)
        self.remember_index(name, data)
        return entries

    def _decode_index(self, name: str, data: bytes) -> dict[bytes, Entry]:
        try:
            entries, digest = decode_index(name, data)
        except PackFormatError as exc:
            raise IntegrityError(str(exc)) from exc
        if digest.hex() != name:
            raise IntegrityError(f"index of pack {name} names another pack")
        return entries

    def remember_index(self, name: str, data: bytes) -> None:
        """Keep an index in the local cache (indexes never change once written)."""
        _fsutil.atomic_write(self.cache / PACKS / f"{name}.idx", data)
