"""Figures the harness collects (kill points survived, states explored, fault cases),
printed at the end of the pytest run by tests/harness/conftest.py so they can be quoted."""

from __future__ import annotations

FIGURES: list[str] = []


def record(line: str) -> None:
    """Keep one figure line, and print it (visible with ``pytest -s``)."""
    FIGURES.append(line)
    print(f"harness: {line}")
