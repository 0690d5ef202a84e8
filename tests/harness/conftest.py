"""Fixtures of the fault-injection harness; it reuses the crash tests' helpers
(tests/integration/_procs.py and test_crash.py), so that folder goes on ``sys.path``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_INTEGRATION = str(Path(__file__).resolve().parents[1] / "integration")
if _INTEGRATION not in sys.path:
    sys.path.append(_INTEGRATION)

from _figures import FIGURES  # noqa: E402


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Sources, template stores, a file:// remote and an archive, built once."""
    from _world import build_world

    return build_world(tmp_path_factory.mktemp("harness-world"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("fault-injection harness figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
