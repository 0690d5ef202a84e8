"""Transports: the few verbs a remote needs, one class per kind of backend.

::

    Transport (abstract)          put, put_file, put_if_absent, get, get_ranges, list, delete,
     │                            get_versioned + put_if_match (swap a key: aliases)
     ├── LocalTransport           file:// — temp file + fsync + rename / hard link (create-only)
     │                            swap = flock'd check + rename
     ├── FsspecTransport          any other fsspec URL (create-only, swap = check then write)
     │    ├── MemoryTransport     memory:// — create-only and swap under a process lock
     │    └── S3Transport         s3:// — create-only = PutObject with ``If-None-Match: *``,
     │                            swap = PutObject with ``If-Match: <ETag>``
     ├── Metered                  wrapper: counts requests and bytes
     └── Retrying                 wrapper: retries what the transport calls transient, with
                                  backoff, and turns every foreign exception into
                                  RemoteError (one line, the public URL, advice)

Keys are ``/``-separated paths relative to the remote's root. A missing key is reported
as :class:`~modelvault.errors.NotFound` by every transport; every other failure leaves a
transport wrapped in :class:`Retrying` as :class:`~modelvault.errors.RemoteError`.
This module and :mod:`~modelvault.remote.files` (opening file systems; single files for
archives: ``open_input``, ``open_output``) are the only ones importing fsspec. The
abstract class is in
:mod:`~modelvault.remote.base`, ``file://`` (no fsspec) in :mod:`~modelvault.remote.local`,
the wrappers in :mod:`~modelvault.remote.wrappers`, the URL and failure helpers in
:mod:`~modelvault.remote.urls`; all are re-exported here.

Secrets: a URL with ``user:password@`` is refused by :func:`open_transport` before any
library sees it, and every URL shown goes through :func:`public_url` / :func:`redact`.
Failing fast: S3 gets botocore's standard retry and timeouts (:data:`S3_CONFIG`) and
Retrying adds only what botocore cannot retry (docs/remotes.md, "Errors, retries and
timeouts"). :func:`wrapping` wraps every transport opened in a block (the hook of
``modelvault.testing.faults``).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from modelvault.errors import InvalidInput, NotFound, RemoteError
from modelvault.remote.base import Bytes, Range, Transport, content_token
from modelvault.remote.files import S3_CONFIG, _remote_fs, open_input, open_output
from modelvault.remote.local import PIECE, LocalTransport
from modelvault.remote.urls import (
    _HINT_FOR_SECRETS,
    _STREAM_ERRORS,
    _named,
    _password_in,
    has_password,
    is_transient,
    public_url,
    redact,
    refuse_password,
    remote_error,
)
from modelvault.remote.wrappers import Metered, Retrying

__all__ = [
    "S3_CONFIG",
    "FsspecTransport",
    "LocalTransport",
    "MemoryTransport",
    "Metered",
    "Range",
    "Retrying",
    "S3Transport",
    "Transport",
    "has_password",
    "is_transient",
    "open_input",
    "open_output",
    "open_transport",
    "public_url",
    "redact",
    "refuse_password",
    "refuse_unknown_protocol",
    "remote_error",
    "wrapping",
]


# -- fsspec ---------------------------------------------------------------------------


class FsspecTransport(Transport):
    """Any fsspec file system. Create-only writes check then write: not atomic across
    machines (see docs/remotes.md); subclasses do better where the backend allows."""

    def __init__(self, fs: Any, root: str, url: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url
        self._lock = threading.Lock()

    @property
    def atomic_create(self) -> bool:
        return False

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def put(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(key), data)

    def put_file(self, key: str, path: Path) -> None:
        self.fs.put_file(str(path), self._path(key))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        with self._lock:
            if self.fs.exists(self._path(key)):
                return False
            self.put(key, data)
            return True

    def upload(self, key: str, source: bytes | Path, progress: Bytes) -> None:
        """A file through fsspec's ``put_file`` with an fsspec callback (each block it
        copies is told); bytes in one write, told at the end."""
        if isinstance(source, Path):
            told = _told(progress)
            self.fs.put_file(str(source), self._path(key), callback=told)
            told.finish(source.stat().st_size)
        else:
            super().upload(key, source, progress)

    def _missing_root(self, exc: FileNotFoundError) -> bool:
        """Whether ``exc`` says the remote's root (an S3 bucket) is missing, not a key."""
        return False

    def _not_found(self, key: str, exc: FileNotFoundError) -> Exception:
        if self._missing_root(exc):
            return exc  # not a missing key: Retrying reports it as RemoteError
        return NotFound(f"{self.url}/{key} does not exist")

    def get(self, key: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except FileNotFoundError as exc:
            raise self._not_found(key, exc) from None

    def get_ranges(self, key: str, ranges: Sequence[Range]) -> list[bytes]:
        if not ranges:
            return []
        path = self._path(key)
        starts = [off for off, _ in ranges]
        ends = [off + n for off, n in ranges]
        try:
            out = self.fs.cat_ranges([path] * len(ranges), starts, ends, on_error="raise")
        except FileNotFoundError as exc:
            raise self._not_found(key, exc) from None
        return [bytes(b) for b in out]

    def list(self, prefix: str) -> list[str]:
        top = self._path(prefix).rstrip("/")
        self.fs.invalidate_cache(top)
        try:
            found = self.fs.find(top)
        except FileNotFoundError as exc:
            if self._missing_root(exc):
                raise
            return []
        head = self.root + "/"
        return sorted(p[len(head) :] for p in found if p.startswith(head))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def list_times(self, prefix: str) -> dict[str, float | None]:
        top = self._path(prefix).rstrip("/")
        self.fs.invalidate_cache(top)
        try:
            found = self.fs.find(top, detail=True)
        except FileNotFoundError as exc:
            if self._missing_root(exc):
                raise
            return {}
        head = self.root + "/"
        return {p[len(head) :]: _mtime(info) for p, info in found.items() if p.startswith(head)}


class MemoryTransport(FsspecTransport):
    """fsspec's ``memory://``: one process, so a process-wide lock makes create-only atomic."""

    _global_lock = threading.Lock()

    @property
    def atomic_create(self) -> bool:
        return True

    def put_if_absent(self, key: str, data: bytes) -> bool:
        with MemoryTransport._global_lock:
            if self.fs.exists(self._path(key)):
                return False
            self.put(key, data)
            return True

    @property
    def atomic_swap(self) -> bool:
        return True

    def put_if_match(self, key: str, data: bytes, token: str | None) -> bool:
        with MemoryTransport._global_lock:
            try:
                now: str | None = content_token(self.get(key))
            except NotFound:
                now = None
            if now != token:
                return False
            self.put(key, data)
            return True


class S3Transport(FsspecTransport):
    """S3 through s3fs. Create-only is PutObject with ``If-None-Match: *`` (AWS since
    2024-08, MinIO, moto): the server refuses the second writer with 412."""

    def __init__(self, fs: Any, root: str, url: str) -> None:
        super().__init__(fs, root, url)
        self._conditional = True
        self._uploads = itertools.count()  # uploads begun: their part sizes differ
        self._swap = True  # PutObject with If-Match works here (until a 501 says not)

    def is_transient(self, exc: BaseException) -> bool:
        """Only failures while streaming a body: botocore (standard mode, see
        :data:`S3_CONFIG`) has already retried connection errors, timeouts before a
        response, 5xx answers and throttling; trying again would multiply its attempts."""
        return _named(exc, _STREAM_ERRORS)

    def _missing_root(self, exc: FileNotFoundError) -> bool:
        code = getattr(exc.__cause__, "response", {}).get("Error", {}).get("Code")
        return code == "NoSuchBucket" or "bucket does not exist" in str(exc).lower()

    @property
    def atomic_create(self) -> bool:
        return self._conditional

    def put_if_absent(self, key: str, data: bytes) -> bool:
        if not self._conditional:
            return super().put_if_absent(key, data)
        try:
            self.fs.pipe_file(self._path(key), data, mode="create")
        except FileExistsError:
            return False
        except OSError as exc:
            if not _is_not_implemented(exc):
                raise
            self._conditional = False  # an S3 clone without conditional writes
            return super().put_if_absent(key, data)
        return True

    def upload(self, key: str, source: bytes | Path, progress: Bytes) -> None:
        """Up to 5 MiB in one PutObject, told at the end; more as a multipart upload whose
        parts go one after another, each told once S3 has it: a file through s3fs's
        ``put_file`` (its fsspec callback hears of each part), bytes through an s3fs file
        opened with that ``block_size`` (each write of a part uploads it).

        The part size is one of :data:`PARTS` in turn: several uploads in flight share
        the link, and parts of one size would all land at once (one jump of the bar)."""
        size = source.stat().st_size if isinstance(source, Path) else len(source)
        part = PARTS[next(self._uploads) % len(PARTS)]
        if size <= PARTS[0]:
            super().upload(key, source, progress)
        elif isinstance(source, Path):
            told = _told(progress, hold_last=True)
            self.fs.put_file(
                str(source), self._path(key), callback=told, chunksize=part, max_concurrency=1
            )
            told.finish(size)  # the upload is complete: the object is there
        else:
            view = memoryview(source)
            f = self.fs.open(self._path(key), "wb", block_size=part)
            try:
                done = 0
                while size - done > part:  # a write of a part uploads it
                    f.write(view[done : done + part])
                    done += part
                    progress(part)
                f.write(view[done:])  # the last part, uploaded by close()
                f.close()  # (completes the upload: a failure here aborts it too)
            except BaseException:
                with contextlib.suppress(Exception):
                    f.discard()  # aborts the multipart upload
                f.closed = True
                raise
            progress(size - done)

    def read_range(self, key: str, offset: int, length: int, progress: Bytes) -> bytes:
        """One ranged GetObject whose body is read :data:`PIECE` by :data:`PIECE`, each
        told as it arrives (s3fs's ranged reads, ``cat_file``/``cat_ranges``, take no
        callback; its ``get_file`` does but copies whole objects to local files)."""
        from fsspec.asyn import sync

        if length <= 0:
            return b""
        bucket, path, _ = self.fs.split_path(self._path(key))

        async def fetch() -> bytes:
            resp = await self.fs._call_s3(
                "get_object",
                Bucket=bucket,
                Key=path,
                Range=f"bytes={offset}-{offset + length - 1}",
                **self.fs.req_kw,  # (requester pays, as s3fs's own reads send)
            )
            pieces = []
            untold = 0
            async with resp["Body"] as body:
                while block := await body.read(PIECE):
                    pieces.append(block)
                    untold += len(block)
                    if untold >= PIECE:  # (blocks come as the socket has them: 64 KiB)
                        progress(untold)
                        untold = 0
            if untold:
                progress(untold)
            return b"".join(pieces)

        try:
            data: bytes = sync(self.fs.loop, fetch)
        except FileNotFoundError as exc:
            raise self._not_found(key, exc) from None
        except OSError as exc:
            if _s3_code(exc) == "InvalidRange":  # a range past the end: nothing there
                return b""
            raise
        return data

    @property
    def atomic_swap(self) -> bool:
        return self._swap

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """One GetObject: the body and the ETag of that very version."""
        from fsspec.asyn import sync

        bucket, path, _ = self.fs.split_path(self._path(key))

        async def fetch() -> tuple[bytes, str]:
            resp = await self.fs._call_s3("get_object", Bucket=bucket, Key=path)
            async with resp["Body"] as body:
                data = await body.read()
            return bytes(data), str(resp["ETag"])

        try:
            got: tuple[bytes, str] = sync(self.fs.loop, fetch)
        except FileNotFoundError as exc:
            raise self._not_found(key, exc) from None
        return got

    def put_if_match(self, key: str, data: bytes, token: str | None) -> bool:
        """PutObject with ``If-Match: <ETag>`` (``If-None-Match: *`` for None): the server
        refuses a writer whose token is stale with 412 (409 when two race on AWS)."""
        if token is None:
            return self.put_if_absent(key, data)
        if not self._swap:
            return super().put_if_match(key, data, token)
        try:
            self.fs.pipe_file(self._path(key), data, IfMatch=token)
        except FileNotFoundError as exc:
            if self._missing_root(exc):
                raise
            return False  # removed meanwhile: not the version the caller saw
        except OSError as exc:
            if _s3_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            if not _is_not_implemented(exc):
                raise
            self._swap = False  # an S3 clone without If-Match
            return super().put_if_match(key, data, token)
        return True


# sizes of the parts of S3 multipart uploads, one per upload in turn (5 MiB: S3's least)
PARTS = tuple(n * 1024 * 1024 for n in (5, 6, 7, 8))


def _told(progress: Bytes, *, hold_last: bool = False) -> Any:
    """An fsspec callback telling ``progress`` of each increment fsspec reports. With
    ``hold_last``, the increment that reaches the size fsspec announced waits for the
    caller's ``finish()`` (an S3 multipart upload: the object exists only once the
    upload is completed, after its last part)."""
    from fsspec.callbacks import Callback

    class Told(Callback):  # type: ignore[misc]
        reported = 0

        def call(self, *args: Any, **kwargs: Any) -> None:
            if hold_last and self.size is not None and self.value >= self.size:
                return
            self.finish()

        def finish(self, size: int | None = None) -> None:
            """Tell what is untold; with ``size``, up to it (a backend whose
            ``put_file`` ignores callbacks, as fsspec's local one does, told nothing)."""
            value = max(self.value, size or 0)
            if value != self.reported:
                progress(value - self.reported)
                self.reported = value

    return Told()


def _mtime(info: Mapping[str, Any]) -> float | None:
    """A listed object's modification time (POSIX seconds) from fsspec's info: S3's
    ``LastModified`` (the server's clock), else ``mtime`` or ``created``; None if none."""
    for field in ("LastModified", "mtime", "created"):
        value = info.get(field)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
    return None


def _s3_code(exc: BaseException) -> str | None:
    """The S3 error code behind an s3fs exception (its ``__cause__``, a ClientError)."""
    code = getattr(exc.__cause__, "response", {}).get("Error", {}).get("Code")
    return str(code) if code is not None else None


def _is_not_implemented(exc: OSError) -> bool:
    text = str(exc)
    return "NotImplemented" in text or "501" in text or "not implemented" in text.lower()


# -- opening --------------------------------------------------------------------------


_wrapper: contextvars.ContextVar[Callable[[Transport], Transport] | None] = contextvars.ContextVar(
    "modelvault_transport_wrapper", default=None
)


@contextlib.contextmanager
def wrapping(wrap: Callable[[Transport], Transport]) -> Iterator[None]:
    """Within the block, :func:`open_transport` (so every push, pull and remote listing
    of this thread) returns ``wrap(transport)`` instead of the bare transport: the hook
    of :class:`modelvault.testing.faults.FaultyTransport` and of request counters."""
    token = _wrapper.set(wrap)
    try:
        yield
    finally:
        _wrapper.reset(token)


def open_transport(url: str, options: Mapping[str, Any] | None = None) -> Transport:
    """The transport for an fsspec URL (or local path) and its storage options.

    Raises:
        InvalidInput: the URL, or a URL among the options (``endpoint_url`` in a config
            edited by hand), holds a ``user:password@`` part: it is never used, so the
            secret reaches no library and no log.
        RemoteError: fsspec does not know the protocol, its backend is not installed, or
            the backend failed to connect (e.g. ``ftp://`` refusing connections).
    """
    refuse_password(url)
    opts = dict(options or {})
    where = _password_in(opts)
    if where is not None:
        raise InvalidInput(
            f"{public_url(url)}: the option {where!r} holds a URL with a user:password@ "
            f"part, which is refused so no secret is shown or logged; {_HINT_FOR_SECRETS}"
        )
    wrap = _wrapper.get()
    bare = _open_bare(url, opts)
    return wrap(bare) if wrap is not None else bare


def _open_bare(url: str, opts: dict[str, Any]) -> Transport:
    shown = public_url(url).rstrip("/")
    if "://" not in url or url.startswith("file://"):
        if opts:
            raise RemoteError(f"{shown}: a local folder takes no storage options")
        path = url[len("file://") :] if url.startswith("file://") else url
        return LocalTransport(Path(path).expanduser().absolute(), shown)
    fs, root = _remote_fs(url, "open remote", opts)
    protocol = url.split("://", 1)[0]
    if protocol in ("s3", "s3a"):
        return S3Transport(fs, root, shown)
    if protocol == "memory":
        return MemoryTransport(fs, root, shown)
    return FsspecTransport(fs, root, shown)


def refuse_unknown_protocol(url: str) -> None:
    """Raise InvalidInput when ``url`` names a protocol fsspec has no implementation for
    (a typo such as ``s4://``); nothing is imported or contacted to check it.

    Raises:
        InvalidInput: ``url`` is ``protocol://...`` with an unknown protocol.
    """
    if "://" not in url:
        return  # a local path
    import fsspec

    protocols = []  # "simplecache::s3://b/p" chains two; "git+https" names two
    for part in url.split("::"):
        head = part.split("://", 1)[0] if "://" in part else part
        protocols += head.lower().split("+")
    unknown = [p for p in protocols if p not in fsspec.available_protocols()]
    if unknown:
        raise InvalidInput(
            f"{public_url(url)}: unknown protocol {unknown[0]!r}; use a local path or an fsspec "
            "URL such as s3://bucket/prefix, gs://bucket/prefix or file:///srv/models"
        )
