"""Hypothesis mutates real archives at random: every mutant is refused, the store untouched.

Two properties:
- any change to the bytes (flip, cut, insert, delete, overwrite) raises ArchiveError,
  because the trailing checksum covers every byte;
- with the checksum recomputed after the change (an attacker's archive), the import
  still raises ArchiveError, or it imports exactly the original model (a change that
  does not alter any object, say another valid zstd encoding of the same bytes).
In both cases a refused import leaves the store's files exactly as they were.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from blake3 import blake3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import modelvault
from modelvault.errors import ArchiveError

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _snapshot(path: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(path.rglob("*"))
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, modelvault.Store, str]:
    """A real archive (compressible and incompressible chunks, a subfolder) and a store."""
    root = tmp_path_factory.mktemp("fuzz")
    folder = root / "model"
    (folder / "sub").mkdir(parents=True)
    weights = np.random.default_rng(3).standard_normal(40_000).astype("<f4")
    (folder / "w.bin").write_bytes(weights.tobytes())
    (folder / "sub" / "vocab.txt").write_text("token\n" * 20_000)
    src = modelvault.Store(root / "src")
    model = src.save(folder, "fuzz:v1", custom_objects={"k": 1})
    data = Path(src.export_model("fuzz:v1", str(root / "a.bentomodel"))).read_bytes()
    target = modelvault.Store(root / "target")
    target.save(root / "model" / "sub", "other:v1")
    return data, target, model.id


mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**9), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**9), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**9), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 10**9), st.integers(1, 64)),
    st.tuples(st.just("overwrite"), st.integers(0, 10**9), st.binary(min_size=1, max_size=64)),
)


def _mutate(data: bytes, how: tuple[str, int, object]) -> bytes:
    kind, pos, arg = how
    at = pos % len(data)
    if kind == "flip":
        assert isinstance(arg, int)
        return data[:at] + bytes([data[at] ^ arg]) + data[at + 1 :]
    if kind == "cut":
        return data[:at]
    if kind == "insert":
        assert isinstance(arg, bytes)
        return data[:at] + arg + data[at:]
    if kind == "delete":
        assert isinstance(arg, int)
        return data[:at] + data[at + arg :]
    assert isinstance(arg, bytes)
    return data[:at] + arg + data[at + len(arg) :]


@FUZZ
@given(how=mutations)
def test_any_mutation_is_refused(world: tuple[bytes, modelvault.Store, str], how: tuple) -> None:  # type: ignore[type-arg]
    data, target, _ = world
    bad = _mutate(data, how)
    if bad == data:
        return
    before = _snapshot(target.path)
    with pytest.raises(ArchiveError):
        target.import_model(io.BytesIO(bad))
    assert _snapshot(target.path) == before


@FUZZ
@given(how=mutations)
def test_mutations_with_a_valid_checksum_never_import_another_model(
    world: tuple[bytes, modelvault.Store, str],
    how: tuple,  # type: ignore[type-arg]
) -> None:
    data, target, model_id = world
    body = _mutate(data[:-32], how)
    bad = body + blake3(body).digest()
    if bad == data:
        return
    before = _snapshot(target.path)
    try:
        model = target.import_model(io.BytesIO(bad))
    except ArchiveError:
        assert _snapshot(target.path) == before
        return
    assert (str(model.tag), model.id) == ("fuzz:v1", model_id)
    target.delete("fuzz:v1")
    target.gc()
