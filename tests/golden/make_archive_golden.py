"""Write tests/golden/archive-v1*.bentomodel: archives of format 1, committed, never rewritten.

Run once when an archive format version is introduced (``python
tests/golden/make_archive_golden.py``); tests/unit/test_archive.py imports them with
every later version. ``golden_files(version)`` regenerates the expected file contents.

- ``archive-v1.bentomodel``: ``golden:v1``, a full archive.
- ``archive-v1-thin.bentomodel``: ``golden:v2`` (10% of the weights changed), thin
  against ``golden:v1``.
- ``archive-v1.json``: tag and model id of each, for the test to compare.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent


def golden_files(version: int) -> dict[str, bytes]:
    """The exact files of ``golden:v<version>`` (deterministic)."""
    noise = bytearray()
    x = 777
    for _ in range(150_000):  # a linear congruential stream: incompressible-ish, reproducible
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        noise += (x >> 16).to_bytes(2, "little")
    if version == 2:
        noise[100_000:130_000] = bytes(range(256)) * 117 + bytes(48)
    return {
        "config.json": b'{"hidden_size": 64, "version": %d}\n' % version,
        "weights.bin": bytes(noise),
        "tokenizer/vocab.txt": b"".join(b"token%d\n" % i for i in range(5_000)),
        "tokenizer/empty": b"",
        "run.sh": b"#!/bin/sh\necho hi\n",
    }


def main() -> None:
    sys.path.insert(0, str(HERE.parent.parent))
    import modelvault

    with tempfile.TemporaryDirectory() as tmp:
        store = modelvault.Store(Path(tmp) / "store")
        ids = {}
        for version in (1, 2):
            src = Path(tmp) / f"v{version}"
            for rel, data in golden_files(version).items():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_bytes(data)
            (src / "run.sh").chmod(0o755)
            model = store.save(
                src,
                f"golden:v{version}",
                labels={"stage": "golden"},
                metadata={"acc": 0.5, "shape": [2, 3]},
                signatures={"predict": {"batchable": True, "batch_dim": 0}},
                module="golden",
                context={"framework_name": "none", "modelvault_version": "0.1.0"},
            )
            ids[f"golden:v{version}"] = model.id
        full = store.export_model("golden:v1", str(Path(tmp) / "full.bentomodel"))
        thin = store.export_model("golden:v2", str(Path(tmp) / "thin.bentomodel"), base="golden:v1")
        shutil.copyfile(full, HERE / "archive-v1.bentomodel")
        shutil.copyfile(thin, HERE / "archive-v1-thin.bentomodel")
    (HERE / "archive-v1.json").write_text(json.dumps(ids, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
