"""``mv alias set|list|remove`` and ``NAME@ALIAS`` in the commands that read a tag."""

from __future__ import annotations

import json
from pathlib import Path

from _cli import Run, no_traceback


def _saved(mv: Run, model_dir: Path, tag: str) -> None:
    result = mv("save", str(model_dir), tag)
    assert result.returncode == 0, result.stderr


def test_alias_set_list_remove(mv: Run, model_dir: Path) -> None:
    _saved(mv, model_dir, "iris:v1")
    (model_dir / "weights.bin").write_bytes(b"other")
    _saved(mv, model_dir, "iris:v2")
    done = mv("alias", "set", "iris@prod", "iris:v1")
    assert done.returncode == 0, done.stderr
    assert "iris@prod -> iris:v1" in done.stdout
    assert mv("alias", "set", "iris@staging", "iris").returncode == 0  # the newest now
    listed = mv("alias", "list", "-o", "json")
    assert json.loads(listed.stdout) == [
        {"alias": "iris@prod", "name": "iris", "version": "v1", "tag": "iris:v1"},
        {"alias": "iris@staging", "name": "iris", "version": "v2", "tag": "iris:v2"},
    ]
    table = mv("alias", "list", "iris")
    assert "iris@prod" in table.stdout and "iris:v1" in table.stdout
    assert json.loads(mv("alias", "list", "other", "-o", "json").stdout) == []
    got = mv("get", "iris@prod", "-o", "json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["version"] == "v1"
    assert mv("alias", "remove", "iris@staging").returncode == 0
    assert [d["alias"] for d in json.loads(mv("alias", "list", "-o", "json").stdout)] == [
        "iris@prod"
    ]


def test_commands_read_name_at_alias(mv: Run, model_dir: Path, tmp_path: Path) -> None:
    _saved(mv, model_dir, "iris:v1")
    assert mv("alias", "set", "iris@prod", "iris:v1").returncode == 0
    out = mv("checkout", "iris@prod", str(tmp_path / "co"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "co" / "weights.bin").read_bytes() == (
        model_dir / "weights.bin"
    ).read_bytes()
    ex = mv("export", "iris@prod", str(tmp_path / "ex") + "/")
    assert ex.returncode == 0, ex.stderr
    assert (tmp_path / "ex" / "iris-v1.bentomodel").is_file()
    remote = (tmp_path / "remote").as_uri()
    pushed = mv("push", "iris@prod", remote)
    assert pushed.returncode == 0, pushed.stderr
    assert "Alias iris@prod -> iris:v1 there" in pushed.stdout
    listed = mv("alias", "list", "--remote", remote, "-o", "json")
    assert json.loads(listed.stdout)[0]["alias"] == "iris@prod"
    env_store = tmp_path / "other-store"
    pulled = mv("--store", str(env_store), "pull", "iris@prod", remote)
    assert pulled.returncode == 0, pulled.stderr
    assert 'pulled model "iris:v1"' in pulled.stdout
    assert "Alias iris@prod -> iris:v1 here" in pulled.stdout
    there = mv("--store", str(env_store), "alias", "list", "-o", "json")
    assert json.loads(there.stdout)[0]["tag"] == "iris:v1"


def test_alias_errors_are_one_line(mv: Run, model_dir: Path) -> None:
    _saved(mv, model_dir, "iris:v1")
    for args, words in [
        (("alias", "set", "iris@-bad", "iris:v1"), "invalid alias"),
        (("alias", "set", "iris", "iris:v1"), "not an alias"),
        (("alias", "set", "other@prod", "iris:v1"), "only name a version of 'other'"),
        (("alias", "set", "iris@prod", "iris:v9"), "not found"),
        (("alias", "remove", "iris@nope"), "iris@nope"),
        (("get", "iris@nope"), "iris@nope"),
    ]:
        result = mv(*args)
        assert result.returncode != 0, args
        no_traceback(result)
        assert words in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert mv("alias", "set", "iris@prod", "iris:v1").returncode == 0
    refused = mv("delete", "iris:v1", "-y")
    assert refused.returncode != 0
    assert "iris@prod" in refused.stderr
    asked = mv("delete", "iris@prod", "-y")
    assert asked.returncode != 0 and "mv alias remove iris@prod" in asked.stderr
    assert mv("list", "-o", "json").stdout.count("iris:v1") == 1
