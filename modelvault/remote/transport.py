"""Transports: the few verbs a remote needs, one class per kind of backend.

::

    Transport (abstract)          put, put_file, put_if_absent, get, get_ranges, list, delete
     ├── LocalTransport           file:// — temp file + fsync + rename / hard link (create-only)
     ├── FsspecTransport          any other fsspec URL (create-only = check then write)
     │    ├── MemoryTransport     memory:// — create-only under a process lock
     │    └── S3Transport         s3:// — create-only = PutObject with ``If-None-Match: *``
     ├── Metered                  wrapper: counts requests and bytes
     └── Retrying                 wrapper: retries transient failures with backoff and turns
                                  every foreign exception into RemoteError (with the URL)

Keys are ``/``-separated paths relative to the remote's root. A missing key is reported
as :class:`~modelvault.errors.NotFound` by every transport; every other failure leaves a
transport wrapped in :class:`Retrying` as :class:`~modelvault.errors.RemoteError`.
This module (with the rest of ``modelvault.remote``) is the only one importing fsspec.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import shutil
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from modelvault import _fsutil
from modelvault.errors import ModelVaultError, NotFound, RemoteError

T = TypeVar("T")
Range = tuple[int, int]  # (offset, length)

_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/@]*@")


def public_url(url: str) -> str:
    """``url`` without any ``user:secret@`` part, for messages."""
    return _USERINFO.sub(r"\1", url)


class Transport(ABC):
    """The verbs of a remote. Implementations raise foreign exceptions as they come;
    :class:`Retrying` translates them. A missing key raises NotFound."""

    url: str  # public URL of the root (no secrets)

    @property
    def atomic_create(self) -> bool:
        """Whether ``put_if_absent`` is atomic against other processes and machines."""
        return True

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write ``key``; readers see the old content, the new one, or (new key) nothing."""

    def put_file(self, key: str, path: Path) -> None:
        """Write ``key`` with the content of a local file (streamed where the backend can)."""
        self.put(key, path.read_bytes())

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist; False (writing nothing) if it does."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole content of ``key``; NotFound if absent."""

    @abstractmethod
    def get_ranges(self, key: str, ranges: Sequence[Range]) -> list[bytes]:
        """The bytes of each ``(offset, length)`` range of ``key`` (shorter at the end)."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix/`` (recursive), relative to the root; [] if none."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (no error if absent)."""

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        try:
            self.get_ranges(key, [(0, 1)])
        except NotFound:
            return False
        return True


# -- file:// ------------------------------------------------------------------------


