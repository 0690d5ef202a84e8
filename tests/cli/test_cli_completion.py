"""Bash completion of tags, through the installed script and a real bash.

Bash splits the word under the cursor at ``:`` (it is in ``COMP_WORDBREAKS``), so the
completion function sees ``iris_clf`` ``:`` ``""`` for ``iris_clf:``; these tests give the
function exactly what bash gives it and check what bash would insert, and one drives an
interactive bash on a pseudo-terminal with a real TAB.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from _cli import Run, console_script

BASH = shutil.which("bash") or "/bin/bash"  # Debian's, always there

VERSIONS = ("v1", "v2", "x9")


@pytest.fixture
def tagged(mv: Run, model_dir: Path) -> None:
    for v in VERSIONS:
        assert mv("save", str(model_dir), f"iris_clf:{v}", "-q").returncode == 0
    assert mv("save", str(model_dir), "other:v1", "-q").returncode == 0


def _complete(cli_env: dict[str, str], script: str, line: str) -> list[str]:
    """COMPREPLY of the completion function for ``line`` (cursor at its end), with the
    words split the way bash's readline splits them (at blanks and at COMP_WORDBREAKS)."""
    program = f"""
source <({script} --show-completion bash)
COMP_LINE={line!r}
COMP_POINT=${{#COMP_LINE}}
eval "COMP_WORDS=($(printf '%s' "$COMP_LINE" | sed -e 's/:/ : /g'))"
[[ "$COMP_LINE" == *[[:blank:]:] ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
_mv_completion mv
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = {**cli_env, "PATH": f"{Path(script).parent}:{cli_env.get('PATH', '')}"}
    out = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", program],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [w for w in out.stdout.splitlines() if w]


def test_versions_complete_after_the_colon(tagged: None, cli_env: dict[str, str]) -> None:
    script = console_script("mv")
    # bash replaces only the text after the colon: the answers must not repeat the name
    assert sorted(_complete(cli_env, script, "mv get iris_clf:")) == list(VERSIONS)
    assert sorted(_complete(cli_env, script, "mv get iris_clf:v")) == ["v1", "v2"]
    assert _complete(cli_env, script, "mv push iris_clf:x") == ["x9"]


def test_names_and_commands_still_complete(tagged: None, cli_env: dict[str, str]) -> None:
    script = console_script("mv")
    assert _complete(cli_env, script, "mv get ir") == ["iris_clf"]
    assert "list" in _complete(cli_env, script, "mv li")
    assert sorted(_complete(cli_env, script, "mv checkout ")) == ["iris_clf", "other"]


def test_other_shells_get_typers_scripts(tagged: None, cli_env: dict[str, str]) -> None:
    """Only bash's script is ours (zsh and fish do not split words at ':')."""
    theirs = subprocess.run(
        [console_script("mv"), "--show-completion", "zsh"], env=cli_env, capture_output=True
    )
    assert theirs.returncode == 0  # other shells: typer's scripts, unchanged
    assert b"compdef" in theirs.stdout or b"_mv" in theirs.stdout


def test_install_writes_the_script_and_sources_it_once(
    mv: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, "HOME": str(tmp_path / "home")}
    for _ in range(2):
        out = mv("--install-completion", "bash", env=env)
        assert out.returncode == 0, out.stderr
    script = tmp_path / "home" / ".bash_completions" / "mv.sh"
    assert "COMP_WORDBREAKS" in script.read_text()
    rc = (tmp_path / "home" / ".bashrc").read_text()
    assert rc.count(f"source '{script}'") == 1


def test_tab_in_an_interactive_bash(tagged: None, cli_env: dict[str, str]) -> None:
    """A real TAB on a pseudo-terminal: ``mv get iris_clf:x<TAB>`` becomes ``iris_clf:x9``."""
    script = console_script("mv")
    env = {
        **cli_env,
        "PATH": f"{Path(script).parent}:{cli_env.get('PATH', '')}",
        "PS1": "$ ",
        "TERM": "dumb",
        "INPUTRC": "/dev/null",  # readline's defaults: emacs keys
    }
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [BASH, "--norc", "--noprofile", "-i"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    seen = b""

    def read_until(marker: bytes, timeout: float = 30) -> bytes:
        nonlocal seen
        end = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
        return seen

    try:
        os.write(master, b"source <(mv --show-completion bash); echo READY\n")
        read_until(b"READY\r\n")
        seen = b""
        os.write(master, b"mv get iris_clf:x\t")
        read_until(b"x9", timeout=30)  # completion runs `mv` in a subprocess
        # Ctrl-A, then make the completed line an echo of itself rather than run it
        os.write(master, b"\x01echo got \n")
        out = read_until(b"\ngot mv get iris_clf:x9\r\n")
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    assert b"\ngot mv get iris_clf:x9\r\n" in out, out
