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

if TYPE_CHECKING:
    from modelvault import models, picklable_model, pytorch, sklearn
    from modelvault import remotes as remotes
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
    from modelvault.serving import Runner
    from modelvault.store import Store
    from modelvault.tags import Tag

from modelvault import errors as _errors  # tiny, no dependencies

# Every public name is imported on first use, so `import modelvault` (and every
# `mv` command) pays only for what it touches.
_WHERE = {
    "models": "modelvault.models",
    "picklable_model": "modelvault.picklable_model",
    "sklearn": "modelvault.sklearn",
    "pytorch": "modelvault.pytorch",
    "remotes": "modelvault.remotes",
    "Model": "modelvault.model",
    "ModelInfo": "modelvault.model",
    "Store": "modelvault.store",
    "Tag": "modelvault.tags",
    "Runner": "modelvault.serving",
    **{name: "modelvault.errors" for name in _errors.__all__},
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    import importlib

    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'modelvault' has no attribute {name!r}")
    module = importlib.import_module(where)
    value = module if where.endswith(f".{name}") else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


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
