"""Hypothesis mutates REAL BentoML archives (tests/golden/bentoml): each mutant either
raises ArchiveError, leaving the store's files exactly as they were, or imports
correctly: the model's files are exactly the regular members Python's tarfile reads from
the mutant, and the store verifies.

Mutations land in the compressed file (xz, gz) and in the tar inside (re-compressed, so
they reach headers, names, sizes and model.yaml), and in zip archives.
"""

from __future__ import annotations

import gzip
import io
import lzma
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import modelvault
from modelvault.errors import ArchiveError

GOLDEN = Path(__file__).parent.parent / "golden" / "bentoml"
FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
XZ = (GOLDEN / "bento_pick.bentomodel").read_bytes()
TAR = lzma.decompress(XZ)
GZ = (GOLDEN / "bento_pick.gz").read_bytes()
ZIP = (GOLDEN / "bento_pick.zip").read_bytes()
SPECIAL = {"model.yaml", "custom_objects.pkl"}


def snapshot(path: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(path.rglob("*"))
    }


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "cut", "insert", "delete", "overwrite"]))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        bit = draw(st.integers(0, 7))
        return data[:at] + bytes([data[at] ^ (1 << bit)]) + data[at + 1 :]
    if kind == "cut":
        return data[:at]
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
    if kind == "delete":
        return data[:at] + data[at + draw(st.integers(1, 64)) :]
    blob = draw(st.binary(min_size=1, max_size=64))
    return data[:at] + blob + data[at + len(blob) :]


def _oracle_tar(raw: bytes) -> dict[str, bytes]:
    """The regular files Python's tarfile reads from a tar (model folder relative)."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for m in tar.getmembers():
            if m.isreg():
                f = tar.extractfile(m)
                assert f is not None
                out[m.name.removeprefix("./")] = f.read()
    return out


def _oracle_zip(raw: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}


def _check(archive: bytes, oracle: dict[str, bytes] | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = modelvault.Store(root / "store")
        store.import_model(str(GOLDEN / "bento_sk.bentomodel"))  # the store holds something
        src = root / "in.bin"
        src.write_bytes(archive)
        before = snapshot(root / "store")
        try:
            model = store.import_model(str(src))
        except ArchiveError:
            assert snapshot(root / "store") == before
            return
        assert oracle is not None, "imported an archive the reference reader refuses"
        files = {
            str(p.relative_to(model.path)): p.read_bytes()
            for p in Path(model.path).rglob("*")
            if p.is_file()
        }
        assert files == {k: v for k, v in oracle.items() if k not in SPECIAL}
        assert store.verify().ok
        shutil.rmtree(root / "store")


def _tar_oracle_or_none(raw: bytes) -> dict[str, bytes] | None:
    try:
        return _oracle_tar(raw)
    except (tarfile.TarError, EOFError, OSError, ValueError):
        return None


@FUZZ
@given(mutated(XZ))
def test_mutated_xz(archive: bytes) -> None:
    try:
        raw = lzma.decompress(archive)
    except (lzma.LZMAError, EOFError):
        raw = None
    _check(archive, None if raw is None else _tar_oracle_or_none(raw))


@FUZZ
@given(mutated(TAR))
def test_mutated_tar_inside_xz(raw: bytes) -> None:
    _check(lzma.compress(raw), _tar_oracle_or_none(raw))


@FUZZ
@given(mutated(TAR))
def test_mutated_tar_saved_while_unpacked(raw: bytes) -> None:
    """The same, every member saved while it is unpacked (reader.OVERLAP_MIN = 1)."""
    from modelvault.archive.bentoml import reader

    before = reader.OVERLAP_MIN
    reader.OVERLAP_MIN = 1
    try:
        _check(lzma.compress(raw), _tar_oracle_or_none(raw))
    finally:
        reader.OVERLAP_MIN = before


@FUZZ
@given(mutated(GZ))
def test_mutated_gz(archive: bytes) -> None:
    try:
        raw = gzip.decompress(archive)
    except (OSError, EOFError, zlib.error):
        raw = None
    _check(archive, None if raw is None else _tar_oracle_or_none(raw))


@FUZZ
@given(mutated(ZIP))
def test_mutated_zip(archive: bytes) -> None:
    try:
        oracle: dict[str, bytes] | None = _oracle_zip(archive)
    except Exception:
        oracle = None
    _check(archive, oracle)


pytestmark = pytest.mark.slow
