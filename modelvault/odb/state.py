"""What the pack folder held at a given modification time: ``objects/packs.state``.

Listing ``objects/packs/`` costs ~15 ms and MiBs of names at 16,000 packs, in every
process. This small file records the outcome of a listing, which multi-pack indexes are
in force and which packs none of them covers, together with the folder's identity and
modification time (docs/format.md 5.2). A process whose ``stat`` of the folder gives the
same identity and time takes the record instead of listing.

It is a cache: missing, unreadable or not matching, it is ignored (the folder is listed,
and the record written again). Its rules:

* A record made from a listing is written only if the folder's time did not change
  during the listing, is at least :data:`SETTLED_NS` older than the listing (so any
  later change gets a later time, whatever the file system's timestamp granularity:
  a time with no sub-second part counts as of a coarse file system, 2 s), and no pack
  was removed meanwhile (the removal count in ``objects/packs.lock`` did not move).
* Every change that modelvault makes to the folder holds ``objects/packs.lock``
  (``flock``, exclusive) around it. A writer publishing a pack, or a merge publishing
  an index, updates the record in the same hold when the record matched the folder just
  before the change: the new record is the old one with the change, at the folder's new
  time. Removing a pack (gc, verify's quarantine) deletes the record and counts one
  more removal instead: a process never takes a record that still lists a removed pack.
* A record can miss a pack that another program (an older modelvault) added meanwhile:
  harmless, a lookup that misses looks at the folder again (``PackDB.entry``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modelvault import _fsutil

__all__ = [
    "LOCK_NAME",
    "SETTLED_NS",
    "STATE_NAME",
    "DirKey",
    "DirState",
    "Held",
    "dir_key",
    "hold",
    "read_state",
    "removals",
    "settled",
]

STATE_NAME = "packs.state"  # in objects/, beside packs/ (writing it changes objects/ only)
LOCK_NAME = "packs.lock"  # in objects/: held around every change to packs/
SETTLED_NS = 50_000_000  # a folder time this much older than a listing cannot repeat
COARSE_SETTLED_NS = 2_000_000_000  # the same on a file system of whole-second times
_VERSION = 1
_COUNT = struct.Struct("<Q")  # the removal count: the lock file's first 8 bytes

DirKey = tuple[int, int, int]  # st_dev, st_ino, st_mtime_ns of objects/packs/


def dir_key(pack_dir: Path) -> DirKey:
    st = os.stat(pack_dir)
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


def settled(key: DirKey, now_ns: int) -> bool:
    """True if a change after ``now_ns`` gives the folder a time other than ``key``'s."""
    mtime = key[2]
    margin = COARSE_SETTLED_NS if mtime % 1_000_000_000 == 0 else SETTLED_NS
    return mtime + margin <= now_ns


@dataclass(frozen=True)
class DirState:
    """The multi-pack indexes in force and the packs none covers, at folder time ``key``."""

    key: DirKey
    midx: tuple[str, ...]
    loose: tuple[str, ...]

    def encode(self) -> bytes:
        doc = {"version": _VERSION, "dir": list(self.key), "midx": self.midx, "loose": self.loose}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> DirState | None:
        try:
            doc = json.loads(data)
            key = tuple(int(x) for x in doc["dir"])
            midx = tuple(str(n) for n in doc["midx"])
            loose = tuple(str(n) for n in doc["loose"])
            if doc["version"] != _VERSION or len(key) != 3:
                return None
        except (ValueError, TypeError, KeyError):
            return None
        if not all(_plain(n) for n in (*midx, *loose)):
            return None  # only names inside packs/ are ever opened
        return cls((key[0], key[1], key[2]), midx, loose)


def _plain(name: str) -> bool:
    return bool(name) and "/" not in name and "\0" not in name and not name.startswith(".")


def read_state(root: Path) -> DirState | None:
    try:
        data = (root / STATE_NAME).read_bytes()
    except OSError:
        return None
    return DirState.decode(data)


def removals(root: Path) -> int:
    """The removal count (0 when the lock file is missing or unreadable)."""
    try:
        with open(root / LOCK_NAME, "rb") as f:
            raw = f.read(_COUNT.size)
    except OSError:
        return 0
    return _COUNT.unpack(raw)[0] if len(raw) == _COUNT.size else 0


class Held:
    """``objects/packs.lock`` held exclusively (see :func:`hold`)."""

    def __init__(self, root: Path, tmp_dir: Path, fd: int) -> None:
        self.root, self._tmp_dir, self._fd = root, tmp_dir, fd

    def state(self) -> DirState | None:
        return read_state(self.root)

    def write(self, state: DirState) -> None:
        """Replace the record (a temporary renamed over it; no fsync: a cache). A
        failure only drops it (where even that fails, the record left names the
        folder's time before the change: it is not taken)."""
        tmp = _fsutil.temp_name(self._tmp_dir, ".state")
        try:
            with open(tmp, "xb") as f:
                f.write(state.encode())
            os.replace(tmp, self.root / STATE_NAME)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self.drop()

    def drop(self, *, strict: bool = False) -> None:
        """Remove the record; with ``strict`` a failure raises (before a removal)."""
        try:
            (self.root / STATE_NAME).unlink(missing_ok=True)
        except OSError:
            if strict:
                raise

    def removing(self) -> None:
        """A pack is about to be removed: drop the record and count one more removal
        (either failing raises: then no pack may be removed)."""
        self.drop(strict=True)
        raw = os.pread(self._fd, _COUNT.size, 0)
        n = _COUNT.unpack(raw)[0] if len(raw) == _COUNT.size else 0
        os.pwrite(self._fd, _COUNT.pack(n + 1), 0)


@contextlib.contextmanager
def hold(root: Path, tmp_dir: Path) -> Iterator[Held | None]:
    """Hold ``objects/packs.lock`` exclusively for the block; None where it cannot be
    opened for writing (a read-only store: nothing there changes, nor does the record)."""
    try:
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield None
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield Held(root, tmp_dir, fd)
    finally:
        os.close(fd)


def now_ns() -> int:
    return time.time_ns()
