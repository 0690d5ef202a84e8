"""docs/cli.md's console examples are what the installed ``mv`` prints (issue 22).

The examples are made by tests/cli/cli_examples.py (``make docs-examples``); this runs it
in check mode: every marked block is run again in a fresh sandbox and compared.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _cli import console_script

GENERATOR = Path(__file__).with_name("cli_examples.py")


@pytest.mark.slow
def test_cli_md_examples_are_what_the_commands_print() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check", "--mv", console_script("mv")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (
        "docs/cli.md's examples differ from what the commands print now "
        "(`make docs-examples` rewrites them):\n" + done.stdout + done.stderr
    )


def test_check_mode_reports_a_changed_example(tmp_path: Path) -> None:
    """A block edited by hand fails the check with a diff naming the line; nothing is written."""
    import cli_examples

    doc = cli_examples.DOC.read_text(encoding="utf-8")
    bodies = {e.name: f"$ {e.name}\nout\n" for e in cli_examples.EXAMPLES}
    made = cli_examples.splice(doc, bodies)
    assert "<!-- example: gc -->\n```console\n$ gc\nout\n```" in made
    assert cli_examples.splice(made, bodies) == made  # prose and markers kept as they are
    with pytest.raises(SystemExit, match="missing \\['gc'\\]"):
        cli_examples.splice(made.replace("<!-- example: gc -->", ""), bodies)
