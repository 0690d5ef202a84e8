"""`mv list`, `mv du` and friends with one damaged ref (issue 16, point 5): they show what
they can read, say on one stderr line what they skipped, and exit 0; the commands that
need the damaged tag fail with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cli import Run, no_traceback
from _damaged_refs import shapes

import modelvault


def _damaged_store(home: Path, model_dir: Path, shape: str) -> None:
    store = modelvault.Store(home)
    store.save(model_dir, "a:v0")
    store.save(model_dir, "a:v1", metadata={"n": 1})
    store.save(model_dir, "b:v1", metadata={"n": 2})
    ref = home / "refs" / "a" / "v1"
    valid = ref.read_bytes()
    ref.chmod(0o644)
    ref.write_bytes(shapes(valid)[shape])


def _one_warning(stderr: str, tag: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("mv: warning: ") and tag in lines[0], stderr
    assert f"mv delete {tag}" in lines[0]


@pytest.mark.parametrize("shape", ["truncated", "null", "created-1e400"])
def test_list_and_du_show_the_readable_models(
    mv: Run, _isolated_home: Path, model_dir: Path, shape: str
) -> None:
    _damaged_store(_isolated_home, model_dir, shape)
    listed = mv("list")
    assert listed.returncode == 0, listed.stderr
    assert "a:v0" in listed.stdout and "b:v1" in listed.stdout
    assert "a:v1" not in listed.stdout
    _one_warning(listed.stderr, "a:v1")

    as_json = mv("list", "-o", "json")
    assert as_json.returncode == 0
    assert [d["tag"] for d in json.loads(as_json.stdout)] == ["b:v1", "a:v0"]
    _one_warning(as_json.stderr, "a:v1")

    du = mv("du", "-o", "json")
    assert du.returncode == 0, du.stderr
    doc = json.loads(du.stdout)
    assert [r["tag"] for r in doc["models"]] == ["b:v1", "a:v0"]
    assert doc["total"]["models"] == 2
    _one_warning(du.stderr, "a:v1")  # du lists twice (rows, totals): still one line

    table = mv("du")
    assert table.returncode == 0 and "Total: 2 models" in table.stdout
    _one_warning(table.stderr, "a:v1")


def test_commands_that_need_the_damaged_tag_fail_with_one_line(
    mv: Run, _isolated_home: Path, model_dir: Path
) -> None:
    _damaged_store(_isolated_home, model_dir, "created-1e400")
    got = mv("get", "a:v1")
    assert got.returncode == 1
    no_traceback(got)
    assert "a:v1" in got.stderr and "mv delete a:v1" in got.stderr

    latest = mv("get", "a", "-o", "json")  # the newest readable version, with a warning
    assert latest.returncode == 0
    assert json.loads(latest.stdout)["version"] == "v0"
    _one_warning(latest.stderr, "a:v1")

    verify = mv("verify")
    assert verify.returncode == 1
    assert "broken tag a:v1" in verify.stdout
    assert "Traceback" not in verify.stderr

    gc = mv("gc", "-q")
    assert gc.returncode == 1
    no_traceback(gc)
    assert "a:v1" in gc.stderr

    assert mv("delete", "a:v1", "-y").returncode == 0
    assert mv("verify").returncode == 0
    clean = mv("list")
    assert clean.returncode == 0 and clean.stderr == ""


def test_deleting_a_name_deletes_its_damaged_refs_too(
    mv: Run, _isolated_home: Path, model_dir: Path
) -> None:
    _damaged_store(_isolated_home, model_dir, "list")
    deleted = mv("delete", "a", "-y")
    assert deleted.returncode == 0, deleted.stderr
    assert 'Model(tag="a:v0") deleted' in deleted.stdout
    assert "Damaged ref a:v1 deleted" in deleted.stdout
    assert mv("verify").returncode == 0
    assert [d["tag"] for d in json.loads(mv("list", "-o", "json").stdout)] == ["b:v1"]


def test_remote_listing_and_pull_skip_a_damaged_remote_ref(
    mv: Run, _isolated_home: Path, model_dir: Path, tmp_path: Path
) -> None:
    _damaged_store(_isolated_home, model_dir, "null")  # damages the local a:v1 ...
    store = modelvault.Store(_isolated_home)
    remote = tmp_path / "remote"
    store.delete("a:v1")
    store.save(model_dir, "a:v1", metadata={"n": 3})
    for tag in ("a:v0", "a:v1", "b:v1"):
        store.push(tag, remote.as_uri())
    ref = remote / "refs" / "a" / "v1"  # ... and then the remote's
    ref.chmod(0o644)
    ref.write_bytes(b'{"model": "')
    listed = mv("list", "--remote", remote.as_uri(), "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [d["tag"] for d in json.loads(listed.stdout)] == ["b:v1", "a:v0"]
    lines = listed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mv: warning: ") and "a:v1" in lines[0]

    other = tmp_path / "other-store"
    pulled = mv("--store", str(other), "pull", "a", remote.as_uri(), "-q")
    assert pulled.returncode == 0, pulled.stderr
    assert "a:v1" in pulled.stderr and pulled.stderr.count("\n") == 1
    assert [m.tag for m in modelvault.Store(other).list()] == ["a:v0"]
