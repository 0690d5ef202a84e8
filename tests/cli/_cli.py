"""Helpers of the CLI tests (importable as ``_cli``: pytest puts this folder on sys.path)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

Run = Callable[..., subprocess.CompletedProcess[str]]


def console_script(name: str) -> str:
    """The console script ``name`` installed next to this Python (else on PATH)."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"console script {name!r} not installed: pip install -e .")
    return found


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    """The error output is one ``mv: error:`` line, without a Python traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mv: error: "), result.stderr
