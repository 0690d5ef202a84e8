"""Checking a remote: :func:`verify_remote` re-reads every pack with ranged reads, several
at once, checks every record header against the pack's name and every object against its
id, then walks each tag and alias (docs/remotes.md). It shares the ranged reads of remote
packs and the report types of :mod:`modelvault.remote.maintenance`.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from blake3 import blake3

from modelvault._parallel import ordered_map
from modelvault.core import graph
from modelvault.core.hashing import ObjType
from modelvault.core.objects import ModelObject
from modelvault.core.packfmt import FILE_HEADER, RECORD_HEADER, Entry
from modelvault.errors import IntegrityError, NotFound
from modelvault.odb.packs import CheckBuffers, check_payloads, verify_payload
from modelvault.refs import RefValue
from modelvault.remote.catalogue import CatalogueError, decode_catalogue
from modelvault.remote.maintenance import (
    RemoteProgress,
    RemoteProgressCallback,
    RemoteVerifyReport,
    _children_of,
    _pack_size,
    _Span,
    _spans,
    read_aliases,
)
from modelvault.remote.repo import RemoteRepo
from modelvault.remote.session import JOBS, open_session
from modelvault.repo import Repository
from modelvault.repo.layout import CATALOGUE, CATALOGUE_KEY, index_key, pack_key
from modelvault.tags import Tag

__all__ = ["RemoteVerifyReport", "verify_remote"]


@dataclass
class _Checked:
    """What checking one span found (see ``verify_remote``)."""

    trailing: bool = False
    headers: list[tuple[int, bytes]] = field(default_factory=list)
    bad: list[bytes] = field(default_factory=list)
    sound: list[tuple[bytes, int]] = field(default_factory=list)
    meta: dict[bytes, bytes] = field(default_factory=dict)


@dataclass
class _PackCheck:
    headers: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, header)
    bad: list[bytes] = field(default_factory=list)
    trailing: bool = False
    gone: bool = False


def verify_remote(
    repo: Repository,
    url: str,
    options: Mapping[str, Any] | None = None,
    *,
    spec: str | None = None,
    progress: RemoteProgressCallback | None = None,
    jobs: int = JOBS,
) -> RemoteVerifyReport:
    """Re-hash every object of the remote's packs (ranged reads, ``jobs`` at once),
    check each pack's record headers against its name and its length, then every
    ref and alias: see :class:`RemoteVerifyReport`. Changes nothing.

    Raises:
        RemoteError: the remote failed.
    """
    s = open_session(repo, url, options, spec, jobs)
    r = s.repo
    report = RemoteVerifyReport(r.url)
    if not r.check_format(create=False):
        return report
    packs, damaged_idx = r.pack_indexes()
    for name, damage in damaged_idx.items():
        report.damaged_files[index_key(name)] = damage
    checks = {name: _PackCheck() for name in packs}
    items = [(oid, e) for entries in packs.values() for oid, e in entries.items()]
    ends = {name: _pack_size(entries) for name, entries in packs.items()}
    total_bytes = sum(e.stored_len for _, e in items)
    meta: dict[bytes, bytes] = {}
    sound: set[bytes] = set()
    corrupt: set[bytes] = set()
    done_objects = done_bytes = 0

    buffers = CheckBuffers()  # a worker's, for checking chunks

    def check_span(span: _Span) -> _Checked | None:
        """Read one span and check it (in a worker: zstd and BLAKE3 release the GIL)."""
        start = 0 if span.start == FILE_HEADER.size else span.start
        at_end = span.end == ends[span.pack]
        extra = 1 if at_end else 0  # one byte past the last record: trailing junk?
        try:
            (data,) = r.t.get_ranges(pack_key(span.pack), [(start, span.end - start + extra)])
        except NotFound:
            return None
        out = _Checked(trailing=at_end and len(data) > span.end - start)
        if start == 0:
            out.headers.append((0, bytes(data[: FILE_HEADER.size])))
        view = memoryview(data)
        chunks: list[tuple[bytes, Entry, memoryview]] = []
        for oid, e in span.items:
            h0 = e.offset - RECORD_HEADER.size - start
            out.headers.append((e.offset, bytes(view[h0 : h0 + RECORD_HEADER.size])))
            if e.kind == ObjType.CHUNK:
                chunks.append((oid, e, view[e.offset - start : e.offset - start + e.stored_len]))
        bad_chunks = {chunks[i][0] for i in check_payloads(chunks, None, buffers.buffer)}
        for oid, e in span.items:
            if e.kind == ObjType.CHUNK:  # checked above, the raw bytes not kept
                if oid in bad_chunks:
                    out.bad.append(oid)
                else:
                    out.sound.append((oid, e.stored_len))
                continue
            payload = view[e.offset - start : e.offset - start + e.stored_len]
            try:
                raw = verify_payload(oid, e, payload, None)
            except IntegrityError:
                out.bad.append(oid)
                continue
            out.sound.append((oid, e.stored_len))
            out.meta[oid] = bytes(raw)
        return out

    spans = _spans(items, gap=0)
    with ThreadPoolExecutor(s.jobs, thread_name_prefix="modelvault-rverify") as pool:
        for span, got in ordered_map(pool, check_span, spans, s.jobs + 2):
            check = checks[span.pack]
            if got is None:
                check.gone = True
                continue
            check.headers += got.headers
            check.trailing |= got.trailing
            check.bad += got.bad
            corrupt.update(got.bad)
            sound.update(oid for oid, _ in got.sound)
            meta.update(got.meta)
            done_objects += len(got.sound)
            done_bytes += sum(n for _, n in got.sound)
            report.objects_checked += len(span.items)
            report.bytes_checked += span.end - span.start
            if progress is not None:
                progress(
                    RemoteProgress("verifying", done_objects, done_bytes, len(items), total_bytes)
                )
    for name, check in checks.items():
        if check.gone and not r.t.exists(index_key(name)):
            continue  # removed whole (by a remote gc) since the listing: not damage
        why = _pack_damage(name, packs[name], check)
        if why is not None:
            report.damaged_files[pack_key(name)] = why
            if check.gone:
                corrupt.update(packs[name])
    for key in r.t.list(CATALOGUE):  # catalogues (11.11): a shortcut, but one that lies
        m = CATALOGUE_KEY.fullmatch(key)
        if m is None:
            continue
        try:
            decode_catalogue(m.group(1), r.t.get(key))
        except NotFound:
            continue
        except CatalogueError as exc:
            report.damaged_files[key] = str(exc)
    _verify_tags(r, report, meta, sound, corrupt)
    report.corrupt = sorted(c.hex() for c in corrupt)
    report.ok = not (
        report.corrupt or report.missing or report.broken_tags or report.broken_aliases
        or report.damaged_files
    )  # fmt: skip
    return report


def _pack_damage(name: str, entries: Mapping[bytes, Entry], check: _PackCheck) -> str | None:
    if check.gone:
        return "the pack file is missing"
    if check.trailing:
        return "the file has bytes after its last record"
    if not entries:
        return None
    check.headers.sort(key=lambda h: h[0])
    by_offset = {e.offset: e for e in entries.values()}
    digest = blake3()
    pos = FILE_HEADER.size
    for offset, header in check.headers:
        if offset == 0:
            digest.update(header)
            continue
        if offset - RECORD_HEADER.size != pos:
            return f"record at {pos} is not where its index says"
        digest.update(header)
        pos = offset + by_offset[offset].stored_len
    if digest.hexdigest() != name:
        return "a file or record header does not match the pack's digest"
    if check.bad:
        return f"{len(check.bad)} object(s) do not match their ids"
    return None


def _verify_tags(
    r: RemoteRepo,
    report: RemoteVerifyReport,
    meta: dict[bytes, bytes],
    sound: set[bytes],
    corrupt: set[bytes],
) -> None:
    """Walk each ref and alias through the objects read (no further requests)."""

    def children(oid: bytes, kind: ObjType) -> list[tuple[bytes, ObjType]] | None:
        raw = meta.get(oid)
        if raw is None or oid in corrupt:
            return None
        return _children_of(kind, raw)

    def present(oid: bytes) -> bool:
        return oid in sound and oid not in corrupt

    damaged: list[Tag] = []
    refs = r.refs(None, damaged, fresh=True)
    for tag in damaged:
        report.broken_tags.append(tag)
        report.damaged_files[f"refs/{tag.name}/{tag.version}"] = "unreadable ref"
    missing: set[bytes] = set()
    by_tag: dict[Tag, RefValue] = {}
    for ref in refs:
        by_tag[ref.tag] = ref
        _, bad = graph.reachable([ref.model_id], children, present)
        wrong = _names_other(ref, meta.get(ref.model_id))
        if bad or wrong:
            report.broken_tags.append(ref.tag)
            missing |= {m for m in bad if m not in corrupt and m not in sound}
    bad_aliases: dict[str, str] = {}
    for a in read_aliases(r, None, bad_aliases):
        target = by_tag.get(a.tag)
        if target is None:
            bad_aliases[str(a)] = f"it points at {a.tag}, which the remote lacks"
        elif target.model_id != a.model_id:
            bad_aliases[str(a)] = f"it names model {a.model_id.hex()[:12]}, {a.tag} is another"
        elif a.tag in report.broken_tags:
            bad_aliases[str(a)] = f"it points at {a.tag}, which is broken"
    report.broken_aliases = bad_aliases
    report.missing = sorted(m.hex() for m in missing)


def _names_other(ref: RefValue, raw: bytes | None) -> bool:
    """True when the ref's model object names another tag (or is malformed)."""
    if raw is None:
        return False  # reported as missing or corrupt
    try:
        model = ModelObject.decode(raw)
    except ValueError:
        return True
    return (model.name, model.version) != (ref.tag.name, ref.tag.version)
