"""Running the system's own ``mv`` when the arguments are not for modelvault.

``mv a.txt b.txt`` must keep moving files in a virtualenv where modelvault installed
its ``mv`` script first on ``PATH``. The system ``mv`` is the next ``mv`` on ``PATH``
that is not a modelvault script (this one, or another environment's), else ``/bin/mv``.
It replaces this process (``exec``), so its exit status, signals and terminal are
exactly the system ``mv``'s.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

FALLBACK = "/bin/mv"
_MARKER = b"modelvault.cli"  # what every modelvault console script imports


def _is_modelvault_script(path: str, own: str | None) -> bool:
    real = os.path.realpath(path)
    if own is not None and real == own:
        return True
    try:
        with open(real, "rb") as f:
            head = f.read(1024)
    except OSError:
        return True  # unreadable: not something we can run anyway
    return head.startswith(b"#!") and _MARKER in head


def find_system_mv(path_env: str | None = None, own_script: str | None = None) -> str | None:
    """The first executable ``mv`` on ``PATH`` that is not a modelvault script, else /bin/mv."""
    own = os.path.realpath(own_script) if own_script else None
    search = os.environ.get("PATH", os.defpath) if path_env is None else path_env
    for folder in search.split(os.pathsep):
        candidate = os.path.join(folder or ".", "mv")
        if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
            continue
        if not _is_modelvault_script(candidate, own):
            return candidate
    fallback = FALLBACK
    if os.access(fallback, os.X_OK) and not _is_modelvault_script(fallback, own):
        return fallback
    return None


def run_system_mv(args: Sequence[str]) -> int:
    """Replace this process with the system ``mv`` given ``args``; 127 if there is none."""
    target = find_system_mv(own_script=sys.argv[0] if sys.argv and sys.argv[0] else None)
    if target is None:
        sys.stderr.write("mv: no system mv found on PATH (nor /bin/mv) to move files with\n")
        return 127
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(target, ["mv", *args])
    except OSError as exc:
        sys.stderr.write(f"mv: cannot run the system mv at {target}: {exc.strerror}\n")
        return 126
    return 0  # not reached: execv does not return
