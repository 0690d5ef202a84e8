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
This module is the only one importing fsspec. The abstract class is in
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
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar, cast

from modelvault import _fsutil
from modelvault.errors import InvalidInput, ModelVaultError, NotFound, PathNotFound, RemoteError
from modelvault.remote.base import Range, Transport, content_token
from modelvault.remote.local import LocalTransport
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

T = TypeVar("T")

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


# botocore's own retry and timeouts for S3 (through s3fs ``config_kwargs``; a remote's
# ``config_kwargs`` option overrides each key). Standard mode retries connection errors,
# timeouts, 5xx and throttling with jittered backoff (<= 1 s, then <= 2 s), and nothing
# else; a socket that connects in no 3 s or a read that gets no byte in 15 s is a failure.
S3_CONFIG: dict[str, Any] = {
    "connect_timeout": 3,
    "read_timeout": 15,
    "retries": {"total_max_attempts": 3, "mode": "standard"},
}

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


def _s3_options(opts: dict[str, Any]) -> dict[str, Any]:
    out = dict(opts)
    out["config_kwargs"] = {**S3_CONFIG, **(opts.get("config_kwargs") or {})}
    # a file system of its own: the current environment's credentials and endpoint, and
    # the retry settings below stay ours
    out.setdefault("skip_instance_cache", True)
    return out


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


# -- one file in or out (archives) ----------------------------------------------------

_IO_BLOCK = 1 << 20
_UPLOAD_ON_CLOSE = {"s3", "s3a", "gs", "gcs"}  # an object appears only once its upload ends


class _Guarded:
    """A remote file whose foreign failures (reading, writing, closing) are RemoteError
    naming ``what`` (a verb and the public URL); everything else is the file's own."""

    def __init__(self, f: Any, what: str) -> None:
        self._f = f
        self._what = what

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ModelVaultError:
            raise
        except Exception as exc:
            raise remote_error(self._what, exc) from exc

    def read(self, n: int = -1) -> bytes:
        return self._call(lambda: self._f.read(n))  # type: ignore[no-any-return]

    def write(self, data: bytes | memoryview) -> int:
        return self._call(lambda: self._f.write(data))  # type: ignore[no-any-return]

    def close(self) -> None:
        self._call(self._f.close)

    def __enter__(self) -> _Guarded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def _remote_fs(url: str, verb: str, opts: dict[str, Any] | None = None) -> tuple[Any, str]:
    """``(file system, path)`` of a URL and its storage options, with the S3 settings of
    :data:`S3_CONFIG`; failures to open are RemoteError naming ``verb`` and the URL."""
    import fsspec

    refuse_password(url)  # a secret in the URL would reach fsspec, its logs and errors
    shown = public_url(url)
    opts = opts or {}
    s3 = url.split("://", 1)[0] in ("s3", "s3a")
    try:
        fs, path = fsspec.core.url_to_fs(url, **(_s3_options(opts) if s3 else opts))
    except ModelVaultError:
        raise
    except (ImportError, ValueError, TypeError) as exc:
        raise RemoteError(redact(f"cannot {verb} {shown}: {exc}")) from exc
    except Exception as exc:  # a backend connecting at once (ftp, sftp) and failing
        raise remote_error(f"{verb} {shown}", exc) from exc
    if s3:
        fs.retries = 1  # s3fs's own retry loop would repeat botocore's attempts
    return fs, path


@contextlib.contextmanager
def open_input(src: str) -> Iterator[IO[bytes]]:
    """One file to read from start to end: a local path (unbuffered, so a caller may
    memory-map it) or an fsspec URL (read in 8 MiB blocks; S3 with :data:`S3_CONFIG`).

    Raises:
        InvalidInput: the URL holds a ``user:password@`` part.
        PathNotFound: there is no such file.
        RemoteError: the URL's backend failed (unreachable, access denied, ...), also
            while the file is read.
    """
    if "://" not in src:
        try:
            f = open(src, "rb", buffering=0)  # noqa: SIM115  (callers read big blocks)
        except FileNotFoundError:
            raise PathNotFound(f"{src}: no such file") from None
        with contextlib.suppress(OSError, AttributeError):  # read-ahead hint only
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        with f:
            yield f
        return
    shown = public_url(src)
    fs, path = _remote_fs(src, "read")
    try:
        raw = fs.open(path, "rb", block_size=8 * _IO_BLOCK)
    except FileNotFoundError:
        raise PathNotFound(f"{shown}: no such file") from None
    except ModelVaultError:
        raise
    except Exception as exc:
        raise remote_error(f"read {shown}", exc) from exc
    with _Guarded(raw, f"read {shown}") as guarded:
        yield cast(IO[bytes], guarded)


