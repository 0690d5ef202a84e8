"""The abstract :class:`Transport`: the few verbs a remote needs (see
:mod:`modelvault.remote.transport` for the classes that implement them)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from modelvault.errors import NotFound
from modelvault.remote.urls import is_transient

Range = tuple[int, int]  # (offset, length)


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

    def is_transient(self, exc: BaseException) -> bool:
        """Whether :class:`Retrying` should try ``exc``'s call again (see :func:`is_transient`)."""
        return is_transient(exc)
