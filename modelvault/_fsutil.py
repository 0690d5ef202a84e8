"""Local file-system recipes: atomic write, folder fsync, create-only publish, locks.

This module is the one place for the crash-safety recipe (temp file in the same
folder, fsync, rename or link, fsync the folder), and for temporaries that other
processes must see as in use (:func:`in_flight`, :func:`temp_in_use`). Its parts, for
writers that cannot use :func:`atomic_write` whole (a pack is written through its own
descriptor, sealed in another thread, and renamed beside its index):

* :func:`write_new`: create a file read-only with given bytes or a stream's, fsync'd;
* :func:`seal`: finish a file written through a descriptor (fsync, close, read-only);
* :func:`rename_into`: move a durable temporary into place, then fsync the folder
  (or leave that to the caller, who fsyncs a folder once for several renames);
* :func:`replacing`: a file the caller writes through, put in place at the end.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import io
import os
import re
import shutil
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TEMP_PREFIX = ".tmp-"
LOCK_SUFFIX = ".lock"  # never the suffix of a temporary itself
_TOKEN = re.compile(r"\.tmp-(\d+-[0-9a-f]{16})")


def temp_name(folder: Path, suffix: str = ".tmp") -> Path:
    """A fresh, unguessable temporary path inside ``folder``: ``.tmp-<pid>-<16 hex><suffix>``.

    The pid is only a hint for people: whether a temporary is still in use is told by
    its lock (:func:`in_flight`), which processes in other PID namespaces see too.
    """
    return folder / f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(8).hex()}{suffix}"


@contextlib.contextmanager
def in_flight(folder: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A fresh temporary path in ``folder``, seen as in use by every process on the host
    until the block ends (:func:`temp_in_use`).

    Before the path is handed out, ``.tmp-<token>.lock`` beside it is created and locked
    with ``flock``; the kernel drops the lock when this process exits or is killed, so
    a crash needs no clean-up for others to know the temporary is dead. The block
    creates the temporary and removes or renames it; the lock file goes at the end.
    """
    if suffix == LOCK_SUFFIX:
        raise ValueError("a temporary cannot have the lock suffix")
    while True:
        tmp = temp_name(folder, suffix)
        lock = lock_of(tmp)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # a sweep may have removed the lock file between its creation and our flock
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield tmp
    finally:
        # a lock file that cannot be removed is no failure of the block (whose outcome,
        # a published file perhaps, is decided): unlocked once closed, a sweep removes it
        with contextlib.suppress(OSError):
            lock.unlink(missing_ok=True)
        os.close(fd)


def lock_of(temp: Path) -> Path:
    """The lock file guarding a temporary made by :func:`in_flight`."""
    m = _TOKEN.match(temp.name)
    token = m[1] if m else temp.name
    return temp.parent / f"{TEMP_PREFIX}{token}{LOCK_SUFFIX}"


def _locked(path: Path) -> bool:
    """True if some process holds an ``flock`` on ``path`` (False if it does not exist)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def temp_in_use(path: Path) -> bool:
    """True while the process that made the temporary ``path`` (or, for a lock file, the
    temporaries it guards) may still be writing it.

    A temporary is in use while its lock is held; one without a lock file comes from a
    process that crashed before or after it, or from an older modelvault: dead. Locks
    are ``flock``s, so this holds across PID namespaces (containers sharing a volume),
    unlike a check of the pid in the name.
    """
    if not path.name.startswith(TEMP_PREFIX):
        return False
    return _locked(lock_of(path))


def sweep_temps(folder: Path, remove: Callable[[Path], None]) -> None:
    """Call ``remove`` on every dead temporary in ``folder``, then drop dead lock files.

    Entries that vanish or change meanwhile are skipped (their owner finished).
    """
    try:
        names = [p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]
    except (FileNotFoundError, NotADirectoryError):
        return
    temps = [p for p in names if p.name != lock_of(p).name]
    for path in temps:
        if not temp_in_use(path):
            with contextlib.suppress(FileNotFoundError):
                remove(path)
    for lock in (p for p in names if p.name == lock_of(p).name):
        _drop_dead_lock(lock)


def _drop_dead_lock(lock: Path) -> None:
    """Remove a lock file nobody holds whose temporaries are all gone."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        stem = lock.name[: -len(LOCK_SUFFIX)]
        if not any(p.name != lock.name for p in lock.parent.glob(f"{stem}*")):
            lock.unlink(missing_ok=True)  # an owner that raced us re-checks the inode
    finally:
        os.close(fd)


