"""verify and gc report progress (``maintenance.Step``), as remote gc and verify do."""

from __future__ import annotations

import os
from pathlib import Path

import modelvault
from modelvault.repo.maintenance import Step


def _model(root: Path, seed: int, mib: int = 2) -> Path:
    root.mkdir()
    (root / "w.bin").write_bytes(os.urandom(mib << 20))
    (root / "cfg").write_text(str(seed))
    return root


def test_verify_reports_every_pack_in_bytes(store: modelvault.Store, tmp_path: Path) -> None:
    for i in range(3):
        store.save(_model(tmp_path / f"m{i}", i), f"m:v{i}")
    steps: list[Step] = []
    assert store.verify(progress=steps.append).ok
    assert {s.phase for s in steps} == {"verifying"}
    packs = store.repo.objects.packs()
    total = sum((store.repo.objects.pack_dir / f"{p}.pack").stat().st_size for p in packs)
    assert steps[-1] == Step("verifying", len(packs), total, len(packs), total)
    assert [s.bytes for s in steps] == sorted(s.bytes for s in steps)  # never backwards
    assert len(steps) == len(packs) + 1


def test_gc_reports_marking_repacking_and_deleting(store: modelvault.Store, tmp_path: Path) -> None:
    for i in range(3):
        store.save(_model(tmp_path / f"m{i}", i), f"m:v{i}")
    store.delete("m:v0")
    store.delete("m:v1")
    steps: list[Step] = []
    freed = store.gc(progress=steps.append)
    assert freed > 4 << 20
    phases = [s.phase for s in steps]
    deleting = [s for s in steps if s.phase == "deleting"]
    assert deleting and phases[-len(deleting) :] == ["deleting"] * len(deleting)  # last
    assert [s.objects for s in deleting] == list(range(len(deleting)))
    assert all(s.total_objects == len(deleting) for s in deleting)
    assert store.verify().ok and [str(m.tag) for m in store.list()] == ["m:v2"]
