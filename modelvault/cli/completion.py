"""Bash completion that survives the ``:`` in tags.

Bash splits the word being completed at every character of ``COMP_WORDBREAKS``, which
holds ``:``; so for ``mv get iris_clf:<TAB>`` typer's own bash script hands the completer
the words ``iris_clf`` ``:`` and an empty word, and bash then inserts each answer after the
colon (``iris_clf:iris_clf:v1``). modelvault's bash script rebuilds the words from the
command line itself (split at blanks only) and, like bash-completion's
``__ltrim_colon_completions``, strips the part up to the last colon from each answer.
The answers still come from typer's completion protocol (``_MV_COMPLETE=complete_bash``
with ``COMP_WORDS`` and ``COMP_CWORD``), so commands, options and tags complete as before.

``mv --show-completion`` / ``--install-completion`` use this script for bash (given, or
detected from ``$SHELL``); other shells get typer's own scripts, which do not split at
``:``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["bash_script", "handle", "install_bash"]

_BASH = r"""
%(func)s() {
    local IFS=$'\n'
    local line="${COMP_LINE:0:COMP_POINT}"
    local cur="${line##*[[:blank:]]}"
    local -a words
    IFS=$' \t' read -r -a words <<< "$line"
    local cword=${#words[@]}
    [[ -n "$cur" ]] && cword=$((cword - 1))
    COMPREPLY=( $( env COMP_WORDS="${words[*]} " COMP_CWORD=$cword \
                   %(var)s=complete_bash "$1" 2>/dev/null ) )
    if [[ "$cur" == *:* && "$COMP_WORDBREAKS" == *:* ]]; then
        local colon_word=${cur%%"${cur##*:}"}
        local i=${#COMPREPLY[@]}
        while [[ $((--i)) -ge 0 ]]; do
            COMPREPLY[$i]=${COMPREPLY[$i]#"$colon_word"}
        done
    fi
    return 0
}

complete -o default -F %(func)s %(prog)s
"""


def bash_script(prog: str) -> str:
    """The bash completion script of the console script ``prog`` (``mv`` or ``modelvault``)."""
    ident = prog.replace("-", "_")
    return _BASH % {
        "func": f"_{ident}_completion",
        "var": f"_{ident.upper()}_COMPLETE",
        "prog": prog,
    }


def install_bash(prog: str, home: Path | None = None) -> Path:
    """Write the script to ``~/.bash_completions/<prog>.sh`` and source it from
    ``~/.bashrc`` (once), where typer would install its own; returns the script's path."""
    home = Path.home() if home is None else home
    script = home / ".bash_completions" / f"{prog}.sh"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(bash_script(prog))
    rc = home / ".bashrc"
    line = f"source '{script}'"
    text = rc.read_text() if rc.is_file() else ""
    if line not in text.splitlines():
        rc.write_text(text + ("" if not text or text.endswith("\n") else "\n") + line + "\n")
    return script


def handle(args: Sequence[str], prog: str) -> bool:
    """Serve ``--show-completion [bash]`` / ``--install-completion [bash]`` for bash (the
    shell given, else ``$SHELL``'s); False when another shell's are asked (typer serves)."""
    if not args or args[0] not in ("--show-completion", "--install-completion"):
        return False
    shell = args[1] if len(args) > 1 else _detect_shell()
    if shell != "bash":
        return False
    if args[0] == "--show-completion":
        with contextlib.suppress(BrokenPipeError):
            sys.stdout.write(bash_script(prog) + "\n")
            sys.stdout.flush()
    else:
        path = install_bash(prog)
        print(f"bash completion installed in {path}; open a new shell to use it")
    return True


def _detect_shell() -> str:
    """The shell this runs under, as typer detects it (shellingham: the parent
    processes), else ``$SHELL``'s name."""
    try:
        import shellingham  # type: ignore[import-untyped]

        name: str = shellingham.detect_shell()[0]
        return name
    except Exception:  # ShellDetectionFailure, or shellingham missing
        return os.path.basename(os.environ.get("SHELL", ""))
