"""Opening fsspec file systems (S3 with botocore's retry and timeouts, :data:`S3_CONFIG`)
and single files in or out (archives: :func:`open_input`, :func:`open_output`).
Re-exported by :mod:`modelvault.remote.transport`; with it, the only module importing
fsspec."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar, cast

from modelvault import _fsutil
from modelvault.errors import ModelVaultError, PathNotFound, RemoteError
from modelvault.remote.urls import public_url, redact, refuse_password, remote_error

T = TypeVar("T")

__all__ = ["S3_CONFIG", "open_input", "open_output", "size_of"]


# botocore's own retry and timeouts for S3 (through s3fs ``config_kwargs``; a remote's
# ``config_kwargs`` option overrides each key). Standard mode retries connection errors,
# timeouts, 5xx and throttling with jittered backoff (<= 1 s, then <= 2 s), and nothing
# else; a socket that connects in no 3 s or a read that gets no byte in 15 s is a failure.
S3_CONFIG: dict[str, Any] = {
    "connect_timeout": 3,
    "read_timeout": 15,
    "retries": {"total_max_attempts": 3, "mode": "standard"},
}


def _s3_options(opts: dict[str, Any]) -> dict[str, Any]:
    out = dict(opts)
    out["config_kwargs"] = {**S3_CONFIG, **(opts.get("config_kwargs") or {})}
    # a file system of its own: the current environment's credentials and endpoint, and
    # the retry settings below stay ours
    out.setdefault("skip_instance_cache", True)
    return out


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


def size_of(src: str) -> int | None:
    """The size of the file at ``src`` (a local path or an fsspec URL: one metadata
    request), or None when it cannot be known (missing, unreachable, refused): the
    caller's own open reports why."""
    try:
        if "://" not in src:
            return os.path.getsize(src)
        fs, path = _remote_fs(src, "read")
        return int(fs.size(path))
    except Exception:  # a size for a progress bar, nothing more
        return None


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
        _Guarded(f, what).close()  # completes the upload (a failure here aborts it too)
    except BaseException:
        with contextlib.suppress(Exception):  # (the upload may have failed already)
            f.discard()  # aborts the multipart upload, or drops the single-PUT buffer
        f.closed = True  # so that close() (also from __del__) uploads nothing
        raise


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