@contextlib.contextmanager
def open_output(dest: str, name: str) -> Iterator[tuple[IO[bytes], str]]:
    """One new file that appears under its final name only once complete (on an error,
    nothing appears): ``dest``, a local path or fsspec URL, or ``dest/name`` when ``dest``
    is a folder (existing, or ending in ``/``). Yields the stream and where the file will
    be (an absolute path, or the URL without secrets).

    A local file is a temporary beside the target, fsync'd and renamed (an unbuffered
    ``FileIO``, for ``writev``); an object store's object appears when its upload
    completes (aborted on error); other file systems get a hidden temporary that is moved.

    Raises:
        InvalidInput: the URL holds a ``user:password@`` part.
        RemoteError: the URL's backend failed (unreachable, access denied, ...), also
            while the file is written.
    """
    if "://" not in dest:
        local = Path(dest).expanduser().absolute()
        if dest.endswith(("/", os.sep)) or local.is_dir():
            local = local / name
        with _local_output(local, Path(name).suffix) as out:
            yield out, str(local)
        return
    from fsspec.implementations.local import LocalFileSystem

    shown = public_url(dest)
    fs, path = _remote_fs(dest, "write")
    try:
        if dest.endswith("/") or fs.isdir(path):
            path = f"{path.rstrip('/')}/{name}"
    except ModelVaultError:
        raise
    except Exception as exc:
        raise remote_error(f"write {shown}", exc) from exc
    where = public_url(fs.unstrip_protocol(path))
    if isinstance(fs, LocalFileSystem):
        with _local_output(Path(path), Path(name).suffix) as out:
            yield out, where
        return
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    output = _upload_output if protocols & _UPLOAD_ON_CLOSE else _renamed_output
    in_caller = False  # the caller's own errors pass as they are
    try:
        with output(fs, path, f"write {where}") as out:
            in_caller = True
            yield cast(IO[bytes], out), where
            in_caller = False
    except ModelVaultError:
        raise
    except Exception as exc:  # opening, or finishing the upload or the move
        if in_caller:
            raise
        raise remote_error(f"write {where}", exc) from exc


@contextlib.contextmanager
def _local_output(path: Path, suffix: str) -> Iterator[IO[bytes]]:
    """Temp file (ending in ``suffix``) in the same folder, fsync, rename, fsync the folder
    (``_fsutil.replacing``; unbuffered: the caller batches its writes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _fsutil.replacing(path, suffix) as f:
        yield f


@contextlib.contextmanager
def _upload_output(fs: Any, path: str, what: str) -> Iterator[_Guarded]:
    """Object stores: the object appears when the upload completes; on error it is aborted."""
    f = fs.open(path, "wb")
    try:
        yield _Guarded(f, what)
    except BaseException:
        with contextlib.suppress(Exception):  # (the upload may have failed already)
            f.discard()  # aborts the multipart upload, or drops the single-PUT buffer
        f.closed = True  # so that close() (also from __del__) uploads nothing
        raise
    _Guarded(f, what).close()


@contextlib.contextmanager
def _renamed_output(fs: Any, path: str, what: str) -> Iterator[_Guarded]:
    """Other file systems: write a hidden temporary beside the target, then move it."""
    parent, _, base = path.rpartition("/")
    tmp = f"{parent}/{_fsutil.temp_name(Path(), '-' + base).name}"
    try:
        with fs.open(tmp, "wb") as f:
            yield _Guarded(f, what)
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(tmp)
        raise


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
