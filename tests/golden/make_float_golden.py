"""Write tests/golden/store-float-v3: a small store whose weight chunks are stored with the
float codec (codec 3, docs/format.md section 2) in its Huffman-planes sub-format 2
(the exponent coded with K mantissa bits), committed and never rewritten.

Run once per form of the codec (``python tests/golden/make_float_golden.py v3``);
tests/unit/test_golden_float.py reads each with every later version and checks every file
byte for byte against the SHA-256 digests written to ``store-float-<version>.json``.
``store-float-v1`` (zstd planes) and ``store-float-v2`` (Huffman planes, sub-format 1)
were written by this script before; today's writer cannot write them again, so only
``v3`` is accepted.

The files are safetensors of fp32, bf16 and fp16 weights drawn like trained weights,
with the awkward values mixed in (NaNs with payloads, infinities, -0.0, denormals), one
file holding two dtypes (so its chunks are probed, not hinted), and an fp32 file without
the .safetensors suffix whose length is not a multiple of 4.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

HERE = Path(__file__).parent
VERSION = "v3"
TARGET = HERE / f"store-float-{VERSION}"
EXPECTED = HERE / f"store-float-{VERSION}.json"
TAG = f"float:{VERSION}"


def _safetensors(tensors: dict[str, tuple[str, list[int], bytes]]) -> bytes:
    header: dict[str, object] = {}
    parts: list[bytes] = []
    at = 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + len(data)]}
        parts.append(data)
        at += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(parts)


def golden_files() -> dict[str, bytes]:
    import numpy as np

    rng = np.random.default_rng(20261205)
    f32 = rng.normal(0, 0.03, 32 * 1024).astype("<f4")
    special = np.array(
        [np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -1e-45, 1e-40, 3.4e38],
        dtype="<f4",
    )
    f32[::997][: len(special)] = special
    bits = f32.view("<u4").copy()
    bits[5000] = 0x7FC01234  # a NaN with a payload
    f32 = bits.view("<f4")
    bf16 = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    bf16[::1009][:4] = [0x7FC1, 0xFF80, 0x8000, 0x0001]  # NaN, -inf, -0.0, a denormal
    with np.errstate(over="ignore"):  # 3.4e38 becomes inf in fp16
        f16 = f32.astype("<f2")
    f16.view("<u2")[::1013][:4] = [0x7E01, 0xFC00, 0x8000, 0x0001]
    i64 = np.arange(512, dtype="<i8")
    return {
        "f32.safetensors": _safetensors(
            {"w": ("F32", [32, 1024], f32.tobytes()), "pos": ("I64", [512], i64.tobytes())}
        ),
        "bf16.safetensors": _safetensors({"w": ("BF16", [32, 1024], bf16.tobytes())}),
        "f16.safetensors": _safetensors({"w": ("F16", [32, 1024], f16.tobytes())}),
        "mixed.safetensors": _safetensors(
            {
                "a": ("F32", [16 * 1024], f32[: 16 * 1024].tobytes()),
                "b": ("BF16", [24 * 1024], bf16[: 24 * 1024].tobytes()),
            }
        ),
        "raw-f32.bin": b"\x01\x02\x03" + f32[: 20 * 1024].tobytes() + b"\x04\x05",
    }


def main() -> None:
    if sys.argv[1:] != [VERSION]:
        raise SystemExit(
            f"usage: make_float_golden.py {VERSION} (v1 and v2 were written once, before)"
        )
    sys.path.insert(0, str(HERE.parent.parent))
    import modelvault
    from modelvault.core import codec

    codec.FLOAT_WRITE = True  # off by default

    files = golden_files()
    src = HERE / "_src_float"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    shutil.rmtree(TARGET, ignore_errors=True)
    store = modelvault.Store(TARGET)
    model = store.save(src, TAG)
    shutil.rmtree(src)
    for sub in ("cache", "tmp", "objects/tmp"):
        if (TARGET / sub).exists():
            for p in (TARGET / sub).iterdir():
                shutil.rmtree(p)
    for p in TARGET.rglob("*"):
        if p.is_file():
            p.chmod(0o644)
    expected = {
        "tag": TAG,
        "model_id": model.id,
        "files": {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()},
        "sizes": {rel: len(data) for rel, data in files.items()},
    }
    EXPECTED.write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
