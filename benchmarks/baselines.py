"""Baselines and measuring tools shared by the modelvault benchmarks.

- ``cp_sync_seconds``: the reference every store benchmark is compared with,
  ``cp -r SRC DST && sync``, on a fresh destination; ``prepare`` before every step.
- ``run_in_child``: run one measured step in a fresh ``spawn`` process and report its peak
  memory (exact peak RSS from ``getrusage``, plus anonymous memory sampled from the parent).
- ``CopyStore``: a trivial stand-in for ``modelvault.Store`` (copy + fsync), so the harness
  can run end to end without the real store.
- ``markdown_table``: render result rows.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Generic, TypeVar

import psutil

MIB = 1 << 20
SAMPLE_INTERVAL_S = 0.005
T = TypeVar("T")


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(values))


def timed(fn: Callable[[], object]) -> float:
    """Seconds taken by one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def serve_on_loopback(
    serve: Callable[[int], None], tries: int = 200
) -> tuple[multiprocessing.process.BaseProcess, str]:
    """Start ``serve(port)`` (a module-level function) in a spawned daemon process on a
    free loopback port; once the port accepts connections: (the process, its URL)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = multiprocessing.get_context("spawn").Process(target=serve, args=(port,), daemon=True)
    proc.start()
    for _ in range(tries):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.05)
    raise RuntimeError("the server did not start")


def drop_tree(path: Path) -> None:
    """Remove ``path`` and everything under it, read-only folders included; no-op if absent."""
    if not path.exists():
        return
    if path.is_dir() and not path.is_symlink():
        path.chmod(0o700)
        for root, dirs, _ in os.walk(path):
            for d in dirs:
                Path(root, d).chmod(0o700)
        shutil.rmtree(path)
    else:
        path.unlink()


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def can_drop_page_cache() -> bool:
    """Whether :func:`drop_page_cache` may empty the page cache here (root)."""
    return os.access(DROP_CACHES, os.W_OK)


def drop_page_cache() -> bool:
    """Flush dirty pages and, where permitted (root), empty the page cache.

    A full page cache makes every new page cost a reclaim in the writer's own system
    time, and how full it is depends on what ran before: the same 1 GiB copy took 0.4 to
    3.4 s of system CPU here. Emptying it before each step gives both sides of a pair
    the same start. Returns False where it is not permitted (the cache is then only
    flushed, not emptied).
    """
    os.sync()
    try:
        DROP_CACHES.write_text("1\n")
    except OSError:
        return False
    return True


def prepare(*inputs: Path) -> bool:
    """Untimed, before every measured step and every baseline: flush and empty the page
    cache (:func:`drop_page_cache`), then read the step's ``inputs`` into it, so each side
    starts from the same state with its own inputs cached. Returns whether the cache
    was emptied."""
    dropped = drop_page_cache()
    for path in inputs:
        warm_cache(path)
    return dropped


def warm_cache(path: Path) -> int:
    """Read every file under ``path`` once, so the next reader finds it in the page cache.

    Without this, whichever of two steps reading the same folder goes first pays for the
    disk reads (the workload, the copies and the stores do not all fit in RAM at 1 GiB).
    Returns the bytes read.
    """
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    buf = bytearray(8 * MIB)
    total = 0
    for file in files:
        with file.open("rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total


def cp_sync_seconds(src: Path, dst: Path) -> float:
    """Time ``cp -r src dst && sync`` into a fresh ``dst``.

    The old destination is removed and pending writes are flushed first, outside the timing,
    so earlier work is not charged to this copy.
    """
    drop_tree(dst)
    os.sync()
    start = time.perf_counter()
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - start


# --- peak memory of a step in a child process ----------------------------------------


@dataclass(frozen=True)
class ChildResult(Generic[T]):
    """What a step run in a child returned, and the child's peak memory in bytes.

    ``peak_rss`` is exact (``ru_maxrss``) and counts file pages mapped into the process;
    ``peak_anon`` is anonymous + shared memory, sampled every few milliseconds.
    """

    value: T
    peak_rss: int
    peak_anon: int

    @property
    def peak_rss_mib(self) -> float:
        """Peak RSS in MiB."""
        return self.peak_rss / MIB

    @property
    def peak_anon_mib(self) -> float:
        """Sampled peak anonymous memory in MiB."""
        return self.peak_anon / MIB


def _maxrss_bytes() -> int:
    """Peak RSS of this process and its waited-for children, in bytes.

    On Linux this process's own peak is ``VmHWM``, not ``ru_maxrss``: Linux carries
    ``ru_maxrss`` over fork and exec, so a spawned child would report at least its
    parent's peak at the fork.
    """
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with open("/proc/self/status") as f:
            own = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass  # no /proc (macOS): ru_maxrss is all there is
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) * scale


def _child_main(conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Body of the child process: run ``fn`` and send back its value and peak RSS."""
    try:
        value = fn(*args)
        conn.send(("ok", value, _maxrss_bytes()))
    except BaseException:
        conn.send(("error", traceback.format_exc(), 0))
    finally:
        conn.close()


