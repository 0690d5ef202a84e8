"""modelvault: a git-like, content-addressed store for machine-learning models.

Public API (pinned by tests/unit/test_public_api.py)::

    modelvault.models          create / save / get / list / delete / export_model / ...
    modelvault.Store(path)     the same on an explicit store, plus gc / verify / stats
    modelvault.Tag, modelvault.Model
    modelvault.picklable_model, modelvault.sklearn, modelvault.pytorch   flavours
    modelvault.remotes         add / list / remove configured remotes
    modelvault.Runner          serve a model with adaptive batching
    errors: ModelVaultError and its subclasses
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from modelvault import models
from modelvault.errors import (
    ArchiveError,
    IntegrityError,
    InvalidInput,
    InvalidTag,
    ModelExists,
    ModelVaultError,
    NotFound,
    PathNotFound,
    RemoteError,
)
from modelvault.model import Model, ModelInfo
from modelvault.store import Store
from modelvault.tags import Tag

if TYPE_CHECKING:
    from modelvault import picklable_model, pytorch, sklearn
    from modelvault import remotes as remotes
    from modelvault.runner import Runner

_LAZY = {"picklable_model", "sklearn", "pytorch", "remotes"}


def __getattr__(name: str) -> Any:
    """Import flavours, remotes and the runner on first use (keeps ``import modelvault`` fast)."""
    import importlib

    if name in _LAZY:
        return importlib.import_module(f"modelvault.{name}")
    if name == "Runner":
        return importlib.import_module("modelvault.runner").Runner
    raise AttributeError(f"module 'modelvault' has no attribute {name!r}")


__all__ = [
    "ArchiveError",
    "IntegrityError",
    "InvalidInput",
    "InvalidTag",
    "Model",
    "ModelExists",
    "ModelInfo",
    "ModelVaultError",
    "NotFound",
    "PathNotFound",
    "RemoteError",
    "Runner",
    "Store",
    "Tag",
    "__version__",
    "models",
    "picklable_model",
    "pytorch",
    "remotes",
    "sklearn",
]
