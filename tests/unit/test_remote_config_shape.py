"""A hand-edited config.json whose ``remotes`` has the wrong shape gives InvalidInput with
a message naming the file and the expected shape, from every entry point that reads it
(issue 16, point 8), never KeyError / TypeError / AttributeError."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault import remotes

BAD_SHAPES: list[Any] = [
    [],
    ["s3://bucket/p"],
    "s3://bucket/p",
    3,
    True,
    {"origin": "s3://bucket/p"},
    {"origin": ["s3://bucket/p"]},
    {"origin": None},
    {"origin": {}},
    {"origin": {"options": {}}},
    {"origin": {"url": 3}},
    {"origin": {"url": ""}},
    {"origin": {"url": "s3://bucket/p", "options": []}},
    {"origin": {"url": "s3://bucket/p", "options": "anon=true"}},
]


def _write(store: modelvault.Store, remotes_value: Any) -> None:
    path = store.path / "config.json"
    doc = json.loads(path.read_text())
    doc["remotes"] = remotes_value
    path.write_text(json.dumps(doc))


@pytest.fixture
def saved(store: modelvault.Store, tmp_path: Path) -> modelvault.Store:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"w" * 1000)
    store.save(tmp_path / "m", "m:v1")
    return store


CALLS: dict[str, Callable[[modelvault.Store], object]] = {
    "list": lambda s: remotes.list(store=s),
    "get": lambda s: remotes.get("origin", store=s),
    "add": lambda s: remotes.add("other", "memory://x", store=s),
    "push": lambda s: s.push("m:v1"),
    "push-by-url": lambda s: s.push("m:v1", "memory://elsewhere"),
    "pull": lambda s: s.pull("m:v1"),
    "list_remote": lambda s: s.list_remote(),
}


@pytest.mark.parametrize("shape", BAD_SHAPES, ids=lambda v: json.dumps(v)[:40])
def test_wrongly_shaped_remotes_are_invalid_input(saved: modelvault.Store, shape: Any) -> None:
    _write(saved, shape)
    for name, call in CALLS.items():
        with pytest.raises(modelvault.InvalidInput) as info:
            call(saved)
        text = str(info.value)
        assert str(saved.path / "config.json") in text, (name, text)
        assert '"remotes"' in text and "mv remote add" in text, (name, text)
        assert "\n" not in text
    with pytest.raises(modelvault.InvalidInput):
        remotes.remove("origin", store=saved)


def test_null_remotes_mean_none(saved: modelvault.Store) -> None:
    """Listed as no remotes, but reported by verify (modelvault never writes null: what
    the file held there is lost); adding a remote repairs it."""
    _write(saved, None)
    assert remotes.list(store=saved) == []
    report = saved.verify()
    assert not report.ok and report.broken_tags == []
    why = report.damaged_files["config.json"]
    assert '"remotes" is a null value, not an object' in why and "mv remote add" in why
    remotes.add("origin", "memory://x", store=saved)
    assert [r.name for r in remotes.list(store=saved)] == ["origin"]
    assert saved.verify().ok


def test_cli_says_what_is_wrong_in_one_line(tmp_path: Path, _isolated_home: Path) -> None:
    home = modelvault.Store(_isolated_home)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"w" * 1000)
    home.save(tmp_path / "m", "m:v1")
    _write(home, {"origin": {"options": {}}})
    env = {k: v for k, v in os.environ.items() if k != "MODELVAULT_REMOTE"}
    env.update(MODELVAULT_HOME=str(_isolated_home), NO_COLOR="1")
    mv = str(Path(sys.executable).with_name("mv"))
    for args in (["remote", "list"], ["push", "m:v1"], ["pull", "m:v1"], ["list", "--remote", "o"]):
        out = subprocess.run([mv, *args], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 1, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mv: error: "), out.stderr
        assert "remote 'origin' has no URL" in lines[0] and "internal error" not in lines[0]