WRITE_MAX = 256 * 1024  # bytes per write call (see write_all)


def write_all(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    """Write every byte of ``parts`` at the file's position, with no copy: ``writev`` calls
    of at most ``WRITE_MAX`` bytes each.

    Why not one call for everything: the kernel fills a write with page-cache folios as
    large as the write allows, and on the VMs measured here fresh large folios often
    cost far more to fill than small ones. Writing 1 GiB from a mapped file, fsync'd,
    took 0.4 s of system time in 256 KiB writes and 2.7-3.0 s in 4 MiB writes; an
    import's system time fell from 2.0 to 1.1 s. 4096 calls per GiB cost next to nothing.
    """
    group: list[memoryview] = []
    size = 0
    for part in parts:
        view = memoryview(part).cast("B")
        while len(view):
            take = view[: WRITE_MAX - size]
            group.append(take)
            size += len(take)
            view = view[len(take) :]
            if size == WRITE_MAX:
                _writev_all(fd, group)
                group, size = [], 0
    if group:
        _writev_all(fd, group)


def _writev_all(fd: int, views: list[memoryview]) -> None:
    """``writev`` until every byte is written (it may write less than asked)."""
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing ``[offset, offset + nbytes)`` of ``fd`` to disk now,
    without waiting (``sync_file_range(SYNC_FILE_RANGE_WRITE)``; Linux only, else nothing).

    Durability still comes from ``fsync``, but a file written this way has little left
    to flush by then, and the disk works while the CPU does. (Left alone, the kernel
    starts writing only after ~30 s or under memory pressure, so a save would hand the
    disk its whole payload at once, at the end.)
    """
    fn = _sync_file_range()
    if fn is not None:
        fn(fd, offset, nbytes, 2)  # SYNC_FILE_RANGE_WRITE; an error only means no head start


def _libc(name: str, *argtypes: str) -> Any:
    """The C library's function ``name`` returning int, with ``argtypes`` (ctypes type
    names), setting errno; None where it has no such function."""
    import ctypes

    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [getattr(ctypes, t) for t in argtypes]
    return fn


@functools.cache
def _sync_file_range() -> Any:
    return _libc("sync_file_range", "c_int", "c_int64", "c_int64", "c_uint")


def preallocate(fd: int, offset: int, nbytes: int, path: Path | None = None) -> None:
    """Reserve disk blocks for ``[offset, offset + nbytes)`` of the file ``fd`` now, without
    changing its size (Linux ``fallocate`` with ``FALLOC_FL_KEEP_SIZE``; elsewhere, or on
    a file system that cannot, nothing: glibc's ``posix_fallocate`` would write zeros).

    Why: on ext4 every page written to a file without blocks takes a delayed-allocation
    reservation, and each write-back started while writing (:class:`WriteBack`) then
    allocates blocks a few MiB at a time. Writing 1 GiB in 256 KiB writes with write-back
    every 8 MiB took 0.48-1.5 s of system time and 0.63-1.7 s in all on this project's
    VMs, and 0.14-0.16 s and 0.41-0.44 s with the blocks reserved first. Used where the
    final size is known (a checkout's files); packs reserved 8 MiB ahead at a time made a
    1 GiB fp32 save 7% less CPU but 7% more wall time (10 alternating runs), so they do
    not. Blocks reserved past the end a file finally has stay allocated to it until it is
    truncated.

    Raises:
        OSError: ENOSPC or EDQUOT when the disk lacks the room (before a byte is written),
            naming ``path``, the file being written.
    """
    fn = _fallocate()
    if fn is None or nbytes <= 0:
        return
    if fn(fd, 1, offset, nbytes) == 0:  # 1: FALLOC_FL_KEEP_SIZE
        return
    import ctypes

    err = ctypes.get_errno()
    if err in (errno.ENOSPC, errno.EDQUOT):
        raise OSError(err, os.strerror(err), None if path is None else str(path))
    # anything else (EOPNOTSUPP, ENOSYS, EINVAL, EBADF of a special file): no head start


@functools.cache
def _fallocate() -> Any:
    import sys

    if not sys.platform.startswith("linux"):  # (glibc's own, which never writes zeros)
        return None
    return _libc("fallocate", "c_int", "c_int", "c_int64", "c_int64")


class WriteBack:
    """Starts writing a file's dirty pages to disk while it is being written, so that the
    final fsync has little left to wait for and the disk works while the CPU does.

    Where ``sync_file_range`` exists (Linux) the write-back of each ``step`` bytes is
    started without waiting (:func:`start_writeback`). Elsewhere ``fdatasync`` runs in a
    helper thread every ``every`` bytes, one at a time.
    """

    def __init__(self, fd: int, every: int = 64 << 20, step: int = 8 << 20) -> None:
        self._fd = fd
        self._ranges = _sync_file_range() is not None
        self._every = step if self._ranges else every
        self._unsynced = 0
        self._offset = 0  # (sync_file_range) where the bytes not yet started begin
        self._running: threading.Thread | None = None
        self._error: list[OSError] = []

    def wrote(self, n: int) -> None:
        """Count ``n`` bytes written (appended); start a write-back if enough wait."""
        self._unsynced += n
        if self._unsynced < self._every:
            return
        if self._ranges:
            start_writeback(self._fd, self._offset, self._unsynced)
            self._offset += self._unsynced
            self._unsynced = 0
            return
        if self._running and self._running.is_alive():
            return
        self._unsynced = 0
        self._running = threading.Thread(target=self._sync, name="modelvault-writeback")
        self._running.start()

    def _sync(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError as exc:  # reported by wait(): a write-back error is seen once
            self._error.append(exc)

    def join(self) -> None:
        """Wait for the write-back under way (before closing the file)."""
        if self._running is not None:
            self._running.join()

    def wait(self) -> None:
        """Wait for the write-back under way; raise its error, if any."""
        self.join()
        if self._error:
            raise self._error[0]


COPY_BLOCK = 4 * 1024 * 1024  # bytes read from a stream at a time (write_new)

Content = bytes | bytearray | memoryview | BinaryIO  # bytes, or a binary stream read to its end


def write_new(path: Path, data: Content) -> None:
    """Create ``path`` (it must not exist) read-only, holding ``data`` (bytes, or what a
    binary stream holds from its position to its end), and fsync it. On failure the
    file is removed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        if isinstance(data, bytes | bytearray | memoryview):
            write_all(fd, [memoryview(data)])
        else:
            while block := data.read(COPY_BLOCK):
                write_all(fd, [block])
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def seal(fd: int, path: Path) -> None:
    """Finish the file ``path`` written through ``fd``: fsync it, close ``fd`` (whatever
    happens) and make the file read-only. It is then ready for :func:`rename_into`."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, 0o444)


def rename_into(tmp: Path, final: Path, *, sync_dir: bool = True) -> None:
    """Move the durable temporary ``tmp`` over ``final`` in one rename (a reader sees the
    old file or the new one), removing ``tmp`` if the rename fails; then fsync the folder
    of ``final``, unless ``sync_dir`` is False (the caller fsyncs it once for several)."""
    try:
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(final.parent)


@contextlib.contextmanager
def replacing(path: Path, suffix: str = ".tmp") -> Iterator[io.FileIO]:
    """A new unbuffered file for the block to write, which replaces ``path`` when the
    block ends normally: fsync'd, renamed over ``path``, the folder fsync'd. On an
    exception it is removed and ``path`` is left as it was. (For a file of the user's,
    such as an archive: it keeps the usual permissions, and its temporary in the same
    folder, ``.tmp-...<suffix>``, has no in-flight lock.)"""
    tmp = temp_name(path.parent, suffix)
    try:
        with open(tmp, "xb", buffering=0) as f:
            assert isinstance(f, io.FileIO)
            yield f
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    rename_into(tmp, path)


def atomic_write(path: Path, data: Content) -> None:
    """Replace ``path`` with ``data`` (bytes, or a binary stream read to its end) so that
    a reader sees the old or the new content; durable when this returns."""
    with in_flight(path.parent) as tmp:
        write_new(tmp, data)
        rename_into(tmp, path, sync_dir=False)
    fsync_dir(path.parent)


def create_only(path: Path, data: bytes) -> bool:
    """Write ``path`` with ``data`` only if it does not exist yet; durable when True.

    Returns False (writing nothing) when ``path`` already exists. The content
    appears whole or not at all: it is written to a temp file and hard-linked.
    """
    with in_flight(path.parent) as tmp:
        write_new(tmp, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            published = False
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        else:
            published = True
        # the outcome is known: a temporary that cannot be removed now is a leftover for
        # gc, not a failure of the write (reporting one would make a retry find the path
        # taken after all)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if not published:
            return False
    fsync_dir(path.parent)
    return True


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool) -> Iterator[None]:
    """Hold an advisory ``flock`` on ``path`` (created if missing) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def make_writable(path: Path) -> None:
    """Give the owner write permission on the folders of a read-only tree so it can be
    removed (entries that vanish meanwhile are skipped)."""
    for root, dirs, _ in os.walk(path):
        for d in [path, *(Path(root) / d for d in dirs)]:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(d, os.lstat(d).st_mode | stat.S_IWUSR)


def remove_tree(path: Path) -> None:
    """Remove a folder, read-only or not; what vanishes meanwhile (another process
    removing it too) is no error."""
    if not path.exists():
        return
    make_writable(path)

    def gone_already(fn: object, p: str, exc_info: tuple[type, BaseException, object]) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]

    shutil.rmtree(path, onerror=gone_already)


@contextlib.contextmanager
def reports_disk_full(op: str, where: Path, advice: str | None = None) -> Iterator[None]:
    """Turn a disk-full ``OSError`` inside the block into :class:`~modelvault.errors.DiskFull`
    saying that ``op`` failed, where (the failing file, else ``where``), how much is free
    and what to free, and an I/O error (EIO) into :class:`~modelvault.errors.StorageError`.
    The store itself stays as it was: nothing half-written is published.
    """
    from modelvault.errors import DiskFull, ModelVaultError, StorageError

    try:
        yield
    except DiskFull:
        raise
    except OSError as exc:
        at = Path(exc.filename) if exc.filename else where
        if exc.errno == errno.EIO and not isinstance(exc, ModelVaultError):  # (RemoteError)
            raise StorageError(
                exc.errno,
                f"{op} failed: the disk holding {at} reported an I/O error; what was being "
                "written is not published (the store keeps what it had). Check the disk "
                "(`dmesg`), then run `mv verify` and try again",
                exc.filename,
            ) from exc
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFull(
            exc.errno,
            f"{op} failed: no space left on the disk holding {at} ({_free(at)} free); "
            "nothing was published and the store is as it was. "
            + (
                advice
                or "Free space there (`mv delete` old versions, then `mv gc`; `mv du` "
                "shows what each model holds) and try again"
            ),
            exc.filename,
        ) from exc


def _free(path: Path) -> str:
    for p in (path, *path.parents):
        with contextlib.suppress(OSError):
            st = os.statvfs(p)
            return f"{st.f_bavail * st.f_frsize / 2**20:.1f} MiB"
    return "unknown"
