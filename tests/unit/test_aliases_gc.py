"""gc never frees what an alias reaches (API.md "Aliases"; repo/maintenance.py roots)."""

from __future__ import annotations

from pathlib import Path

import pytest

import modelvault
from modelvault import NotFound


def _save(store: modelvault.Store, tmp_path: Path, tag: str, body: bytes) -> modelvault.Model:
    src = tmp_path / ("src-" + tag.replace(":", "-"))
    src.mkdir()
    (src / "w.bin").write_bytes(body)
    return store.save(src, tag)


@pytest.fixture
def two(store: modelvault.Store, tmp_path: Path) -> tuple[modelvault.Model, modelvault.Model]:
    return (
        _save(store, tmp_path, "iris:v1", b"one" * 1000),
        _save(store, tmp_path, "iris:v2", b"two" * 1000),
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
