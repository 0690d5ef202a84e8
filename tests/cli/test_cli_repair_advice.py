"""`mv verify`'s advice after damage is a command sequence that repairs the store:
run exactly as printed, it leaves `mv verify` ok and every tag reading back as saved."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from _cli import Run

from modelvault import Store
from modelvault.checkout import lookup, read_file_object

FILES = ("w.bin", "config.json")
CONTENT = {  # the two models share no chunk
    name: {"w.bin": os.urandom(400_000), "config.json": b'{"a": "%s"}' % name.encode()}
    for name in ("m", "n")
}


def _content(name: str, rel: str) -> bytes:
    return CONTENT[name][rel]


@pytest.fixture
def saved(mv: Run, tmp_path: Path, _isolated_home: Path) -> Store:
    """Two models saved, pushed to the `origin` remote and exported to archives."""
    for name in ("m", "n"):
        src = tmp_path / name
        src.mkdir()
        for rel in FILES:
            (src / rel).write_bytes(_content(name, rel))
        assert mv("save", str(src), f"{name}:v1").returncode == 0
    remote = tmp_path / "remote"
    assert mv("remote", "add", "origin", f"file://{remote}").returncode == 0
    for tag in ("m:v1", "n:v1"):
        assert mv("push", tag).returncode == 0, tag
        assert mv("export", tag, str(tmp_path / "archives") + "/").returncode == 0
    return Store(_isolated_home)


def _flip_chunk(store: Store, tag: str) -> None:
    model = store.get(tag)
    _, fid = lookup(store.repo.objects, model.object.tree, "w.bin")
    cid = read_file_object(store.repo.objects, fid).chunks[1][0]
    e = store.repo.objects.entry(cid)
    assert e is not None
    pack = store.path / "objects" / "packs" / f"{e.pack}.pack"
    pack.chmod(0o644)
    with open(pack, "r+b") as f:
        f.seek(e.offset + 5)
        byte = f.read(1)
        f.seek(e.offset + 5)
        f.write(bytes([byte[0] ^ 0x40]))


def _advice(mv: Run) -> list[list[str]]:
    """Run `mv verify` (which must fail) and return the commands it advises."""
    result = mv("verify")
    assert result.returncode != 0
    commands = [line.strip() for line in result.stderr.splitlines() if line.startswith("  mv ")]
    assert commands, result.stderr
    return [shlex.split(part)[1:] for line in commands for part in line.split("&&")]


def _sound(mv: Run, store: Store) -> None:
    assert mv("verify").returncode == 0
    for name in ("m", "n"):
        model = Store(store.path).get(f"{name}:v1")
        for rel in FILES:
            with model.open(rel) as f:
                assert f.read() == _content(name, rel)
        assert (Path(model.path) / "w.bin").read_bytes() == _content(name, "w.bin")


def test_advice_after_a_corrupt_chunk_repairs_the_store(mv: Run, saved: Store) -> None:
    _flip_chunk(saved, "m:v1")
    advised = _advice(mv)
    assert advised == [["pull", "m:v1"]]
    for args in advised:
        result = mv(*args)
        assert result.returncode == 0, result.stderr
    _sound(mv, saved)
    assert mv("gc").returncode == 0  # frees the damaged pack set aside
    assert not any((saved.path / "objects" / "quarantine").iterdir())
    _sound(mv, saved)


def test_advice_after_a_damaged_ref_repairs_the_store(mv: Run, saved: Store) -> None:
    ref = saved.path / "refs" / "n" / "v1"
    ref.chmod(0o644)
    ref.write_bytes(ref.read_bytes()[:10])
    advised = _advice(mv)
    assert advised == [["delete", "n:v1", "-y"], ["pull", "n:v1"]]
    for args in advised:
        result = mv(*args)
        assert result.returncode == 0, result.stderr
    _sound(mv, saved)


def test_importing_the_archive_repairs_a_corrupt_chunk(
    mv: Run, saved: Store, tmp_path: Path
) -> None:
    """The advice's other way: `mv import FILE` of the tag's archive."""
    _flip_chunk(saved, "n:v1")
    _advice(mv)
    [archive] = (tmp_path / "archives").glob("n-*.bentomodel")
    result = mv("import", str(archive))
    assert result.returncode == 0, result.stderr
    _sound(mv, saved)
