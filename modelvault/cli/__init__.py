"""The ``mv`` / ``modelvault`` command line (see docs/cli.md).

``main()`` first decides, from ``sys.argv`` alone, whether the arguments are for
modelvault; if not, it runs the system ``mv`` (:mod:`modelvault.cli.passthrough`).
Only then is the typer app (:mod:`modelvault.cli.app`) imported, so moving files
and ``mv --help`` pay no more start-up than they must.

Exit codes: 0 success; 1 an error (one line on stderr, no traceback unless ``--debug``
or ``MODELVAULT_DEBUG=1``); 2 a usage error (bad option, argument or tag); 130
interrupted by Ctrl-C. ``mv verify`` exits 1 when the store is damaged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

COMMANDS = frozenset(
    {
        "list",
        "get",
        "delete",
        "save",
        "checkout",
        "export",
        "import",
        "push",
        "pull",
        "remote",
        "gc",
        "verify",
        "du",
        "models",
        "alias",
        "diff",
        "status",
    }
)
GLOBAL_OPTIONS = frozenset(
    {
        "--help",
        "-h",
        "--version",
        "--debug",
        "--store",
        "--install-completion",
        "--show-completion",
    }
)


def _completion_requested(prog: str) -> bool:
    """True when a shell asks typer's completion (``_MV_COMPLETE=...`` and the like)."""
    names = {prog, "mv", "modelvault"}
    return any(f"_{n.replace('-', '_').upper()}_COMPLETE" in os.environ for n in names)


def is_modelvault_invocation(args: Sequence[str], prog: str = "mv") -> bool:
    """True when ``args`` (without the program name) are for modelvault, not the system mv.

    They are when there are none, when the first is a modelvault command or global
    option (``--store=PATH`` included), or when a shell asks for completions.
    """
    if not args or _completion_requested(prog):
        return True
    first = args[0]
    return first in COMMANDS or first in GLOBAL_OPTIONS or first.startswith("--store=")


QUIET = ("-q", "--quiet")


def near_miss(args: Sequence[str]) -> str | None:
    """The command a mistyped first argument most likely meant (``mv lst`` -> ``list``),
    or None: when it is an option, an existing path, or like no command."""
    if not args or args[0].startswith("-") or os.path.lexists(args[0]):
        return None
    import difflib

    close = difflib.get_close_matches(args[0].lower(), sorted(COMMANDS), n=1, cutoff=0.75)
    return close[0] if close else None


def _take_quiet(args: list[str]) -> tuple[list[str], bool]:
    """``(args, quiet)``: ``-q`` among the global options before a command (``mv -q
    [--store P] list``) is taken out (it applies to every command); ``quiet`` is also
    True when a command's own ``-q`` comes after it. Else ``args`` are unchanged."""
    i, before = 0, []
    while i < len(args):
        arg = args[i]
        if arg in QUIET:
            before.append(i)
        elif arg == "--store":
            i += 1
        elif not (arg == "--debug" or arg.startswith("--store=")):
            break
        i += 1
    if i >= len(args) or args[i] not in COMMANDS:
        return args, False
    after = args[i + 1 :]
    end = after.index("--") if "--" in after else len(after)
    quiet = bool(before) or any(a in QUIET for a in after[:end])
    return [a for j, a in enumerate(args) if j not in before], quiet


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mv`` and ``modelvault`` console scripts."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "mv"
    prog = prog if prog in ("mv", "modelvault") else "mv"
    args, quiet = _take_quiet(args)
    if prog == "mv" and not is_modelvault_invocation(args, prog):
        meant = near_miss([a for a in args if a not in QUIET])
        if meant is not None:  # moving nothing beats a confusing message from coreutils
            sys.stderr.write(f"mv: did you mean '{meant}'? ('{args[0]}' is no command")
            sys.stderr.write(" and no file here; `mv --help` lists the commands)\n")
            return 2
        from modelvault.cli.passthrough import run_system_mv

        return run_system_mv(args)
    from modelvault.cli import completion

    if completion.handle(args, prog):  # bash: a script that copes with ':' in tags
        return 0
    from modelvault.cli._shared import _Quiet
    from modelvault.cli.app import run

    _Quiet.on = quiet
    return run(args, prog)
