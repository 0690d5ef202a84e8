"""The PyTorch flavour: ``torch.nn.Module`` saved with ``torch.save``.

``torch.save`` writes a zip whose entries hold each tensor storage as raw,
uncompressed, aligned bytes, so content-defined chunking deduplicates shared
weights between models.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelvault.errors import InvalidInput
from modelvault.frameworks.common import get_flavoured, save_with
from modelvault.model import Model
from modelvault.store import Store
from modelvault.tags import Tag

__all__ = [
    "DEFAULT_SIGNATURES",
    "MODEL_FILE",
    "MODULE",
    "THREAD_SAFE",
    "get",
    "load_model",
    "save_model",
]

MODULE = "modelvault.pytorch"
MODEL_FILE = "saved_model.pt"
DEFAULT_SIGNATURES: dict[str, dict[str, Any]] = {"__call__": {"batchable": False}}
THREAD_SAFE = False  # modules may keep state (hooks, buffers): runner calls are serialised


def save_model(
    name: str | Tag,
    model: Any,
    *,
    signatures: Mapping[str, Mapping[str, Any]] | None = None,
    labels: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    custom_objects: Mapping[str, Any] | None = None,
    store: Store | None = None,
) -> Model:
    """Save a ``torch.nn.Module`` (its class must be importable when loading).

    Raises:
        InvalidInput: ``model`` is not a ``torch.nn.Module``.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise InvalidInput(f"expected a torch.nn.Module, got {type(model).__name__}")

    def write(folder: Path) -> None:
        torch.save(model, folder / MODEL_FILE)

    return save_with(
        MODULE,
        name,
        write,
        default_signatures=DEFAULT_SIGNATURES,
        framework_name="torch",
        framework_versions={"torch": str(torch.__version__)},
        signatures=signatures,
        labels=labels,
        metadata=metadata,
        custom_objects=custom_objects,
        store=store,
    )


def get(tag: str | Tag, *, store: Store | None = None) -> Model:
    """The model ``tag`` names; raises NotFound if another flavour saved it (a model
    BentoML saved with ``bentoml.pytorch`` and modelvault imported is accepted)."""
    return get_flavoured(MODULE, tag, store)


def load_model(
    tag_or_model: str | Tag | Model, *, store: Store | None = None, map_location: str = "cpu"
) -> Any:
    """Load the module back (in eval mode), from the materialised model folder."""
    import torch

    model = get_flavoured(MODULE, tag_or_model, store)
    module = torch.load(
        Path(model.path) / MODEL_FILE, map_location=map_location, weights_only=False
    )
    module.eval()
    return module
