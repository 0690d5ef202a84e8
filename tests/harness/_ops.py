"""The writing operations the fault-injection harness kills, and a fork server to run them.

Each operation of :data:`OPS` runs the real public API on a store (nothing in modelvault
knows about the harness). Two ways to run one in another process:

- ``python _ops.py once OP STORE ARGS_JSON``: one process, one operation (used under
  ``strace`` to inject faults at the Nth rename/link/unlink/fsync). Exit 0 done, 4 a
  ModelVaultError, 5 an OSError (message on stderr), 6 anything else. A child that
  dies of a fatal signal (SIGSEGV, SIGBUS, SIGABRT) writes every thread's stack to its
  stderr first (``faulthandler``), which the harness's failure message shows.
- :class:`ForkServer`: one long-lived process that has imported modelvault and forks a
  fresh child per operation, so a sweep of hundreds of kill -9 points pays the import
  once. The child is a real process that dies by a real SIGKILL; it forks from a
  single-threaded parent and starts every thread of its own.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any

import modelvault
from modelvault import Store

OPS = (
    "save",
    "create",
    "import",
    "export",
    "push",
    "pull",
    "gc",
    "delete",
    "path",
    "checkout",
)


def run_op(op: str, store_path: str, args: dict[str, Any]) -> None:
    """Run one writing operation in this process (what the killed children do)."""
    store = Store(store_path)
    if op == "save":
        store.save(args["src"], args["tag"])
    elif op == "create":
        with store.create(args["tag"]) as ref:
            shutil.copytree(args["src"], ref.path, dirs_exist_ok=True)
    elif op == "import":
        store.import_model(args["archive"])
    elif op == "export":
        store.export_model(args["tag"], args["dest"])
    elif op == "push":
        store.push(args["tag"], args["remote"])
    elif op == "pull":
        store.pull(args["tag"], args["remote"])
    elif op == "gc":
        store.gc()
    elif op == "delete":
        store.delete(args["tag"])
    elif op == "path":
        _ = store.get(args["tag"]).path
    elif op == "checkout":
        store.checkout(args["tag"], args["dest"])
    else:
        raise ValueError(f"unknown operation {op!r}")


def _exit_code(op: str, store_path: str, args: dict[str, Any]) -> int:
    try:
        run_op(op, store_path, args)
    except modelvault.ModelVaultError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 4
    except OSError:
        traceback.print_exc()
        return 5
    except BaseException:
        traceback.print_exc()
        return 6
    return 0


def serve(stdin: IO[str], stdout: IO[str]) -> None:
    """Fork server loop: a JSON line ``[op, store, args]`` in; ``pid N`` then
    ``status S`` (the raw ``waitpid`` status) out."""
    print("ready", file=stdout, flush=True)
    for line in stdin:
        op, store_path, args = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child: run, then leave without running the parent's cleanup
            code = 6
            try:
                code = _exit_code(op, store_path, args)
            finally:
                sys.stderr.flush()
                os._exit(code)
        print(f"pid {pid}", file=stdout, flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"status {status}", file=stdout, flush=True)


class ForkServer:
    """Parent side of :func:`serve`: runs operations in children, killing them on demand."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self._err = open(log, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
        )
        self._expect("ready")

    def _expect(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(prefix):
            raise AssertionError(f"fork server: expected {prefix!r}, got {line!r}")
        return line[len(prefix) :].strip()

    def run(
        self, op: str, store: Path, args: dict[str, Any], kill_after: float | None = None
    ) -> tuple[int | None, int | None, float]:
        """Run ``op``; with ``kill_after``, SIGKILL the child that many seconds after it
        started. Returns ``(exit code or None, signal or None, seconds it ran)``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps([op, str(store), args]) + "\n")
        self.proc.stdin.flush()
        pid = int(self._expect("pid "))
        start = time.perf_counter()
        if kill_after is not None:
            # a pidfd names this very process: the pid cannot be reused while we sleep
            with contextlib.suppress(ProcessLookupError):
                pidfd = os.pidfd_open(pid)
                try:
                    time.sleep(max(0.0, kill_after - (time.perf_counter() - start)))
                    # a zombie (finished, not yet reaped) or a reaped child ignores it
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                finally:
                    os.close(pidfd)
        status = int(self._expect("status "))
        elapsed = time.perf_counter() - start
        if os.WIFSIGNALED(status):
            return None, os.WTERMSIG(status), elapsed
        return os.WEXITSTATUS(status), None, elapsed

    def errors(self) -> str:
        """What the children wrote on stderr so far."""
        self._err.flush()
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self._err.close()


def main(argv: list[str]) -> int:
    faulthandler.enable()  # (SIGKILL, the harness's own kill, runs no handler)
    if argv[:1] == ["serve"]:
        serve(sys.stdin, sys.stdout)
        return 0
    if argv[:1] == ["once"] and len(argv) == 4:
        return _exit_code(argv[1], argv[2], json.loads(argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
