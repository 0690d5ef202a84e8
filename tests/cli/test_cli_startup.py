"""Start-up: what ``mv`` imports (the budget is 0.2 s; benchmarks/bench_cli.py times it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _cli import Run

PROBE = """
import io, json, sys
from modelvault.cli import main
out, sys.stdout = sys.stdout, io.StringIO()
code = main(sys.argv[1:])
sys.stdout = out
heavy = ("pydantic", "rich", "numpy", "typer._adapters", "fsspec", "cloudpickle", "torch")
print(json.dumps({"code": code, "loaded": [m for m in heavy if m in sys.modules]}))
"""


def _loaded(env: dict[str, str], *args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, check=True
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["code"] == 0, out.stderr
    return list(doc["loaded"])


def test_list_and_help_import_nothing_heavy(
    cli_env: dict[str, str], mv: Run, tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "f").write_text("x")
    assert mv("save", str(folder), "m").returncode == 0
    for args in (("list",), ("list", "-o", "json"), ("--help",), ("get", "m"), ("du",)):
        assert _loaded(cli_env, *args) == [], args


def test_typer_coercion_shim_is_active() -> None:
    from modelvault.cli import _coerce

    assert _coerce.install() is True


def test_shell_completion_lists_commands_and_tags(
    mv: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "f").write_text("x")
    assert mv("save", str(folder), "resnet:v1").returncode == 0
    env = {**cli_env, "_MV_COMPLETE": "complete_bash", "COMP_WORDS": "mv ge", "COMP_CWORD": "1"}
    commands = mv(env=env)
    assert commands.returncode == 0 and "get" in commands.stdout.split()
    env.update(COMP_WORDS="mv get res", COMP_CWORD="2")
    assert "resnet" in mv(env=env).stdout.split()
    env.update(COMP_WORDS="mv get resnet:", COMP_CWORD="2")
    assert "resnet:v1" in mv(env=env).stdout
