"""The scikit-learn flavour: estimators, their numpy arrays stored out-of-band."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelvault.errors import InvalidInput
from modelvault.frameworks.common import (
    PICKLE_FILE,
    from_bentoml,
    get_flavoured,
    read_pickled,
    save_with,
    write_pickled,
)
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

MODULE = "modelvault.sklearn"
DEFAULT_SIGNATURES: dict[str, dict[str, Any]] = {"predict": {"batchable": False}}
THREAD_SAFE = True  # fitted estimators' predict methods do not mutate the estimator


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
    """Save a scikit-learn estimator (or pipeline).

    Raises:
        InvalidInput: ``model`` is not a scikit-learn estimator.
    """
    import sklearn
    from sklearn.base import BaseEstimator

    if not isinstance(model, BaseEstimator):
        raise InvalidInput(f"expected a scikit-learn estimator, got {type(model).__name__}")
    return save_with(
        MODULE,
        name,
        lambda folder: write_pickled(model, folder),
        default_signatures=DEFAULT_SIGNATURES,
        framework_name="sklearn",
        framework_versions={"scikit-learn": sklearn.__version__},
        signatures=signatures,
        labels=labels,
        metadata=metadata,
        custom_objects=custom_objects,
        store=store,
    )


def get(tag: str | Tag, *, store: Store | None = None) -> Model:
    """The model ``tag`` names; raises NotFound if another flavour saved it (a model
    BentoML saved with ``bentoml.sklearn`` and modelvault imported is accepted)."""
    return get_flavoured(MODULE, tag, store)


def load_model(tag_or_model: str | Tag | Model, *, store: Store | None = None) -> Any:
    """Load the estimator back (unpickled only now, on request). A model BentoML saved
    (``bentoml.sklearn``: one ``saved_model.pkl`` written by joblib) is read with joblib."""
    model = get_flavoured(MODULE, tag_or_model, store)
    if from_bentoml(model):
        import joblib

        return joblib.load(Path(model.path) / PICKLE_FILE)
    return read_pickled(model)
