"""Small helpers the test modules share (``tests/`` is on ``sys.path`` through its conftest)."""

from __future__ import annotations

from pathlib import Path


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (relative path -> bytes, folders made as needed) under ``root``."""
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root
