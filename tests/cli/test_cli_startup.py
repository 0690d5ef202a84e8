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


FALLBACK = """
import sys
from modelvault.cli import _coerce, main
# as on a typer release without the internals the shim patches: install() does nothing
_coerce.install = lambda: False
code = main(sys.argv[1:])
sys.stderr.write(f"typer coerced: {'pydantic' in sys.modules}")  # its own path imports it
sys.exit(code)
"""


def test_without_typers_internal_the_cli_still_works(
    cli_env: dict[str, str], mv: Run, model_dir: Path, tmp_path: Path
) -> None:
    """The shim is an optimisation: when a typer release lacks what it patches, typer's own
    coercion runs and every parameter kind `mv` uses still parses (docs/cli.md)."""
    assert mv("save", str(model_dir), "fb:v1", "-q").returncode == 0
    cases = [
        (("list", "-o", "json"), '"tag": "fb:v1"'),  # an Enum option
        (("get", "fb:v1", "-o", "json"), '"name": "fb"'),
        (("--store", cli_env["MODELVAULT_HOME"], "list"), "fb:v1"),  # a Path option
        (("save", str(model_dir), "fb:v2", "--label", "a=b", "-q"), ""),  # list[str], bool
    ]
    for args, expected in cases:
        out = subprocess.run(
            [sys.executable, "-c", FALLBACK, *args],
            env=cli_env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert out.returncode == 0, (args, out.stderr)
        assert expected in out.stdout, (args, out.stdout)
        assert out.stderr.endswith("typer coerced: True"), out.stderr
    bad = subprocess.run(
        [sys.executable, "-c", FALLBACK, "list", "-o", "xml"], env=cli_env, capture_output=True
    )
    assert bad.returncode == 2  # a bad choice is still a usage error
