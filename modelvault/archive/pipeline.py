"""What export and import share: the sizes of their worker pipelines, progress counting,
and the repository as a source of object info for the walker (``core.graph.walk``)."""

from __future__ import annotations

from collections.abc import Callable

from modelvault.core.graph import Info, decode_info
from modelvault.core.hashing import ObjType
from modelvault.errors import IntegrityError
from modelvault.repo import Repository

__all__ = [
    "BATCH",
    "BATCH_BYTES",
    "IO_BLOCK",
    "SINK_DEPTH",
    "WINDOW",
    "Progress",
    "stored_info",
]

IO_BLOCK = 1 << 20
BATCH = 64  # objects per worker task (export and import): amortises the thread hand-off
BATCH_BYTES = 4 << 20  # bytes of chunks per worker task, about
WINDOW = 4  # worker tasks in flight: bounds memory to ~WINDOW * (BATCH_BYTES + 512 KiB)
SINK_DEPTH = 4  # batches queued for the thread that writes (export) or stages (import)


class Progress:
    """Hands a ``progress`` callback (if any) the growth of a count of bytes done."""

    def __init__(self, progress: Callable[[int], None] | None) -> None:
        self._progress = progress
        self._done = 0

    def to(self, done: int) -> None:
        """``done`` bytes are done now."""
        if self._progress is not None and done > self._done:
            self._progress(done - self._done)
            self._done = done


def stored_info(repo: Repository, oid: bytes) -> Info | None:
    """Kind, size and children of an object of ``repo``, or None if it is absent.

    Raises:
        IntegrityError: the stored object is damaged or malformed.
    """
    entry = repo.objects.entry(oid)
    if entry is None:
        return None
    kind = ObjType(entry.kind)
    if kind == ObjType.CHUNK:
        return kind, entry.raw_len, []
    try:
        return decode_info(kind, repo.objects.read(oid, kind))
    except ValueError as exc:
        raise IntegrityError(f"stored object {oid.hex()} is malformed: {exc}") from exc
