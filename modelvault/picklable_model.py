"""The picklable flavour: any object cloudpickle can serialise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelvault.frameworks.common import get_flavoured, read_pickled, save_with, write_pickled
from modelvault.model import Model
from modelvault.store import Store
from modelvault.tags import Tag

__all__ = [
    "DEFAULT_SIGNATURES",
    "MODULE",
    "THREAD_SAFE",
    "get",
    "load_model",
    "save_model",
]

MODULE = "modelvault.picklable_model"
DEFAULT_SIGNATURES: dict[str, dict[str, Any]] = {"__call__": {"batchable": False}}
THREAD_SAFE = False  # an arbitrary object may keep state: runner calls are serialised


def save_model(
    name: str | Tag,
    obj: Any,
    *,
    signatures: Mapping[str, Mapping[str, Any]] | None = None,
    labels: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    custom_objects: Mapping[str, Any] | None = None,
    store: Store | None = None,
) -> Model:
    """Save any cloudpickle-able object; numpy buffers inside are stored out-of-band."""
    import cloudpickle

    return save_with(
        MODULE,
        name,
        lambda folder: write_pickled(obj, folder),
        default_signatures=DEFAULT_SIGNATURES,
        framework_name="cloudpickle",
        framework_versions={"cloudpickle": cloudpickle.__version__},
        signatures=signatures,
        labels=labels,
        metadata=metadata,
        custom_objects=custom_objects,
        store=store,
    )


def get(tag: str | Tag, *, store: Store | None = None) -> Model:
    """The model ``tag`` names; raises NotFound if another flavour saved it (a model
    BentoML saved with ``bentoml.picklable_model`` and modelvault imported is accepted)."""
    return get_flavoured(MODULE, tag, store)


def load_model(tag_or_model: str | Tag | Model, *, store: Store | None = None) -> Any:
    """Unpickle the saved object (only now, on request)."""
    return read_pickled(get_flavoured(MODULE, tag_or_model, store))
