"""Write tests/golden/archive-v<N>*.bentomodel: archives of format N, committed, never rewritten.

Run once when an archive format version is introduced (``python
tests/golden/make_archive_golden.py``): it writes the files of the version the code
writes now and refuses to replace files that exist. tests/unit/test_archive.py imports
them with every later version. ``golden_files(version, archive)`` regenerates the
expected file contents.

- ``archive-v<N>.bentomodel``: a full archive of ``golden:v1`` (format 1),
  ``golden2:v1`` (format 2) or ``golden3:v1`` (format 3).
- ``archive-v<N>-thin.bentomodel``: ``golden:v2`` / ``golden2:v2`` / ``golden3:v2`` (10% of
  the weights changed), thin against v1.
- ``archive-v<N>.json``: tag and model id of each, for the test to compare.

Models of format 2 and later also hold ``weights.f32``, float32 values shaped like trained weights,
so that their archives carry byte-planes records (codec 2).
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
# model name of each archive format's golden files
NAMES = {1: "golden", 2: "golden2", 3: "golden3"}


def _lcg(seed: int, count: int) -> list[int]:
    """A linear congruential stream of 15-bit values: reproducible on every platform."""
    out = []
    x = seed
    for _ in range(count):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(x >> 16)
    return out


def float_weights(count: int, seed: int) -> bytes:
    """``count`` float32 values like trained weights (small, mostly within a few powers of
    two of 0.02), built from integers only so the bytes never depend on a math library."""
    r = _lcg(seed, 3 * count)
    values = []
    for i in range(count):
        a, b, c = r[3 * i : 3 * i + 3]
        exponent = 121 - (a & 7 == 0) - (a & 3 == 0) - (a & 1 == 0) + (b & 15 == 0)
        mantissa = (b >> 4 << 12 | c) & 0x7FFFFF
        values.append((a >> 14) << 31 | exponent << 23 | mantissa)
    return struct.pack(f"<{count}I", *values)


def golden_files(version: int, archive: int = 1) -> dict[str, bytes]:
    """The exact files of model ``<name>:v<version>`` of archive format ``archive``
    (deterministic)."""
    noise = bytearray()
    for x in _lcg(777, 150_000):  # incompressible-ish, reproducible
        noise += x.to_bytes(2, "little")
    if version == 2:
        noise[100_000:130_000] = bytes(range(256)) * 117 + bytes(48)
    files = {
        "config.json": b'{"hidden_size": 64, "version": %d}\n' % version,
        "weights.bin": bytes(noise),
        "tokenizer/vocab.txt": b"".join(b"token%d\n" % i for i in range(5_000)),
        "tokenizer/empty": b"",
        "run.sh": b"#!/bin/sh\necho hi\n",
    }
    if archive >= 2:
        floats = bytearray(float_weights(100_000, 2024))
        if version == 2:
            floats[160_000:200_000] = float_weights(10_000, 99)
        files["weights.f32"] = bytes(floats)
    return files


def main() -> None:
    sys.path.insert(0, str(HERE.parent.parent))
    import modelvault
    from modelvault import archive

    fmt = archive.VERSION
    name = NAMES[fmt]
    targets = [HERE / f"archive-v{fmt}{s}" for s in (".bentomodel", "-thin.bentomodel", ".json")]
    if any(t.exists() for t in targets):
        sys.exit(f"golden archives of format {fmt} exist already: they are never rewritten")
    with tempfile.TemporaryDirectory() as tmp:
        store = modelvault.Store(Path(tmp) / "store")
        ids = {}
        for version in (1, 2):
            src = Path(tmp) / f"v{version}"
            for rel, data in golden_files(version, fmt).items():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_bytes(data)
            (src / "run.sh").chmod(0o755)
            model = store.save(
                src,
                f"{name}:v{version}",
                labels={"stage": "golden"},
                metadata={"acc": 0.5, "shape": [2, 3]},
                signatures={"predict": {"batchable": True, "batch_dim": 0}},
                module="golden",
                context={"framework_name": "none", "modelvault_version": "0.1.0"},
            )
            ids[f"{name}:v{version}"] = model.id
        full = store.export_model(f"{name}:v1", str(Path(tmp) / "full.bentomodel"))
        thin = store.export_model(
            f"{name}:v2", str(Path(tmp) / "thin.bentomodel"), base=f"{name}:v1"
        )
        shutil.copyfile(full, targets[0])
        shutil.copyfile(thin, targets[1])
    targets[2].write_text(json.dumps(ids, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
