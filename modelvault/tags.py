"""Tag: the ``name:version`` value type, its validation and version generation."""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass

from modelvault.errors import InvalidTag

__all__ = [
    "LATEST",
    "Tag",
    "is_version",
    "new_version",
]

_PART = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,62}")
LATEST = "latest"

# The 32 characters of RFC 4648 base32 (a-z, 2-7), in ASCII order, so that the
# lexicographic order of generated versions is their numeric (= creation) order.
_B32_SORTED = "234567abcdefghijklmnopqrstuvwxyz"
_VERSION_LEN = 16  # 80 bits: 52 bits of microseconds since the epoch + 28 random bits
_RANDOM_BITS = 28

_lock = threading.Lock()
_last_value = 0


def _check(part: str, what: str) -> str:
    folded = part.lower()
    if not _PART.fullmatch(folded):
        raise InvalidTag(
            f"invalid model {what} {part!r}: use 1-63 characters of a-z 0-9 _ - . "
            "starting with a letter or digit"
        )
    return folded


def is_version(part: str) -> bool:
    """True if ``part`` is a valid name or version exactly as spelt (lowercase)."""
    return _PART.fullmatch(part) is not None


def new_version() -> str:
    """A fresh version: 16 characters of base32 that sort in creation order.

    Versions made by one process are strictly increasing; across processes they
    are ordered by their microsecond timestamp.
    """
    global _last_value
    value = (time.time_ns() // 1000) << _RANDOM_BITS
    value |= int.from_bytes(os.urandom(4), "big") >> (32 - _RANDOM_BITS)
    with _lock:
        value = max(value, _last_value + 1)
        _last_value = value
    chars = []
    for _ in range(_VERSION_LEN):
        chars.append(_B32_SORTED[value & 31])
        value >>= 5
    return "".join(reversed(chars))


@dataclass(frozen=True, eq=False)
class Tag:
    """An immutable ``name:version`` pair; ``version`` None (or "latest") means the newest.

    Raises:
        InvalidTag: the name or version breaks the rules (1-63 of ``a-z 0-9 _ - .``,
            starting with a letter or digit; uppercase is folded to lowercase).
    """

    name: str
    version: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise InvalidTag(f"model name must be a string, not {type(self.name).__name__}")
        object.__setattr__(self, "name", _check(self.name, "name"))
        if self.version is not None:
            if not isinstance(self.version, str):
                raise InvalidTag("model version must be a string")
            object.__setattr__(self, "version", _check(self.version, "version"))

    @classmethod
    def checked(cls, name: str, version: str | None) -> Tag:
        """A tag of parts known to be valid as they are (lowercase, as :func:`is_version`
        says): made without checking them again (a listing of 10,000 ref files)."""
        tag = object.__new__(cls)
        object.__setattr__(tag, "name", name)
        object.__setattr__(tag, "version", version)
        return tag

    @classmethod
    def from_str(cls, text: str) -> Tag:
        """Parse ``"name"``, ``"name:latest"`` or ``"name:version"``."""
        if not isinstance(text, str):
            raise InvalidTag(f"a tag must be a string like 'name:version', not {text!r}")
        name, sep, version = text.partition(":")
        if sep and not version:
            raise InvalidTag(f"invalid tag {text!r}: empty version after ':'")
        return cls(name, version if sep else None)

    @classmethod
    def coerce(cls, value: str | Tag) -> Tag:
        """A Tag from a Tag or its string form."""
        return value if isinstance(value, Tag) else cls.from_str(value)

    @property
    def is_latest(self) -> bool:
        """True when the tag names the newest version rather than a fixed one."""
        return self.version is None or self.version == LATEST

    def __eq__(self, other: object) -> bool:
        """Equal to another Tag with the same parts, or to its own string form."""
        if isinstance(other, Tag):
            return (self.name, self.version) == (other.name, other.version)
        if isinstance(other, str):
            return str(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: Tag) -> bool:
        return (self.name, self.version or "") < (other.name, other.version or "")

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"

    def __repr__(self) -> str:
        return f"Tag({str(self)!r})"
