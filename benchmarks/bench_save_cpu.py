"""CPU seconds and stored bytes of saving real weights, by float codec setting (issue 21):
should the float codec be on by default for hinted bf16 / fp16 / fp32 files?

CPU time (``resource.getrusage`` of the saving process, all its threads, around
``Store.save`` only) is robust on a shared machine where wall time is not. For each dtype
(``bf16``, ``fp16``, ``fp32``) one ``model.safetensors`` of ``--size-mib`` is written once into the
workdir (``workload.generate_bf16_family``'s tensors: MiniLM tiled, each copy shuffled,
its safetensors header naming the dtype, so a save passes the hint to the codec); then
each setting of ``MODELVAULT_FLOAT_CODEC`` (``--modes``; ``unset`` = not in the
environment) saves it into an empty store in a fresh child process, ``--runs`` times,
alternating the order. Needs the MiniLM weights as ``bench_store.py --workload bf16``::

    .venv/bin/python benchmarks/bench_save_cpu.py --size-mib 256 --runs 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import (
    WEIGHTS_FILE,
    bf16_layout,
    find_minilm_zip,
    minilm_bf16_tensors,
    write_bf16_file,
)

ROOT = Path(__file__).resolve().parent.parent
SAFETENSORS_DTYPE = {"bf16": "BF16", "fp16": "F16", "fp32": "F32"}

_CHILD = r"""
import resource, sys, time
import modelvault
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
store = modelvault.Store(sys.argv[1])
c, t = cpu(), time.perf_counter()
store.save(sys.argv[2], "m:v0")
print(cpu() - c, time.perf_counter() - t, store.stats().stored_bytes)
"""


def write_input(folder: Path, kind: str, size_mib: int, zip_path: Path | None) -> Path:
    """``folder/model.safetensors`` of ``kind`` weights; reused when it exists."""
    path = folder / WEIGHTS_FILE
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tensors = minilm_bf16_tensors(find_minilm_zip(zip_path), kind)
        specs = bf16_layout(tensors, size_mib)
        meta = {"format": "pt"}
        tmp = path.with_suffix(".tmp")
        write_bf16_file(tmp, tensors, specs, [0] * len(specs), meta, 0, SAFETENSORS_DTYPE[kind])
        tmp.rename(path)
    return path


def save_once(workdir: Path, folder: Path, mode: str) -> tuple[float, float, int]:
    """(save CPU s, save wall s, stored bytes) of one save into an empty store."""
    store = workdir / "store"
    shutil.rmtree(store, ignore_errors=True)
    env = dict(os.environ, MODELVAULT_HOME=str(workdir / "home"))
    env.pop("MODELVAULT_FLOAT_CODEC", None)
    if mode != "unset":
        env["MODELVAULT_FLOAT_CODEC"] = mode
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(store), str(folder)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    shutil.rmtree(store, ignore_errors=True)
    return float(out[0]), float(out[1]), int(out[2])


def main(argv: list[str] | None = None) -> None:
    """Run the measurement; print a markdown table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--dtypes", default="bf16,fp16", help="comma-separated: bf16, fp16, fp32")
    p.add_argument("--modes", default="unset,1", help="MODELVAULT_FLOAT_CODEC values")
    p.add_argument("--workdir", type=Path, help="kept, and its input files reused")
    p.add_argument("--minilm-zip", type=Path)
    args = p.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="modelvault-cpu-"))
    modes = args.modes.split(",")
    rows = []
    try:
        for kind in args.dtypes.split(","):
            folder = workdir / f"{kind}-{args.size_mib}"
            raw = write_input(folder, kind, args.size_mib, args.minilm_zip).stat().st_size
            samples: dict[str, list[tuple[float, float, int]]] = {m: [] for m in modes}
            for run in range(args.runs):
                for mode in modes if run % 2 == 0 else modes[::-1]:
                    samples[mode].append(save_once(workdir, folder, mode))
                print(f"[{time.strftime('%H:%M:%S')}] {kind} run {run}", file=sys.stderr)
            for mode, got in samples.items():
                cpu = [s[0] for s in got]
                rows.append(
                    f"| {kind} | {mode} | {statistics.median(cpu):.3f} | "
                    f"{min(cpu):.3f}-{max(cpu):.3f} | {statistics.median(s[1] for s in got):.3f} | "
                    f"{got[0][2]} | {got[0][2] / raw:.3f} |"
                )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"saving {args.size_mib} MiB, median of {args.runs} runs, {os.cpu_count()} CPUs\n")
    print("| dtype | MODELVAULT_FLOAT_CODEC | save CPU s | range | wall s | stored B | of raw |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
