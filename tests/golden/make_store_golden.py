"""Write tests/golden/store-v1 (format 1) or, with argument ``v3``, tests/golden/store-v3
(format 3): small stores committed and never rewritten.

Run once when a format version is introduced; the test reads it with every later
version. ``golden_files()`` regenerates the expected file contents. store-v3 holds the
models of store-v1, eight small ones (``small:v1`` .. ``v8``, so its pack indexes were
merged into a multi-pack index) and the alias ``golden@prod`` naming ``golden:v1``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).parent
TARGET = HERE / "store-v1"
TARGET_V3 = HERE / "store-v3"
SMALL = 8  # small models in store-v3: as many packs as a commit merges (odb.packs.MERGE_AT)


def small_files(i: int) -> dict[str, bytes]:
    """The files of ``small:v<i>`` in store-v3."""
    return {"w.bin": b"small model %d\n" % i * 200}


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

    target = TARGET_V3 if sys.argv[1:] == ["v3"] else TARGET
    src = HERE / "_src"
    shutil.rmtree(src, ignore_errors=True)
    for rel, data in golden_files().items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "run.sh").chmod(0o755)
    shutil.rmtree(target, ignore_errors=True)
    store = modelvault.Store(target)
    store.save(src, "golden:v1", labels={"k": "v"}, metadata={"acc": 0.5})
    store.save(src / "config.json", "golden:v2")
    shutil.rmtree(src)
    if target == TARGET_V3:
        for i in range(1, SMALL + 1):
            folder = HERE / "_src" / f"small{i}"
            for rel, data in small_files(i).items():
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_bytes(data)
            store.save(folder, f"small:v{i}")
        shutil.rmtree(HERE / "_src")
        store.set_alias("golden:v1", "prod")
        assert list((target / "objects" / "packs").glob("multi-*.midx")), "no index merged"
    for sub in ("cache", "tmp", "objects/tmp", "locks"):
        for p in (target / sub).iterdir():
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
    for p in target.rglob("*"):
        if p.is_file():
            p.chmod(0o644)


if __name__ == "__main__":
    main()
