"""Pull: resolve the tag on the remote, walk model -> trees -> files, fetch what the
local store lacks with ranged reads of packs (neighbouring objects merged into one read),
verify every object against its id, write them into a local pack, and publish the tag
only after the pack is durable. See :mod:`modelvault.remote.sync`.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from modelvault.aliases import AliasStore
from modelvault.core.hashing import ObjType
from modelvault.core.objects import KIND_TREE, FileObject, ModelObject, TreeObject
from modelvault.core.packfmt import Entry
from modelvault.errors import IntegrityError, ModelExists, NotFound
from modelvault.odb.packs import CheckBuffers, verify_all, verify_payload
from modelvault.refs import RefValue, damaged_message, warn_damaged
from modelvault.remote.aliases import remote_alias_ref
from modelvault.remote.base import Bytes
from modelvault.remote.repo import RemoteIndex
from modelvault.remote.session import (
    JOBS,
    ProgressCallback,
    Relay,
    Session,
    Tally,
    TransferResult,
    open_session,
)
from modelvault.repo import Repository
from modelvault.repo.layout import pack_key
from modelvault.tags import Tag

if TYPE_CHECKING:
    from concurrent.futures import Future

    from modelvault.odb import PackDB, PackWriter

__all__ = ["SPAN_GAP", "SPAN_MAX", "pull"]

logger = logging.getLogger("modelvault.remote")

SPAN_GAP = 1024 * 1024  # objects closer than this in a remote pack are read together
SPAN_MAX = 16 * 1024 * 1024  # longest single ranged read


@dataclass
class _Span:
    """One ranged read: a stretch of a remote pack holding some wanted objects."""

    pack: str
    start: int
    end: int
    items: list[tuple[bytes, Entry]]


# id, entry, payload, raw bytes (b"" for a chunk: checked, not kept)
Fetched = tuple[bytes, Entry, memoryview, bytes | memoryview]


class _Fetcher:
    """Reads objects from remote packs in merged ranges, verifying each against its id."""

    def __init__(self, s: Session) -> None:
        self.t = s.repo.t
        self.url = s.repo.url
        self.repo = s.repo
        self.jobs = s.jobs
        self.tag: Tag | None = None  # the tag being pulled, once resolved (for errors)
        self._buffers = CheckBuffers()  # a reader thread's, for checking chunks

    @cached_property
    def index(self) -> RemoteIndex:
        """What the remote's packs hold (listed on first need: a pull of objects the
        store has already reads no index); damaged indexes are skipped, with a warning."""
        return self.repo.index()

    @property
    def entries(self) -> dict[bytes, Entry]:
        return self.index.entries

    def spans(self, ids: list[bytes]) -> list[_Span]:
        items = []
        for oid in ids:
            e = self.entries.get(oid)
            if e is None:
                raise self.index.lacks(oid, self.tag)
            items.append((oid, e))
        items.sort(key=lambda it: (it[1].pack, it[1].offset))
        spans: list[_Span] = []
        for oid, e in items:
            last = spans[-1] if spans else None
            end = e.offset + e.stored_len
            if (
                last is not None
                and last.pack == e.pack
                and e.offset - last.end <= SPAN_GAP
                and end - last.start <= SPAN_MAX
            ):
                last.end = max(last.end, end)
                last.items.append((oid, e))
            else:
                spans.append(_Span(e.pack, e.offset, end, [(oid, e)]))
        return spans

    def fetch(
        self, ids: list[bytes], kind: ObjType | None, relay: Relay | None = None
    ) -> Iterator[tuple[_Span, list[Fetched]]]:
        """Yield each span with its verified objects, in order, ``jobs`` reads in flight."""
        if ids:
            yield from self.fetch_spans(self.spans(ids), kind, relay)

    def fetch_spans(
        self, spans: list[_Span], kind: ObjType | None, relay: Relay | None = None
    ) -> Iterator[tuple[_Span, list[Fetched]]]:
        """:meth:`fetch` of spans; ``relay`` hears of the bytes of each read as they come
        and reports them in this thread while it waits."""
        relay = relay or Relay()
        window = self.jobs + 2  # reads done or in flight, waiting to be taken in order
        inflight: deque[Future[tuple[_Span, list[Fetched]]]] = deque()
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="modelvault-pull") as pool:
            try:
                for span in spans:
                    inflight.append(relay.watch(pool.submit(self._read, span, kind, relay.add)))
                    if len(inflight) >= window:
                        head = inflight.popleft()
                        relay.until(head.done)
                        yield head.result()
                while inflight:
                    head = inflight.popleft()
                    relay.until(head.done)
                    yield head.result()
            finally:
                for fut in inflight:
                    fut.cancel()

    def _read(self, span: _Span, kind: ObjType | None, told: Bytes) -> tuple[_Span, list[Fetched]]:
        data = self.t.read_range(pack_key(span.pack), span.start, span.end - span.start, told)
        view = memoryview(data)
        items = [
            (oid, e, view[e.offset - span.start : e.offset - span.start + e.stored_len])
            for oid, e in span.items
        ]
        out: list[Fetched] = []
        try:
            if kind == ObjType.CHUNK:  # checked only: a chunk's raw bytes are not kept
                verify_all(items, kind, self._buffers.buffer)
                return span, [(oid, e, payload, b"") for oid, e, payload in items]
            for oid, e, payload in items:
                out.append((oid, e, payload, verify_payload(oid, e, payload, kind)))
        except IntegrityError as exc:
            raise IntegrityError(f"{self.url}, pack {span.pack}: {exc}") from None
        return span, out


class _Receiver:
    """Walks a model on the remote and writes what the local store lacks."""

    def __init__(
        self,
        db: PackDB,
        writer: PackWriter,
        fetcher: _Fetcher,
        prefetched: dict[bytes, Fetched] | None = None,
    ) -> None:
        self.db = db
        self.writer = writer
        self.fetcher = fetcher
        self.prefetched = prefetched or {}  # model objects read while choosing latest
        self.metadata: list[Fetched] = []  # written last, after the chunks
        self.objects = 0

    def objects_of(self, ids: list[bytes], kind: ObjType) -> dict[bytes, bytes]:
        """Raw bytes of metadata objects: from the local store when it has them intact,
        else from the remote (so a pull restores what the store lost or holds damaged)."""
        out: dict[bytes, bytes] = {}
        remote = []
        for oid in dict.fromkeys(ids):
            if self.db.has(oid):
                try:
                    out[oid] = self.db.read(oid, kind)
                    continue
                except (NotFound, IntegrityError):  # lost or damaged here: fetch a copy
                    pass
            item = self.prefetched.get(oid)
            if item is not None and item[1].kind == kind:
                out[oid] = bytes(item[3])
                self.metadata.append(item)
            else:
                remote.append(oid)
        for _, fetched in self.fetcher.fetch(remote, kind):
            for item in fetched:
                out[item[0]] = bytes(item[3])
                self.metadata.append(item)
        return out

    def walk(self, ref: RefValue) -> tuple[ModelObject, list[bytes]]:
        """The model object and the ids of every chunk it reaches, every size checked.

        Raises:
            IntegrityError: the ref names another model, or a size the objects give
                disagrees with the object it describes.
        """
        raw = self.objects_of([ref.model_id], ObjType.MODEL)[ref.model_id]
        model = _decode(ModelObject.decode, raw, ref.model_id)
        if (model.name, model.version) != (ref.tag.name, ref.tag.version):
            raise IntegrityError(
                f"{self.fetcher.url}: the ref {ref.tag} points at the model "
                f"{model.name}:{model.version}"
            )
        try:
            RefValue.of(ref.tag, ref.model_id, model).check()
        except ValueError as exc:
            raise IntegrityError(
                f"{self.fetcher.url}: the model object of {ref.tag} is unusable: {exc}"
            ) from None
        tree_objects: dict[bytes, TreeObject] = {}
        file_ids = [model.custom_objects] if model.custom_objects else []
        level = [model.tree]
        while level:
            fresh = [oid for oid in dict.fromkeys(level) if oid not in tree_objects]
            level = []
            for oid, data in self.objects_of(fresh, ObjType.TREE).items():
                tree = tree_objects[oid] = _decode(TreeObject.decode, data, oid)
                for e in tree.entries:
                    (level if e.kind == KIND_TREE else file_ids).append(e.oid)
        file_objects: dict[bytes, FileObject] = {
            oid: _decode(FileObject.decode, data, oid)
            for oid, data in self.objects_of(file_ids, ObjType.FILE).items()
        }
        chunks = list(dict.fromkeys(cid for f in file_objects.values() for cid, _ in f.chunks))
        _check_sizes(ref.tag, model, tree_objects, file_objects, self._chunk_lengths(chunks))
        return model, chunks

    def _chunk_lengths(self, chunks: list[bytes]) -> dict[bytes, int]:
        """Raw length of each chunk: the local index's, else the remote's (which the
        fetch then checks against the bytes)."""
        out: dict[bytes, int] = {}
        wanted = []
        for cid, e in zip(chunks, self.db.entries(chunks), strict=True):
            if e is None:
                wanted.append(cid)
            else:
                out[cid] = e.raw_len
        if wanted:
            remote = self.fetcher.entries
            out.update((cid, remote[cid].raw_len) for cid in wanted if cid in remote)
        return out

    def receive(self, chunks: list[bytes], progress: ProgressCallback | None) -> None:
        """Fetch and write the chunks the store lacks. ``progress`` hears of the totals
        (the bytes of every ranged read to make) before the first byte comes, then of the
        bytes as they arrive and of the objects as each read is verified and written."""
        wanted = [c for c in chunks if not self.writer.has(c)]
        spans = self.fetcher.spans(wanted) if wanted else []
        meta_bytes = sum(item[1].stored_len for item in self.metadata)
        total_objects = len(wanted) + len(self.metadata)
        total_bytes = meta_bytes + sum(sp.end - sp.start for sp in spans)
        tally = Tally(
            progress, total_objects, total_bytes, objects=len(self.metadata), nbytes=meta_bytes
        )
        tally.report()
        for _, fetched in self.fetcher.fetch_spans(spans, ObjType.CHUNK, tally.relay()):
            for oid, e, payload, _ in fetched:
                self.writer.add_prepared(e.kind, oid, e.codec, e.raw_len, payload)
                tally.objects += 1
            tally.report()
        for oid, e, payload, _ in self.metadata:
            self.writer.add_prepared(e.kind, oid, e.codec, e.raw_len, payload)
        self.objects = total_objects


def _check_sizes(
    tag: Tag,
    model: ModelObject,
    trees: dict[bytes, TreeObject],
    files: dict[bytes, FileObject],
    chunk_lengths: dict[bytes, int],
) -> None:
    """Every size an object gives must be the size of what it names: a tree entry's, the
    file object's (the sum of its chunks) or the subtree's total; the model's, its tree's
    total; a chunk's length in a file object, the chunk's. Each tree is checked against
    its own entries only, so together they prove every total (as archive import does).

    Raises:
        IntegrityError: a size disagrees (a hostile or damaged remote): nothing is stored.
    """

    def total(tree: TreeObject) -> int:
        return sum(e.size for e in tree.entries)

    def refuse(what: str, said: int, true: int) -> NoReturn:
        raise IntegrityError(
            f"{tag}: {what} says {said} bytes, its object holds {true}: the model is "
            "damaged or forged; nothing was stored"
        )

    for oid, tree in trees.items():
        for e in tree.entries:
            true = total(trees[e.oid]) if e.kind == KIND_TREE else files[e.oid].size
            if e.size != true:
                refuse(f"the entry {e.name!r} of tree {oid.hex()[:12]}", e.size, true)
    if model.size != total(trees[model.tree]):
        refuse("the model object", model.size, total(trees[model.tree]))
    for oid, f in files.items():
        for cid, n in f.chunks:
            true = chunk_lengths.get(cid, n)  # absent: the fetch reports the chunk missing
            if n != true:
                refuse(f"file {oid.hex()[:12]} of chunk {cid.hex()[:12]}", n, true)


def _decode(fn: Callable[[bytes], Any], data: bytes, oid: bytes) -> Any:
    try:
        return fn(data)
    except ValueError as exc:
        raise IntegrityError(f"object {oid.hex()} is malformed: {exc}") from exc


def pull(
    repo: Repository,
    tag: str | Tag,
    url: str,
    options: Mapping[str, Any] | None = None,
    *,
    spec: str | None = None,
    progress: ProgressCallback | None = None,
    jobs: int = JOBS,
    alias: str | None = None,
) -> TransferResult:
    """Fetch ``tag`` (``name`` or ``name:latest`` = the newest on the remote at ``url``;
    with ``alias``, the version the remote's ``name@alias`` names, and then the local
    ``name@alias`` is set to it).

    Fetches only objects the local store lacks (walking the whole model even when the
    tag is here already, so a pull restores objects the store lost), verifies every
    one against its id and every size against the object it describes, and publishes
    the tag locally only once they are all durably stored (a tag here already is left
    as it is). The newest version is chosen by the creation times of the model objects,
    not by what the remote's refs say; damaged refs there are skipped with a warning.

    Raises:
        NotFound: no such model on the remote.
        ModelExists: the local store holds another model under that ``name:version``.
        IntegrityError: a remote object does not match its id, a size lies, or the
            ref asked for is damaged (nothing is published).
        RemoteError: the remote failed (after retries), with its URL and the cause.
    """
    t = Tag.coerce(tag)
    s = open_session(repo, url, options, spec, jobs)
    if not s.repo.check_format(create=False):
        what = f"alias {t.name}@{alias}" if alias is not None else f"model {t}"
        raise s.not_there(f"{what} is not on", " (no modelvault remote there)")
    fetcher = _Fetcher(s)
    prefetched: dict[bytes, Fetched] = {}
    if alias is not None:
        ref = remote_alias_ref(s, t.name, alias)
    elif t.is_latest:
        ref = _newest(repo, s, fetcher, t.name, prefetched)
    elif (exact := s.repo.read_ref(t)) is not None:
        ref = exact
    else:
        raise s.not_there(f"model {t} is not on")
    _local_has(repo, ref)  # ModelExists before anything moves
    fetcher.tag = ref.tag
    with repo.writing() as writer:
        receiver = _Receiver(repo.objects, writer, fetcher, prefetched)
        model, chunks = receiver.walk(ref)
        receiver.receive(chunks, progress)
        writer.commit()  # invariant 1: objects durable before the ref exists
        value = RefValue.of(ref.tag, ref.model_id, model)  # the model's values, not the ref's
        if not repo.refs.create(value):
            _local_has(repo, ref)  # raises ModelExists unless the same model raced in
    s.repo.remember_checked(value)
    if alias is not None:
        repo.config.make_current()  # a modelvault that knows no aliases refuses the store
        AliasStore(repo.layout.aliases, repo.layout.alias_lock, repo.refs).set(ref.tag, alias)
    return s.result(receiver.objects, ref.tag)


def _newest(
    repo: Repository, s: Session, fetcher: _Fetcher, name: str, prefetched: dict[bytes, Fetched]
) -> RefValue:
    """The remote's newest readable version of ``name`` by its model object's creation
    time (a ref's ``created`` is only what the remote says). Model objects are read from
    the local store when it has them, else fetched (and kept in ``prefetched``); what
    one gave is remembered (``RemoteRepo.remember_checked``), so each is read once.

    Raises:
        NotFound: no version of ``name`` on the remote.
        IntegrityError: every version's ref or model object is damaged.
    """
    damaged: list[Tag] = []
    refs = s.repo.refs(name, damaged)
    checked: list[RefValue] = []
    unknown: list[RefValue] = []
    for ref in refs:
        known = s.repo.checked_ref(ref) or _checked_locally(repo.objects, ref)
        (checked if known is not None else unknown).append(known or ref)
    fetched = _fetch_models(fetcher, [r.model_id for r in unknown])
    for ref in unknown:
        item = fetched.get(ref.model_id)
        value = None if item is None else _value_of(ref, item[1])
        if value is None:
            damaged.append(ref.tag)
            continue
        assert item is not None
        prefetched[ref.model_id] = item[0]
        s.repo.remember_checked(value)
        checked.append(value)
    true = {r.tag: r for r in checked}
    lying = [str(r.tag) for r in refs if r.tag in true and not _agrees(r, true[r.tag])]
    if lying:
        logger.warning(
            f"the refs of {', '.join(sorted(lying)[:5])} on {s.repo.url} disagree with their "
            "model objects; going by the model objects"
        )
    if not checked:
        lost = [str(r.tag) for r in unknown if r.model_id not in fetcher.entries]
        if lost and fetcher.index.damaged:  # (unknown, so the index was read)
            what = f"the model object of {', '.join(sorted(lost)[:5])}"
            raise IntegrityError(f"cannot pull {name}: {fetcher.index.damage(what)}")
        if damaged:
            lead = f"{name}: no readable version, only"
            raise IntegrityError(damaged_message(damaged, s.repo.url, lead))
        raise s.not_there(f"no model named {name!r} is on")
    warn_damaged(damaged, s.repo.url)
    return max(checked, key=lambda r: (r.created, r.tag.version))


def _agrees(said: RefValue, true: RefValue) -> bool:
    """True if a ref's summary says what its model object says (absent fields agree)."""
    return (
        said.created == true.created
        and said.module in (None, true.module)
        and said.size in (None, true.size)
    )


def _checked_locally(db: PackDB, ref: RefValue) -> RefValue | None:
    """``ref`` with its model object's values when the local store holds that object."""
    if not db.has(ref.model_id):
        return None
    try:
        model = ModelObject.decode(db.read(ref.model_id, ObjType.MODEL))
    except (NotFound, IntegrityError, ValueError):
        return None  # lost or damaged here: the remote's copy decides
    return _value_of(ref, model)


def _value_of(ref: RefValue, model: ModelObject | None) -> RefValue | None:
    """``ref`` with the values of its model object; None if that object is malformed,
    names another tag, or holds values no ref can (a time past year 9999)."""
    if model is None or (model.name, model.version) != (ref.tag.name, ref.tag.version):
        return None
    try:
        return RefValue.of(ref.tag, ref.model_id, model).check()
    except ValueError:
        return None


def _fetch_models(
    fetcher: _Fetcher, ids: list[bytes]
) -> dict[bytes, tuple[Fetched, ModelObject | None]]:
    """The model objects among ``ids`` the remote holds intact (None: malformed);
    ids it lacks or holds damaged are left out."""
    out: dict[bytes, tuple[Fetched, ModelObject | None]] = {}

    def keep(items: list[Fetched]) -> None:
        for item in items:
            try:
                out[item[0]] = (item, ModelObject.decode(bytes(item[3])))
            except ValueError:
                out[item[0]] = (item, None)

    try:
        for _, items in fetcher.fetch(ids, ObjType.MODEL):
            keep(items)
    except IntegrityError:  # one is missing or damaged: take the others one by one
        for oid in ids:
            if oid not in out:
                with contextlib.suppress(IntegrityError):
                    for _, items in fetcher.fetch([oid], ObjType.MODEL):
                        keep(items)
    return out


def _local_has(repo: Repository, ref: RefValue) -> bool:
    """True if the local store holds this exact ref; ModelExists if another model."""
    here = _local_ref(repo, ref.tag)
    if here is None:
        return False
    if here.model_id != ref.model_id:
        raise ModelExists(
            f"the local store holds another model under {ref.tag}: versions are immutable"
        )
    return True


def _local_ref(repo: Repository, tag: Tag) -> RefValue | None:
    try:
        return repo.refs.read(tag)
    except NotFound:
        return None
