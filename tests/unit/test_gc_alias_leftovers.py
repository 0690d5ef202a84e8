"""gc frees what a killed alias move left in ``aliases/<name>/`` (a temporary and its
lock file that nobody holds), and never an alias or a move in flight."""

from __future__ import annotations

from pathlib import Path

import modelvault
from modelvault import _fsutil


def test_gc_sweeps_dead_temporaries_of_alias_moves(store: modelvault.Store, tmp_path: Path) -> None:
    src = tmp_path / "m"
    src.mkdir()
    (src / "w").write_bytes(b"w" * 1000)
    store.save(src, "iris:v1")
    store.set_alias("iris:v1", "prod")
    folder = store.repo.layout.aliases / "iris"
    dead = folder / f"{_fsutil.TEMP_PREFIX}dead0001"
    dead.write_bytes(b'{"version": "v1"')  # a move killed half-way
    _fsutil.lock_of(dead).write_bytes(b"")
    with _fsutil.in_flight(folder) as alive:  # a move in flight: its lock is held
        alive.write_bytes(b"{}")
        store.gc()
        assert alive.exists()
        alive.unlink()  # (its owner would have renamed it into place)
    assert not dead.exists() and not _fsutil.lock_of(dead).exists()
    assert store.aliases() == {"iris@prod": modelvault.Tag("iris", "v1")}
    assert sorted(p.name for p in folder.iterdir()) == ["prod"]
