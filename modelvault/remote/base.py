"""The abstract :class:`Transport`: the few verbs a remote needs (see
:mod:`modelvault.remote.transport` for the classes that implement them)."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

from modelvault.errors import NotFound
from modelvault.remote.urls import is_transient

Range = tuple[int, int]  # (offset, length)
Bytes = Callable[[int], None]  # told each count of bytes moved (negative: taken back)


def content_token(data: bytes) -> str:
    """The version token of a content where the backend has no ETag: its SHA-256 (two
    writes of the same bytes are the same version, which is all a swap needs)."""
    return hashlib.sha256(data).hexdigest()


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

    def list_times(self, prefix: str) -> dict[str, float | None]:
        """Every key under ``prefix/`` with its modification time on the backend's own
        clock (POSIX seconds; None where the backend keeps none), in one listing.
        Remote locks judge staleness by it (:mod:`modelvault.remote.locks`)."""
        return dict.fromkeys(self.list(prefix))

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        try:
            self.get_ranges(key, [(0, 1)])
        except NotFound:
            return False
        return True

    # -- conditional replacement (aliases: docs/remotes.md, "Aliases") ---------------
    @property
    def atomic_swap(self) -> bool:
        """Whether ``put_if_match`` is atomic against other processes and machines."""
        return False

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The content of ``key`` and a token naming that version of it (an ETag on S3, a
        digest of the content elsewhere); NotFound if absent."""
        data = self.get(key)
        return data, content_token(data)

    def put_if_match(self, key: str, data: bytes, token: str | None) -> bool:
        """Write ``key`` only if its current version is ``token`` from
        :meth:`get_versioned` (None: only if ``key`` is absent); False, writing nothing,
        otherwise. Readers see the old content or the new one.

        This default checks, then writes: a writer on another machine may slip in between
        (``atomic_swap`` is False); transports override it where the backend can do better.
        """
        if token is None:
            return self.put_if_absent(key, data)
        try:
            _, now = self.get_versioned(key)
        except NotFound:
            return False
        if now != token:
            return False
        self.put(key, data)
        return True

    # -- transfers that report bytes as they go (push and pull) ------------------------
    def upload(self, key: str, source: bytes | Path, progress: Bytes) -> None:
        """:meth:`put` (``bytes``) or :meth:`put_file` (a path), telling ``progress`` the
        bytes sent as they go. This default tells them once, when the write is done;
        transports override it where the backend lets them do better."""
        if isinstance(source, Path):
            self.put_file(key, source)
            progress(source.stat().st_size)
        else:
            self.put(key, source)
            progress(len(source))

    def read_range(self, key: str, offset: int, length: int, progress: Bytes) -> bytes:
        """The ``length`` bytes of ``key`` at ``offset`` (shorter at the end), telling
        ``progress`` the bytes received as they come. This default tells them once."""
        (data,) = self.get_ranges(key, [(offset, length)])
        progress(len(data))
        return data

    def is_transient(self, exc: BaseException) -> bool:
        """Whether :class:`Retrying` should try ``exc``'s call again (see :func:`is_transient`)."""
        return is_transient(exc)