def anon_bytes(pid: int) -> int:
    """Anonymous + shared resident memory of ``pid`` (RSS where /proc is missing); 0 if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return 0
    except OSError:
        return 0
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    kib = [int(fields[k].split()[0]) for k in ("RssAnon", "RssShmem") if k in fields]
    return 1024 * sum(kib)


def run_in_child(fn: Callable[..., T], *args: Any) -> ChildResult[T]:
    """Run ``fn(*args)`` in a fresh spawned process; return its value and peak memory.

    ``fn`` must be importable (a module-level function) and its value picklable. The child's
    traceback is re-raised here as ``RuntimeError``.
    """
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_main, args=(sender, fn, args))
    child.start()
    sender.close()
    peak_anon = 0
    message: tuple[str, Any, int] | None = None
    while message is None:
        peak_anon = max(peak_anon, anon_bytes(child.pid or 0))
        if receiver.poll(SAMPLE_INTERVAL_S):
            try:
                message = receiver.recv()
            except EOFError:  # the child died without a word
                break
        elif not child.is_alive():
            break
    child.join()
    receiver.close()
    if message is None:
        raise RuntimeError(f"child for {fn.__name__} died with exit code {child.exitcode}")
    status, value, peak_rss = message
    if status != "ok":
        raise RuntimeError(f"child for {fn.__name__} failed:\n{value}")
    return ChildResult(value, peak_rss, peak_anon)


# --- a stand-in store ----------------------------------------------------------------


def _fsync_path(path: Path) -> None:
    """fsync a file or a folder."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_durably(src: Path, dst: Path) -> None:
    """Copy the folder (or file) ``src`` to a new ``dst`` and fsync it, published by rename."""
    tmp = dst.with_name(f".tmp-{dst.name}-{os.getpid()}")
    drop_tree(tmp)
    if src.is_dir():
        shutil.copytree(src, tmp)
    else:
        tmp.mkdir()
        shutil.copyfile(src, tmp / src.name)
    for root, _, files in os.walk(tmp):
        for name in files:
            _fsync_path(Path(root, name))
        _fsync_path(Path(root))
    tmp.rename(dst)
    _fsync_path(dst.parent)


@dataclass(frozen=True)
class CopyStats:
    """``Store.stats()`` of the stand-in."""

    models: int
    logical_bytes: int
    stored_bytes: int


class CopyModel:
    """A saved model of the stand-in: ``path`` materialises a copy once."""

    def __init__(self, stored: Path, cache: Path) -> None:
        self._stored = stored
        self._cache = cache

    @property
    def path(self) -> str:
        """The materialised folder; copied (durably) on first access."""
        if not self._cache.exists():
            self._cache.parent.mkdir(parents=True, exist_ok=True)
            copy_durably(self._stored, self._cache)
        return str(self._cache)


class CopyStore:
    """A trivial stand-in for ``modelvault.Store``: every save is a full durable copy."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _key(tag: str) -> str:
        return tag.replace(":", "_")

    def save(self, path: str | os.PathLike[str], tag: str) -> CopyModel:
        """Copy the folder into the store and fsync it."""
        copy_durably(Path(path), self.root / "objects" / self._key(tag))
        return self.get(tag)

    def get(self, tag: str) -> CopyModel:
        """The saved model ``tag``; raises ``KeyError`` if absent."""
        stored = self.root / "objects" / self._key(tag)
        if not stored.is_dir():
            raise KeyError(tag)
        return CopyModel(stored, self.root / "cache" / self._key(tag))

    def stats(self) -> CopyStats:
        """Number of models and bytes stored (caches not counted)."""
        models = [p for p in (self.root / "objects").iterdir() if not p.name.startswith(".")]
        size = sum(f.stat().st_size for m in models for f in m.rglob("*") if f.is_file())
        return CopyStats(models=len(models), logical_bytes=size, stored_bytes=size)


# --- output --------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
