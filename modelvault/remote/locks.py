"""Lock files on a remote: pushes hold a shared lock, remote gc an exclusive one, so gc
never deletes a pack a push in flight has counted on (restic's protocol for ``prune`` on
dumb storage; docs/format.md section 11.8 is normative, docs/remotes.md explains it).

A lock is one small JSON object ``locks/<id>`` (``<id>``: 32 random hex digits),
written create-only. Taking a lock is: create your own, then list ``locks/`` and read
the others; if a live one conflicts (see :func:`conflicts`: one of the two is
exclusive and their scopes overlap), remove yours, wait a little and try again, and
give up with :class:`~modelvault.errors.RemoteError` naming the holder. Whoever creates
its lock second sees the first (listings are strongly consistent on S3 and file
systems), so a push and a gc never both proceed.

A lock's **scope** is the whole remote, or one model name: a push of ``clf:v3`` (and a
move of ``clf@prod``) holds a shared lock on ``clf``, ``delete_remote`` of ``clf``'s
versions an exclusive one on ``clf`` (so a delete never runs between a move's check that
its version is there and its write: docs/remotes.md), remote gc an exclusive one on the
whole remote. A lock without a name (one written before scopes existed) covers the whole
remote.

While held, a thread rewrites the lock every :data:`REFRESH_EVERY` seconds. A lock is
**stale** when not rewritten for :data:`STALE_AFTER` seconds, judged on the backend's
own clock where it has one (S3's ``LastModified``, the file's mtime): the age of another
lock is the modification time of the lock just created minus that lock's, both stamped
by the backend, so no machine's clock enters. A lock is also **dead** when it was made
in this very PID namespace of this boot of this kernel and its process is gone (a
killed gc or push on this machine is known at once). Stale and dead locks block no one;
remote gc and :func:`unlock` remove them.

A holder never acts on a lock it cannot vouch for: :meth:`RemoteLock.check` (before a
push publishes its tag, before gc deletes anything) fails when the last successful
refresh *began* more than ``STALE_AFTER / 2`` ago on the holder's monotonic clock, or
when the lock is gone from the remote (broken by hand). Since an observer calls a lock
stale only ``STALE_AFTER`` after the backend stamped that refresh, the two never
overlap, whatever the clocks say.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from modelvault.errors import NotFound, RemoteError
from modelvault.remote.base import Transport
from modelvault.repo.layout import LOCKS, lock_key

__all__ = [
    "REFRESH_EVERY",
    "STALE_AFTER",
    "WAIT",
    "LockInfo",
    "RemoteLock",
    "conflicts",
    "held",
    "list_locks",
    "unlock",
]

logger = logging.getLogger("modelvault.remote")

REFRESH_EVERY = 5 * 60.0  # a held lock is rewritten this often (seconds)
STALE_AFTER = 30 * 60.0  # a lock not rewritten for this long blocks no one
WAIT = 10.0  # how long taking a lock waits for a conflicting one to go


@cache
def _namespace() -> str:
    """This boot of this kernel and this PID namespace: where a PID means one process."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""  # no way to tell: never judge a lock dead by its PID
    return f"{boot}:{ns}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class LockInfo:
    """One lock file as read from the remote."""

    key: str
    exclusive: bool
    host: str = "?"
    pid: int = 0
    operation: str = "?"
    time: float | None = None  # when its holder last wrote it, on the holder's clock
    modified: float | None = None  # when the backend last stamped it (its clock)
    namespace: str = ""
    damaged: bool = False
    name: str | None = None  # the model name it covers; None: the whole remote

    @property
    def id(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def age(self, backend_now: float | None) -> float | None:
        """Seconds since the holder last refreshed it: on the backend's clock when both
        stamps come from it, else on this machine's clock against the holder's."""
        if self.modified is not None and backend_now is not None:
            return backend_now - self.modified
        if self.time is not None:
            return time.time() - self.time
        return None

    def dead(self) -> bool:
        """True when made in this PID namespace and its process is gone."""
        ns = _namespace()
        return bool(ns) and self.namespace == ns and self.pid > 0 and not _alive(self.pid)

    def stale(self, backend_now: float | None, stale_after: float = STALE_AFTER) -> bool:
        age = self.age(backend_now)
        return self.dead() or (age is not None and age > stale_after)

    def describe(self, backend_now: float | None = None) -> str:
        kind = "exclusive" if self.exclusive else "shared"
        scope = f" on {self.name!r}" if self.name is not None else ""
        age = self.age(backend_now)
        when = f", refreshed {age:.0f} s ago" if age is not None else ""
        who = f"host {self.host}, pid {self.pid}{when}"
        return f"{kind} lock {self.key}{scope} of {self.operation} ({who})"


def conflicts(exclusive: bool, name: str | None, other: LockInfo) -> bool:
    """Whether a lock ``(exclusive, name)`` conflicts with ``other`` (live or not): one
    of them is exclusive and their scopes overlap (the same model name, or either covers
    the whole remote)."""
    if not (exclusive or other.exclusive):
        return False
    return name is None or other.name is None or name == other.name


def _parse(key: str, data: bytes, modified: float | None) -> LockInfo:
    try:
        doc = json.loads(data)
        name = doc.get("name")
        return LockInfo(
            key,
            bool(doc["exclusive"]),
            str(doc.get("host", "?")),
            int(doc.get("pid", 0)),
            str(doc.get("operation", "?")),
            float(doc["time"]),
            modified,
            str(doc.get("namespace", "")),
            name=name if isinstance(name, str) else None,  # else: the whole remote
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        # unreadable: it may be anyone's; taken as exclusive until stale by its age
        return LockInfo(key, True, modified=modified, damaged=True)


def list_locks(t: Transport, own: str = "") -> tuple[list[LockInfo], dict[str, float | None]]:
    """Every lock on the remote but ``own`` (one listing, one read each), and the
    listing's times (``own``'s included)."""
    times = t.list_times(LOCKS)
    out = []
    for key, modified in sorted(times.items()):
        if key.count("/") != 1 or key == own:
            continue
        try:
            data = t.get(key)
        except NotFound:  # released since the listing
            continue
        out.append(_parse(key, data, modified))
    return out, times


class RemoteLock:
    """A lock on one remote: ``with RemoteLock(t, exclusive=..., operation=...):``,
    on the whole remote, or with ``name`` on that model name only (see module docs).

    ``refresh_every``, ``stale_after`` and ``wait`` default to the module's constants
    (read when the lock is made, so tests may change them).
    """

    def __init__(
        self,
        t: Transport,
        *,
        exclusive: bool,
        operation: str,
        name: str | None = None,
        refresh_every: float | None = None,
        stale_after: float | None = None,
        wait: float | None = None,
    ) -> None:
        self.t = t
        self.exclusive = exclusive
        self.operation = operation
        self.name = name
        self.refresh_every = REFRESH_EVERY if refresh_every is None else refresh_every
        self.stale_after = STALE_AFTER if stale_after is None else stale_after
        self.wait = WAIT if wait is None else wait
        self.key = ""
        self._refreshed = 0.0  # monotonic start of the last successful write
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    # -- the document ------------------------------------------------------------
    def _document(self, created: float) -> bytes:
        doc: dict[str, Any] = {
            "version": 1,
            "exclusive": self.exclusive,
            "operation": self.operation,
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "namespace": _namespace(),
            "created": created,
            "time": time.time(),
        }
        return json.dumps(doc, sort_keys=True).encode()

    # -- taking and giving back --------------------------------------------------
    def acquire(self) -> RemoteLock:
        """Take the lock, waiting up to ``wait`` seconds for conflicting live locks.

        Raises:
            RemoteError: a live conflicting lock stayed (naming its holder and how to
                break it if its machine is dead), or the remote failed.
        """
        deadline = time.monotonic() + self.wait
        delay = 0.05
        while True:
            blocking = self._try_once()
            if not blocking:
                break
            if time.monotonic() + delay > deadline:
                raise RemoteError(
                    f"cannot {self.operation} on {self.t.url}: it is locked by "
                    f"{blocking[0].describe()}"
                    f"{f' (+{len(blocking) - 1} more)' if len(blocking) > 1 else ''}; try again "
                    "when that is done, or if that machine is dead, run `mv remote unlock "
                    "REMOTE --all` (docs/remotes.md, Locks)"
                )
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)
        self._thread = threading.Thread(target=self._refresher, name="modelvault-lock", daemon=True)
        self._thread.start()
        return self

    def _try_once(self) -> list[LockInfo]:
        """Create this lock and look at the others; returns the live conflicting ones
        (having removed this lock again), or [] when held."""
        self.key = lock_key(uuid.uuid4().hex)
        started = time.monotonic()
        if not self.t.put_if_absent(self.key, self._document(time.time())):
            return self._try_once()  # (a random id taken: never in practice)
        self._refreshed = started
        others, times = list_locks(self.t, self.key)
        now = times.get(self.key)
        blocking = [
            o
            for o in others
            if o.key != self.key
            and conflicts(self.exclusive, self.name, o)
            and not o.stale(now, self.stale_after)
        ]
        if blocking:
            self.t.delete(self.key)
            self.key = ""
            return blocking
        if self.exclusive and self.name is None:  # nobody works: clear what the dead left
            for o in others:
                if o.key != self.key and o.stale(now, self.stale_after):
                    logger.info(f"{self.t.url}: removing {o.describe(now)} (stale)")
                    self.t.delete(o.key)
        return []

    def release(self) -> None:
        """Stop refreshing and remove the lock (best effort: a lock left behind goes
        stale, or dead at once on this machine)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.key:
            with contextlib.suppress(Exception):
                self.t.delete(self.key)
            self.key = ""

    def __enter__(self) -> RemoteLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- while held --------------------------------------------------------------
    def _refresher(self) -> None:
        while not self._stop.wait(self.refresh_every):
            self.refresh()

    def refresh(self) -> None:
        """Rewrite the lock (its backend time moves on); a lock removed by someone else
        is not written again but marked lost, so :meth:`check` fails."""
        with self._mutex:
            if self._lost is not None or not self.key:
                return
            started = time.monotonic()
            try:
                if not self.t.exists(self.key):
                    self._lost = "it was removed from the remote (`mv remote unlock`?)"
                    return
                self.t.put(self.key, self._document(time.time()))
            except Exception as exc:  # check() reports how old it is
                logger.warning(f"{self.t.url}: could not refresh the lock {self.key}: {exc}")
                return
            self._refreshed = started

    def check(self, *, on_remote: bool = False) -> None:
        """Raise unless the lock is surely still held: refreshed recently enough that no
        one can call it stale yet, and (``on_remote``) its file still there.

        Raises:
            RemoteError: the lock may be lost; the operation must stop before it acts.
        """
        if on_remote and self._lost is None and self.key and not self.t.exists(self.key):
            self._lost = "it was removed from the remote (`mv remote unlock`?)"
        since = time.monotonic() - self._refreshed
        why = self._lost
        if why is None and since > self.stale_after / 2:
            why = f"it could not be refreshed for {since:.0f} s"
        if why is not None:
            raise RemoteError(
                f"{self.operation} on {self.t.url} stopped: its lock {self.key or '?'} may be "
                f"lost ({why}); nothing more was changed there, try again"
            )


@contextlib.contextmanager
def held(
    t: Transport, *, exclusive: bool, operation: str, name: str | None = None
) -> Iterator[RemoteLock]:
    """``with held(t, exclusive=..., operation=..., name=...) as lock:`` (see
    :class:`RemoteLock`)."""
    lock = RemoteLock(t, exclusive=exclusive, operation=operation, name=name)
    with lock:
        yield lock


def unlock(t: Transport, *, everything: bool = False) -> list[LockInfo]:
    """Remove the remote's stale and dead locks (``everything``: every lock, for a
    machine known to be dead whose lock is not stale yet); returns those removed.

    Removing a live holder's lock makes that push or gc stop before it next acts (see
    :meth:`RemoteLock.check`), but a push may already be past that check: use
    ``everything`` only when no other machine is working on the remote.
    """
    others, times = list_locks(t)
    # "now" on the backend's clock: the newest stamp listed is a lower bound of it
    stamps = [m for m in times.values() if m is not None]
    now = max(stamps) if stamps else None
    if now is not None:  # better: the stamp of a (shared, harmless) lock written now
        probe = RemoteLock(t, exclusive=False, operation="unlock")
        probe.key = lock_key(uuid.uuid4().hex)
        t.put(probe.key, probe._document(time.time()))
        now = t.list_times(LOCKS).get(probe.key, now)
        t.delete(probe.key)
    removed = [o for o in others if everything or o.stale(now)]
    for o in removed:
        t.delete(o.key)
    return removed