class LocalTransport(Transport):
    """A folder on a local (or mounted) file system, written with the store's own recipe."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _folder(self, key: str) -> Path:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def put(self, key: str, data: bytes) -> None:
        _fsutil.atomic_write(self._folder(key), data)

    def put_file(self, key: str, path: Path) -> None:
        final = self._folder(key)
        tmp = _fsutil.temp_name(final.parent)
        try:
            with open(path, "rb") as src, open(tmp, "xb") as dst:
                shutil.copyfileobj(src, dst, 4 * 1024 * 1024)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        _fsutil.fsync_dir(final.parent)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return _fsutil.create_only(self._folder(key), data)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{self.url}/{key} does not exist") from None

    def get_ranges(self, key: str, ranges: Sequence[Range]) -> list[bytes]:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{self.url}/{key} does not exist") from None
        try:
            return [os.pread(fd, length, offset) for offset, length in ranges]
        finally:
            os.close(fd)

    def list(self, prefix: str) -> list[str]:
        top = self._path(prefix)
        if not top.is_dir():
            return []
        keys = []
        for folder, _, files in os.walk(top):
            rel = Path(folder).relative_to(self.root).as_posix()
            keys += [f"{rel}/{name}" for name in files if not name.startswith(".tmp-")]
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


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

    def get(self, key: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except FileNotFoundError:
            raise NotFound(f"{self.url}/{key} does not exist") from None

    def get_ranges(self, key: str, ranges: Sequence[Range]) -> list[bytes]:
        if not ranges:
            return []
        path = self._path(key)
        starts = [off for off, _ in ranges]
        ends = [off + n for off, n in ranges]
        try:
            out = self.fs.cat_ranges([path] * len(ranges), starts, ends, on_error="raise")
        except FileNotFoundError:
            raise NotFound(f"{self.url}/{key} does not exist") from None
        return [bytes(b) for b in out]

    def list(self, prefix: str) -> list[str]:
        top = self._path(prefix).rstrip("/")
        self.fs.invalidate_cache(top)
        try:
            found = self.fs.find(top)
        except FileNotFoundError:
            return []
        head = self.root + "/"
        return sorted(p[len(head) :] for p in found if p.startswith(head))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))


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


class S3Transport(FsspecTransport):
    """S3 through s3fs. Create-only is PutObject with ``If-None-Match: *`` (AWS since
    2024-08, MinIO, moto): the server refuses the second writer with 412."""

    def __init__(self, fs: Any, root: str, url: str) -> None:
        super().__init__(fs, root, url)
        self._conditional = True

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


def _is_not_implemented(exc: OSError) -> bool:
    text = str(exc)
    return "NotImplemented" in text or "501" in text or "not implemented" in text.lower()


# -- wrappers -------------------------------------------------------------------------


class Metered(Transport):
    """Counts requests (one per range) and bytes in each direction; thread-safe."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.url = inner.url
        self.requests = 0
        self.sent = 0
        self.received = 0
        self._lock = threading.Lock()

    @property
    def atomic_create(self) -> bool:
        return self.inner.atomic_create

    def _count(self, requests: int, sent: int = 0, received: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.sent += sent
            self.received += received

    def put(self, key: str, data: bytes) -> None:
        self._count(1, sent=len(data))
        self.inner.put(key, data)

    def put_file(self, key: str, path: Path) -> None:
        self._count(1, sent=path.stat().st_size)
        self.inner.put_file(key, path)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self._count(1, sent=len(data))
        return self.inner.put_if_absent(key, data)

    def get(self, key: str) -> bytes:
        self._count(1)
        data = self.inner.get(key)
        self._count(0, received=len(data))
        return data

    def get_ranges(self, key: str, ranges: Sequence[Range]) -> list[bytes]:
        self._count(len(ranges))
        out = self.inner.get_ranges(key, ranges)
        self._count(0, received=sum(len(b) for b in out))
        return out

    def list(self, prefix: str) -> list[str]:
        self._count(1)
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._count(1)
        self.inner.delete(key)


_TRANSIENT_ERRNOS = {
    errno.EAGAIN,
    errno.EIO,
    errno.EBUSY,
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.EPIPE,
}
_PERMANENT = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether a failure may go away by itself (network, throttling, a busy server)."""
    if isinstance(exc, (ModelVaultError, *_PERMANENT)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp", "urllib3"):
        return True
    if isinstance(exc, OSError):
        text = str(exc)
        slow = any(s in text for s in ("SlowDown", "ServiceUnavailable", "InternalError"))
        return exc.errno is None or exc.errno in _TRANSIENT_ERRNOS or slow
    return False


class Retrying(Transport):
    """Retries transient failures (bounded, exponential backoff with jitter) and turns
    every foreign exception into RemoteError naming the URL and the cause."""

    def __init__(self, inner: Transport, attempts: int = 4, delay: float = 0.2) -> None:
        self.inner = inner
        self.url = inner.url
        self.attempts = attempts
        self.delay = delay

    @property
    def atomic_create(self) -> bool:
        return self.inner.atomic_create

    def _call(self, verb: str, key: str, fn: Callable[[], T]) -> T:
        for attempt in range(self.attempts):
            try:
                return fn()
            except ModelVaultError:
                raise
            except Exception as exc:
                if not is_transient(exc) or attempt == self.attempts - 1:
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    raise RemoteError(
                        f"{verb} {self.url}/{key} failed{tries}: {type(exc).__name__}: {exc}"
                    ) from exc
                time.sleep(self.delay * 2**attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def put(self, key: str, data: bytes) -> None:
        self._call("put", key, lambda: self.inner.put(key, data))

    def put_file(self, key: str, path: Path) -> None:
        self._call("put", key, lambda: self.inner.put_file(key, path))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._call("create", key, lambda: self.inner.put_if_absent(key, data))

    def get(self, key: str) -> bytes:
        return self._call("get", key, lambda: self.inner.get(key))

    def get_ranges(self, key: str, ranges: Sequence[Range]) -> list[bytes]:
        return self._call("get", key, lambda: self.inner.get_ranges(key, ranges))

    def list(self, prefix: str) -> list[str]:
        return self._call("list", prefix, lambda: self.inner.list(prefix))

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.inner.delete(key))


# -- opening --------------------------------------------------------------------------


def open_transport(url: str, options: Mapping[str, Any] | None = None) -> Transport:
    """The bare transport for an fsspec URL (or local path) and its storage options.

    Raises:
        RemoteError: fsspec does not know the protocol, or its backend is not installed.
    """
    opts = dict(options or {})
    shown = public_url(url)
    if "://" not in url or url.startswith("file://"):
        if opts:
            raise RemoteError(f"{shown}: a local folder takes no storage options")
        path = url[len("file://") :] if url.startswith("file://") else url
        return LocalTransport(Path(path).expanduser().absolute(), shown.rstrip("/"))
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url, **opts)
    except (ImportError, ValueError, TypeError) as exc:
        raise RemoteError(f"cannot open remote {shown}: {exc}") from exc
    protocol = url.split("://", 1)[0]
    if protocol in ("s3", "s3a"):
        return S3Transport(fs, root, shown.rstrip("/"))
    if protocol == "memory":
        return MemoryTransport(fs, root, shown.rstrip("/"))
    return FsspecTransport(fs, root, shown.rstrip("/"))
