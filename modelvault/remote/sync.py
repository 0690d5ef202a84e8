"""Push and pull (issue 4 — not implemented yet)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelvault.errors import ModelVaultError
from modelvault.tags import Tag

if TYPE_CHECKING:
    from modelvault.store import Store


@dataclass(frozen=True)
class TransferResult:
    """What crossed the wire: objects and bytes."""

    objects: int
    bytes: int


def push(store: Store, tag: str | Tag, remote: str | None = None, **kw: Any) -> TransferResult:
    """Not implemented yet: raises ModelVaultError."""
    raise ModelVaultError("remotes are not implemented yet")


def pull(store: Store, tag: str | Tag, remote: str | None = None, **kw: Any) -> TransferResult:
    """Not implemented yet: raises ModelVaultError."""
    raise ModelVaultError("remotes are not implemented yet")


def list_remote(store: Store, remote: str | None = None, name: str | None = None) -> list[Tag]:
    """Not implemented yet: raises ModelVaultError."""
    raise ModelVaultError("remotes are not implemented yet")
