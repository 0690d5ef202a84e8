"""Repair from the command line (issue 16, point 3): after `mv verify` reports a corrupt
object, `mv pull TAG` or `mv import FILE` of a healthy copy moves the lost objects back
(not "0 objects") and `mv verify` passes again."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _cli import Run

import modelvault
from modelvault.core.hashing import ObjType


def _flip_a_chunk(home: Path) -> None:
    store = modelvault.Store(home)
    entries = [store.repo.objects.entry(oid) for oid in store.repo.objects.ids()]
    e = max((e for e in entries if e and e.kind == ObjType.CHUNK), key=lambda e: e.stored_len)
    path = home / "objects" / "packs" / f"{e.pack}.pack"
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(e.offset + e.stored_len // 2)
        byte = f.read(1)[0]
        f.seek(e.offset + e.stored_len // 2)
        f.write(bytes([byte ^ 0x01]))


@pytest.mark.parametrize("how", ["pull", "import"])
def test_the_repair_sequence_works(
    mv: Run, _isolated_home: Path, model_dir: Path, tmp_path: Path, how: str
) -> None:
    assert mv("save", str(model_dir), "bert:v1", "-q").returncode == 0
    remote = (tmp_path / "remote").as_uri()
    archive = tmp_path / "bert-v1.bentomodel"
    if how == "pull":
        assert mv("push", "bert:v1", remote, "-q").returncode == 0
    else:
        assert mv("export", "bert:v1", str(archive), "-q").returncode == 0
    _flip_a_chunk(_isolated_home)
    broken = mv("verify", "-q")
    assert broken.returncode == 1 and "broken tag bert:v1" in broken.stdout

    if how == "pull":
        fixed = mv("pull", "bert:v1", remote)  # not -q: the status line counts objects
        assert fixed.returncode == 0, fixed.stderr
        moved = re.search(r"\((\d+) objects", fixed.stdout)
        assert moved is not None and int(moved.group(1)) >= 1, fixed.stdout
    else:
        fixed = mv("import", str(archive), "-q")
        assert fixed.returncode == 0, fixed.stderr
    assert mv("verify", "-q").returncode == 0
    out = tmp_path / "out"
    assert mv("checkout", "bert:v1", str(out), "-q").returncode == 0
    for p in model_dir.rglob("*"):
        if p.is_file():
            assert (out / p.relative_to(model_dir)).read_bytes() == p.read_bytes()
