"""``.bentomodel`` archives: export and import (issue 3 — not implemented yet)."""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO

from modelvault.errors import ModelVaultError
from modelvault.tags import Tag

if TYPE_CHECKING:
    from modelvault.model import Model
    from modelvault.store import Store

ArchiveSource = str | BinaryIO


def export_model(store: Store, tag: str | Tag, dest: str, *, base: str | Tag | None = None) -> str:
    """Not implemented yet: raises ModelVaultError."""
    raise ModelVaultError("archives are not implemented yet")


def import_model(store: Store, src: ArchiveSource) -> Model:
    """Not implemented yet: raises ModelVaultError."""
    raise ModelVaultError("archives are not implemented yet")
