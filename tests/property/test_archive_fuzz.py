"""Hypothesis mutates real archives at random: every mutant is refused, the store untouched.

The archives: one this version writes (format 3, float weights travelling as byte-planes
records, codec 2) and the format-1 golden archive. Mutations land anywhere, and for the
format-3 archive also inside byte-planes payloads (their header, lane lengths and lanes).

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
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from _helpers import archive_body, archive_footer_at, resigned
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import modelvault
from modelvault.core import floats
from modelvault.errors import ArchiveError

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
GOLDEN = Path(__file__).parent.parent / "golden"
PLANES = 2

World = tuple[bytes, modelvault.Store, str, list[tuple[int, int]]]  # + byte-planes payloads


def _snapshot(path: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(path.rglob("*"))
    }


def planes_payloads(data: bytes) -> list[tuple[int, int]]:
    """``(offset, length)`` of every byte-planes payload of an archive, from its index."""
    at, count, _ = struct.unpack_from("<QI4s", data, archive_footer_at(data))
    out = []
    for i in range(count):
        _, _, how, offset, stored, _ = struct.unpack_from("<32sBBxxQII", data, at + 8 + 52 * i)
        if how == PLANES:
            out.append((offset, stored))
    return out


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, World]:
    """Real archives and the store they are imported into: ``written`` (compressible and
    incompressible chunks, float weights, a subfolder) and ``v1-golden``."""
    root = tmp_path_factory.mktemp("fuzz")
    folder = root / "model"
    (folder / "sub").mkdir(parents=True)
    weights = np.random.default_rng(3).standard_normal(40_000).astype("<f4")
    (folder / "w.bin").write_bytes(weights.tobytes())
    (folder / "sub" / "vocab.txt").write_text("token\n" * 20_000)
    src = modelvault.Store(root / "src")
    with pytest.MonkeyPatch.context() as mp:  # as a store without codec 3: float chunks raw,
        mp.setattr(floats, "_fc", None)  # so that they travel as byte planes
        model = src.save(folder, "fuzz:v1", custom_objects={"k": 1})
    data = Path(src.export_model("fuzz:v1", str(root / "a.bentomodel"))).read_bytes()
    target = modelvault.Store(root / "target")
    target.save(root / "model" / "sub", "other:v1")
    assert struct.unpack_from("<H", data, 8) == (3,)
    planes = planes_payloads(data)
    assert len(planes) >= 2  # the float weights travel as byte planes
    ids = json.loads((GOLDEN / "archive-v1.json").read_text())
    golden = (GOLDEN / "archive-v1.bentomodel").read_bytes()
    assert struct.unpack_from("<H", golden, 8) == (1,) and not planes_payloads(golden)
    return {
        "written": (data, target, model.id, planes),
        "v1-golden": (golden, target, ids["golden:v1"], []),
    }


@pytest.fixture(params=["written", "v1-golden"])
def world(worlds: dict[str, World], request: pytest.FixtureRequest) -> World:
    """Each archive in turn."""
    return worlds[request.param]


@pytest.fixture
def planes_world(worlds: dict[str, World]) -> World:
    """The archive with byte-planes records."""
    return worlds["written"]


mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**9), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**9), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**9), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 10**9), st.integers(1, 64)),
    st.tuples(st.just("overwrite"), st.integers(0, 10**9), st.binary(min_size=1, max_size=64)),
)


def _mutate(data: bytes, how: tuple[str, int, object]) -> bytes:
    """Apply one mutation at a position taken modulo the length."""
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


def _mutate_planes(
    data: bytes, planes: list[tuple[int, int]], pick: int, near: int, how: tuple[str, int, object]
) -> bytes:
    """Apply one mutation inside a byte-planes payload: ``pick`` chooses the payload,
    ``near`` a byte of its header (0..17) or, when larger, anywhere in it."""
    offset, length = planes[pick % len(planes)]
    at = offset + (near if near < 18 else how[1]) % length
    return _mutate(data, (how[0], at, how[2]))


in_planes = st.tuples(st.integers(0, 10**6), st.integers(0, 17) | st.integers(18, 10**9), mutations)


def _refused(target: modelvault.Store, bad: bytes) -> None:
    before = _snapshot(target.path)
    with pytest.raises(ArchiveError):
        target.import_model(io.BytesIO(bad))
    assert _snapshot(target.path) == before


@FUZZ
@given(how=mutations)
def test_any_mutation_is_refused(world: World, how: tuple) -> None:  # type: ignore[type-arg]
    data, target, _, _ = world
    bad = _mutate(data, how)
    if bad != data:
        _refused(target, bad)


@FUZZ
@given(where=in_planes)
def test_any_mutation_of_byte_planes_is_refused(planes_world: World, where: tuple) -> None:  # type: ignore[type-arg]
    data, target, _, planes = planes_world
    bad = _mutate_planes(data, planes, *where)
    if bad != data:
        _refused(target, bad)


def _imports_nothing_else(world: World, body: bytes) -> None:
    """With its checksum recomputed, ``body`` is refused or imports the original model."""
    data, target, model_id, _ = world
    bad = resigned(body)
    if bad == data:
        return
    before = _snapshot(target.path)
    try:
        model = target.import_model(io.BytesIO(bad))
    except ArchiveError:
        assert _snapshot(target.path) == before
        return
    assert model.id == model_id
    target.delete(str(model.tag))
    target.gc()


@FUZZ
@given(how=mutations)
def test_mutations_with_a_valid_checksum_never_import_another_model(
    world: World,
    how: tuple,  # type: ignore[type-arg]
) -> None:
    _imports_nothing_else(world, _mutate(archive_body(world[0]), how))


@FUZZ
@given(where=in_planes)
def test_byte_planes_mutations_with_a_valid_checksum_never_import_another_model(
    planes_world: World,
    where: tuple,  # type: ignore[type-arg]
) -> None:
    data, _, _, planes = planes_world
    _imports_nothing_else(planes_world, _mutate_planes(archive_body(data), planes, *where))
