"""``import_model`` given something that is not a source (issue 16, point 8): InvalidInput
(a ValueError) naming what it takes, never an AttributeError; the store is unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault import InvalidInput, PathNotFound, Store


@pytest.mark.parametrize("src", [None, 123, True, 1.5, b"model.bentomodel", object(), ["a"]])
def test_import_of_a_non_source_raises_invalid_input(store: Store, src: Any) -> None:
    with pytest.raises(InvalidInput, match="path, an fsspec URL or a binary file object"):
        store.import_model(src)
    with pytest.raises(ValueError):
        modelvault.models.import_model(src)
    assert store.list() == [] and store.verify().ok
    assert list((store.path / "objects" / "tmp").iterdir()) == []


def test_a_missing_path_is_still_path_not_found(store: Store, tmp_path: Path) -> None:
    with pytest.raises(PathNotFound):
        store.import_model(tmp_path / "nope.bentomodel")
    with pytest.raises(PathNotFound):
        store.import_model(str(tmp_path / "nope.bentomodel"))
