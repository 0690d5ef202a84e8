"""The picklable, scikit-learn and pytorch flavours: save, get, load, dedup of weights."""

from __future__ import annotations

import numpy as np
import pytest

import modelvault
from modelvault import NotFound, Store


class Scaler:
    """A module-level class, so it pickles by reference."""

    def __init__(self, w: np.ndarray) -> None:
        self.w = w

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x * self.w


def test_picklable_round_trip_and_default_signature(store: Store) -> None:
    model = modelvault.picklable_model.save_model("scaler", Scaler(np.arange(4.0)), store=store)
    assert model.info.module == "modelvault.picklable_model"
    assert model.info.signatures == {"__call__": {"batchable": False, "batch_dim": 0}}
    loaded = modelvault.picklable_model.load_model(model.tag, store=store)
    assert np.array_equal(loaded(np.ones(4)), np.arange(4.0))
    assert loaded.w.flags.writeable


def test_flavour_get_refuses_other_flavours(store: Store) -> None:
    model = modelvault.picklable_model.save_model("obj", {"a": 1}, store=store)
    with pytest.raises(NotFound, match="picklable_model"):
        modelvault.sklearn.get(model.tag, store=store)
    assert modelvault.picklable_model.get("obj", store=store) == model


def test_default_store_is_used_without_store_argument() -> None:
    modelvault.picklable_model.save_model("obj", [1, 2, 3])
    assert modelvault.picklable_model.load_model("obj:latest") == [1, 2, 3]


def test_models_sharing_weights_share_stored_bytes(store: Store) -> None:
    rng = np.random.default_rng(0)
    big = rng.standard_normal(1_000_000, dtype=np.float32)  # 4 MB
    modelvault.picklable_model.save_model("a", {"w": big, "head": np.zeros(10)}, store=store)
    base = store.stats().stored_bytes
    modelvault.picklable_model.save_model("b", {"w": big, "head": np.ones(10)}, store=store)
    assert store.stats().stored_bytes - base < 0.05 * big.nbytes


def test_sklearn_round_trip(store: Store) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(x, y)
    model = modelvault.sklearn.save_model("iris_clf", clf, store=store)
    assert model.info.signatures == {"predict": {"batchable": False, "batch_dim": 0}}
    assert model.info.context["framework_name"] == "sklearn"
    loaded = modelvault.sklearn.load_model("iris_clf:latest", store=store)
    assert np.array_equal(loaded.predict(x), clf.predict(x))
    with pytest.raises(modelvault.InvalidInput):
        modelvault.sklearn.save_model("bad", object(), store=store)


def test_pytorch_round_trip_and_dedup(store: Store) -> None:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 8))
    model = modelvault.pytorch.save_model(
        "net", net, signatures={"__call__": {"batchable": True}}, store=store
    )
    assert model.info.context["framework_versions"]["torch"].startswith("2.")
    loaded = modelvault.pytorch.load_model(model, store=store)
    x = torch.randn(3, 512)
    assert torch.equal(loaded(x), net(x))
    base = store.stats().stored_bytes
    with torch.no_grad():
        net[2].weight.add_(1.0)  # a fine-tune of the small head only
    modelvault.pytorch.save_model("net", net, store=store)
    weights = sum(p.numel() * 4 for p in net.parameters())
    assert store.stats().stored_bytes - base < 0.25 * weights
