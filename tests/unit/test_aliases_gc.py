"""gc never frees what an alias reaches (API.md "Aliases"; repo/maintenance.py roots)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _helpers import save_one_file

import modelvault
from modelvault import NotFound


@pytest.fixture
def two(store: modelvault.Store, tmp_path: Path) -> tuple[modelvault.Model, modelvault.Model]:
    return (
        save_one_file(store, tmp_path, "iris:v1", b"one" * 1000),
        save_one_file(store, tmp_path, "iris:v2", b"two" * 1000),
    )


def test_gc_never_frees_what_an_alias_reaches(store: modelvault.Store, two: tuple) -> None:
    v1, _ = two
    store.set_alias("iris:v1", "prod")
    # the ref vanishes behind delete's back (a crash, a hand edit): the alias still roots
    (store.path / "refs" / "iris" / "v1").unlink()
    store.gc()
    assert store.repo.objects.has(bytes.fromhex(v1.id))
    assert store.verify().ok
    with pytest.raises(NotFound, match="iris:v1"):  # the alias names a missing version
        store.get("iris@prod")
    store.remove_alias("iris@prod")
    assert store.gc() > 0
    assert not store.repo.objects.has(bytes.fromhex(v1.id))
