"""One damaged ref is one damaged ref (issue 16, point 5): listing, latest, stats, verify
and gc go on (and say what is damaged); only reads of that exact tag fail. Every shape
of damage raises IntegrityError, never a raw AttributeError, OverflowError or TypeError.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from _damaged_refs import SHAPES, shapes
from _helpers import write_files

from modelvault import IntegrityError, NotFound, Store, Tag

SHAPES_HERE = [*SHAPES, "folder"]  # locally a ref can also be a folder


def _three_models(store: Store, tmp_path: Path) -> None:
    """a:v0 then a:v1 (a's newest) then b:v1, each a small folder."""
    for i, tag in enumerate(("a:v0", "a:v1", "b:v1")):
        src = write_files(tmp_path / f"src{i}", {"w.bin": bytes([i]) * 5000, "c.json": b"{}"})
        store.save(src, tag)


def damage_ref(store: Store, tag: str, shape: str) -> None:
    """Replace the ref file of ``tag`` with a damaged one of ``shape``."""
    t = Tag.from_str(tag)
    path = store.path / "refs" / t.name / str(t.version)
    valid = path.read_bytes()
    path.chmod(0o644)
    path.unlink()
    if shape == "folder":
        path.mkdir()
        return
    path.write_bytes(shapes(valid)[shape])


@pytest.mark.parametrize("shape", SHAPES_HERE)
def test_a_damaged_ref_hides_only_itself(
    store: Store, tmp_path: Path, shape: str, caplog: pytest.LogCaptureFixture
) -> None:
    _three_models(store, tmp_path)
    damage_ref(store, "a:v1", shape)
    fresh = Store(store.path)
    with caplog.at_level(logging.WARNING, logger="modelvault"):
        listed = [str(m.tag) for m in fresh.list()]
    assert listed == ["b:v1", "a:v0"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "a:v1" in warnings[0].getMessage()
    assert "mv delete a:v1" in warnings[0].getMessage()  # says how to repair
    assert [str(m.tag) for m in fresh.list("a")] == ["a:v0"]
    assert fresh.get("a").tag == "a:v0"  # latest: the newest readable version
    assert fresh.get("a:latest").tag == "a:v0"
    with pytest.raises(IntegrityError, match="a:v1") as exc:
        fresh.get("a:v1")
    assert "mv delete a:v1" in str(exc.value)
    stats = fresh.stats()
    assert (stats.models, stats.logical_bytes) == (2, 2 * 5002)
    with fresh.get("b:v1").open("w.bin") as f:
        assert f.read() == bytes([2]) * 5000


@pytest.mark.parametrize("shape", SHAPES_HERE)
def test_verify_reports_a_damaged_ref_and_gc_stops_naming_it(
    store: Store, tmp_path: Path, shape: str
) -> None:
    _three_models(store, tmp_path)
    damage_ref(store, "a:v1", shape)
    fresh = Store(store.path)
    report = fresh.verify()
    assert not report.ok
    assert report.broken_tags == ["a:v1"]
    assert "refs/a/v1" in report.damaged_files
    assert report.corrupt == [] and report.missing == []
    with pytest.raises(IntegrityError, match="a:v1") as exc:
        fresh.gc()  # what the damaged ref reaches is unknown: nothing may be freed
    assert "delete" in str(exc.value)
    fresh.delete("a:v1")  # the way out the messages name
    assert fresh.verify().ok
    assert [str(m.tag) for m in fresh.list()] == ["b:v1", "a:v0"]
    with pytest.raises(NotFound):
        fresh.get("a:v1")


def test_deleting_a_bare_name_removes_its_damaged_refs_too(store: Store, tmp_path: Path) -> None:
    _three_models(store, tmp_path)
    damage_ref(store, "a:v1", "null")
    store.delete("a")
    assert [str(m.tag) for m in store.list()] == ["b:v1"]
    assert store.verify().ok
    assert store.gc() > 0


def test_a_name_whose_every_ref_is_damaged(store: Store, tmp_path: Path) -> None:
    _three_models(store, tmp_path)
    damage_ref(store, "a:v0", "truncated")
    damage_ref(store, "a:v1", "created-1e400")
    with pytest.raises(IntegrityError, match="a:v0, a:v1"):
        store.get("a")
    assert [str(m.tag) for m in store.list()] == ["b:v1"]
    assert store.list("a") == []


def test_stray_files_in_refs_are_not_refs(store: Store, tmp_path: Path) -> None:
    """Files under refs/ whose names no tag has (a hand-made copy, an editor's backup)
    are ignored, as temporaries are: they never break a listing."""
    _three_models(store, tmp_path)
    shutil.copy(store.path / "refs" / "a" / "v1", store.path / "refs" / "a" / "v1 copy")
    (store.path / "refs" / "a" / "V2").write_bytes(b"junk")
    (store.path / "refs" / "Not A Name").mkdir()
    assert [str(m.tag) for m in store.list()] == ["b:v1", "a:v1", "a:v0"]
    assert store.verify().ok


def test_an_unknown_key_is_not_damage(store: Store, tmp_path: Path) -> None:
    """docs/format.md section 6: readers ignore keys they do not know."""
    _three_models(store, tmp_path)
    path = store.path / "refs" / "a" / "v1"
    valid = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(valid[:-1] + b', "future": [1, {"x": null}]}')
    assert store.get("a:v1").tag == "a:v1"
    assert store.verify().ok
