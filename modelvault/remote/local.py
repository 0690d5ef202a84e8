"""``file://`` remotes: :class:`LocalTransport`, a folder on a local (or mounted) file
system written with the store's own crash-safety recipe (``_fsutil``); no fsspec. Opened
and re-exported by :mod:`modelvault.remote.transport`."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, cast

from modelvault import _fsutil
from modelvault.errors import NotFound
from modelvault.remote.base import Bytes, Range, Transport, content_token

__all__ = ["PIECE", "LocalTransport"]

PIECE = 1024 * 1024  # bytes moved between two progress reports (upload, read_range)


class _Told:
    """A binary stream over ``source`` that tells ``progress`` of each piece once the
    writer asks for the next one (so once it is written), and of the last at the end."""

    def __init__(self, source: BinaryIO, progress: Bytes) -> None:
        self._source = source
        self._progress = progress
        self._pending = 0

    def read(self, n: int = -1) -> bytes:
        if self._pending:
            self._progress(self._pending)
        block = self._source.read(PIECE if n < 0 else min(n, PIECE))
        self._pending = len(block)
        return block


_SWAP_LOCK = f"{_fsutil.TEMP_PREFIX}swap{_fsutil.LOCK_SUFFIX}"  # hidden from list()


@contextlib.contextmanager
def _swap_lock(lock: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``lock``, on the file that is there when it is held (a
    lock file removed and made anew meanwhile is locked again, as ``_fsutil.in_flight``
    does), so two writers never both hold the lock of one folder."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with contextlib.suppress(FileNotFoundError):
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    yield
                    return
        finally:
            os.close(fd)


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
        with open(path, "rb") as src:
            _fsutil.atomic_write(self._folder(key), src)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return _fsutil.create_only(self._folder(key), data)

    def upload(self, key: str, source: bytes | Path, progress: Bytes) -> None:
        """Written :data:`PIECE` by :data:`PIECE`, each told once written (then fsync'd
        and renamed, as :meth:`put` does)."""
        with contextlib.ExitStack() as stack:
            if isinstance(source, Path):
                stream: BinaryIO = stack.enter_context(open(source, "rb"))
            else:
                stream = io.BytesIO(source)
            _fsutil.atomic_write(self._folder(key), cast(BinaryIO, _Told(stream, progress)))

    def read_range(self, key: str, offset: int, length: int, progress: Bytes) -> bytes:
        """Read :data:`PIECE` by :data:`PIECE`, each told once read."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{self.url}/{key} does not exist") from None
        try:
            buf = bytearray(length)
            view = memoryview(buf)
            got = 0
            while got < length:
                n = os.preadv(fd, [view[got : got + PIECE]], offset + got)
                if n == 0:
                    break  # the end of the file
                got += n
                progress(n)
            del view
            return bytes(buf[:got]) if got < length else bytes(buf)
        finally:
            os.close(fd)

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

    @property
    def atomic_swap(self) -> bool:
        return True

    def put_if_match(self, key: str, data: bytes, token: str | None) -> bool:
        """Check and replace under an ``flock`` on the folder's hidden
        ``.tmp-swap.lock`` (every process of the host, and NFS clients with working
        locks, see it); the replacement is an atomic rename, so readers never wait."""
        path = self._folder(key)
        with _swap_lock(path.parent / _SWAP_LOCK):
            try:
                now: str | None = content_token(path.read_bytes())
            except FileNotFoundError:
                now = None
            if now != token:
                return False
            _fsutil.atomic_write(path, data)
            return True

    def list_times(self, prefix: str) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for key in self.list(prefix):
            with contextlib.suppress(FileNotFoundError):
                out[key] = self._path(key).stat().st_mtime
        return out
