"""Fixtures of the CLI tests: the installed console scripts, run in subprocesses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from _cli import Run, console_script


@pytest.fixture
def cli_env(_isolated_home: Path) -> dict[str, str]:
    """The environment of the scripts: the isolated default store, no colour, no remote."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("MODELVAULT_REMOTE", "MODELVAULT_DEBUG")
    }
    env["MODELVAULT_HOME"] = str(_isolated_home)
    env["NO_COLOR"] = "1"
    return env


@pytest.fixture
def mv(cli_env: dict[str, str], tmp_path: Path) -> Run:
    """Run the installed ``mv`` with arguments; returns the CompletedProcess (text)."""
    script = console_script("mv")

    def run(
        *args: str,
        input: str | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script, *args],
            env=env or cli_env,
            cwd=cwd or tmp_path,
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A small model folder: a config, a tokenizer in a sub-folder, and 200 KiB of weights."""
    folder = tmp_path / "model"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden": 64}')
    (folder / "tokenizer" / "vocab.txt").write_text("a\nb\nc\n")
    (folder / "weights.bin").write_bytes(os.urandom(200 * 1024))
    return folder
