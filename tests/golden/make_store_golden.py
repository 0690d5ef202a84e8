"""Write tests/golden/store-v1: a small store of format 1, committed and never rewritten.

Run once when a format version is introduced; the test reads it with every later
version. ``golden_files()`` regenerates the expected file contents.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).parent
TARGET = HERE / "store-v1"


def golden_files() -> dict[str, bytes]:
    """The exact files of model ``golden:v1`` (deterministic)."""
    noise = bytearray()
    x = 12345
    for _ in range(300_000):  # a linear congruential stream: incompressible-ish, reproducible
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        noise += (x >> 16).to_bytes(2, "little")
    return {
        "config.json": b'{"hidden_size": 64, "layers": 2}\n',
        "weights.bin": bytes(noise),
        "tokenizer/vocab.txt": b"".join(b"token%d\n" % i for i in range(20_000)),
        "tokenizer/empty": b"",
        "run.sh": b"#!/bin/sh\necho hi\n",
    }


def main() -> None:
    sys.path.insert(0, str(HERE.parent.parent))
    import modelvault

    src = HERE / "_src"
    shutil.rmtree(src, ignore_errors=True)
    for rel, data in golden_files().items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "run.sh").chmod(0o755)
    shutil.rmtree(TARGET, ignore_errors=True)
    store = modelvault.Store(TARGET)
    store.save(src, "golden:v1", labels={"k": "v"}, metadata={"acc": 0.5})
    store.save(src / "config.json", "golden:v2")
    shutil.rmtree(src)
    for sub in ("cache", "tmp", "objects/tmp"):
        for p in (TARGET / sub).iterdir():
            shutil.rmtree(p)
    for p in TARGET.rglob("*"):
        if p.is_file():
            p.chmod(0o644)


if __name__ == "__main__":
    main()
