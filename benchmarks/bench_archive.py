"""Archive benchmark (issue 3): ``.bentomodel`` export/import against tar + zstd, same run.

Workload (``workload.py``): the 1 GiB model family of the store benchmark, base ``v0`` and
``v1`` (~10% of the tensor bytes replaced, every offset shifted). Both are saved into one
store first (untimed). Then, per run, each step in a fresh process next to its baseline:

- ``export``: ``Store(p).export_model("bench:v0", FILE)`` (written, fsync'd, renamed)
  vs ``tar -c -C v0 . | zstd -1 -T0 > F``                       target <= 1.0x, size <= F
- ``import``: ``Store(new).import_model(FILE)`` (every id and the checksum verified,
  durable) vs ``zstd -d < F | tar -x -C DIR``                    target <= 1.0x
- thin archive of ``bench:v1`` against ``bench:v0`` vs the full archive of ``bench:v1``
                                                                 target <= 15%
- peak RSS of the export and import processes                    target < 300 MiB

Timings are medians over ``--runs``; the pair order alternates from run to run. Each side's
input is read into the page cache and pending writes are flushed (``sync``), untimed,
before every step. Neither baseline fsyncs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from baselines import (
    MIB,
    ChildResult,
    can_drop_page_cache,
    drop_tree,
    markdown_table,
    median,
    prepare,
    run_in_child,
)
from bench_store import _import_modelvault, filesystem_of, log, paired
from workload import generate_family

PEAK_LIMIT_MIB = 300.0
THIN_TARGET = 0.15


# --- measured steps (run in child processes) ------------------------------------------


def save_in_child(root: str, folder: str, tag: str) -> None:
    """Save one model folder (setup, untimed)."""
    _import_modelvault().Store(root).save(folder, tag)


def export_in_child(root: str, tag: str, dest: str, base: str | None) -> tuple[float, float]:
    """Seconds (wall, CPU) to export ``tag`` from a freshly opened store."""
    store_cls = _import_modelvault().Store
    start, cpu = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    store_cls(root).export_model(tag, dest, base=base)
    return time.perf_counter() - start, _cpu(resource.RUSAGE_SELF) - cpu


def import_in_child(root: str, src: str) -> tuple[float, float]:
    """Seconds (wall, CPU) to import ``src`` into a freshly opened (new) store."""
    store_cls = _import_modelvault().Store
    start, cpu = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    store_cls(root).import_model(src)
    return time.perf_counter() - start, _cpu(resource.RUSAGE_SELF) - cpu


def _cpu(who: int) -> float:
    """User + system CPU seconds of this process (every thread) or of its waited children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


# --- baselines --------------------------------------------------------------------------


def shell_seconds(command: str) -> tuple[float, float]:
    """Seconds (wall, CPU of every process of it) a bash pipeline takes (``pipefail``: any
    stage failing is an error)."""
    start, cpu = time.perf_counter(), _cpu(resource.RUSAGE_CHILDREN)
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True)
    return time.perf_counter() - start, _cpu(resource.RUSAGE_CHILDREN) - cpu


def tar_zstd(folder: Path, out: Path) -> tuple[float, float]:
    drop_tree(out)
    _ready(folder)
    return shell_seconds(f"tar -c -C '{folder}' . | zstd -1 -T0 -q > '{out}'")


def untar_zstd(archive: Path, dest: Path) -> tuple[float, float]:
    drop_tree(dest)
    dest.mkdir()
    _ready(archive)
    return shell_seconds(f"zstd -d -q < '{archive}' | tar -x -C '{dest}'")


# --- the benchmark ----------------------------------------------------------------------


def run(work: Path, size_mib: int, runs: int) -> dict[str, Any]:
    family = work / "workload"
    generate_family(family, size_mib, 2, 0, log=log)
    store = work / "store"
    if not (store / "refs" / "bench" / "v1").exists():
        drop_tree(store)
        for version in ("v0", "v1"):
            log(f"saving bench:{version} (setup)")
            in_child(
                str(family / version),
                save_in_child,
                str(store),
                str(family / version),
                f"bench:{version}",
            )
    archive, baseline = work / "v0.bentomodel", work / "v0.tar.zst"
    steps = ("export", "tar", "import", "untar")
    samples: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    load = [os.getloadavg()[0]]
    peaks: dict[str, float] = {"export": 0.0, "import": 0.0}
    anon: dict[str, float] = {"export": 0.0, "import": 0.0}
    for turn in range(runs):
        log(f"run {turn + 1}/{runs}: export")
        drop_tree(archive)
        base_s, res = paired(
            turn,
            lambda: tar_zstd(family / "v0", baseline),
            lambda: in_child(
                str(store), export_in_child, str(store), "bench:v0", str(archive), None
            ),
        )
        _record(samples, cpu, "tar", base_s)
        _record(samples, cpu, "export", res.value)
        peaks["export"] = max(peaks["export"], res.peak_rss_mib)
        anon["export"] = max(anon["export"], res.peak_anon_mib)
        log(f"run {turn + 1}/{runs}: import")
        drop_tree(work / "imported")
        base_s, res = paired(
            turn + 1,
            lambda: untar_zstd(baseline, work / "untarred"),
            lambda: in_child(str(archive), import_in_child, str(work / "imported"), str(archive)),
        )
        _record(samples, cpu, "untar", base_s)
        _record(samples, cpu, "import", res.value)
        load.append(os.getloadavg()[0])
        peaks["import"] = max(peaks["import"], res.peak_rss_mib)
        anon["import"] = max(anon["import"], res.peak_anon_mib)
    full_v1, thin_v1 = work / "v1.bentomodel", work / "v1-thin.bentomodel"
    for dest, base in ((full_v1, None), (thin_v1, "bench:v0")):
        drop_tree(dest)
        in_child(str(store), export_in_child, str(store), "bench:v1", str(dest), base)
    return {
        "size_mib": size_mib,
        "runs": runs,
        "filesystem": filesystem_of(work),
        "samples": samples,
        "medians": {k: median(v) for k, v in samples.items()},
        "cpu_samples": cpu,
        "cpu_medians": {k: median(v) for k, v in cpu.items()},
        "load_1min": load,
        "bytes": {
            "archive": archive.stat().st_size,
            "tar_zstd": baseline.stat().st_size,
            "v1_full": full_v1.stat().st_size,
            "v1_thin": thin_v1.stat().st_size,
        },
        "peak_rss_mib": peaks,
        "peak_anon_mib": anon,
    }


def in_child(warm: str, fn: Callable[..., Any], *args: Any) -> ChildResult[Any]:
    """Untimed: read ``warm`` into the page cache, flush pending writes; then run ``fn``
    in a fresh process."""
    _ready(Path(warm))
    return run_in_child(fn, *args)


def _record(
    samples: dict[str, list[float]],
    cpu: dict[str, list[float]],
    step: str,
    got: tuple[float, float],
) -> None:
    samples[step].append(got[0])
    cpu[step].append(got[1])


def _ready(source: Path) -> None:
    """Untimed, before every step (baselines too): flush pending writes, empty the page
    cache where permitted and read ``source`` into it (``baselines.prepare``), so neither
    side pays for the other's reads, dirty pages or cache reclaim."""
    prepare(source)


def report(r: dict[str, Any]) -> tuple[str, bool]:
    m, b, c = r["medians"], r["bytes"], r["cpu_medians"]
    export_ratio, import_ratio = m["export"] / m["tar"], m["import"] / m["untar"]
    size_ratio, thin_ratio = b["archive"] / b["tar_zstd"], b["v1_thin"] / b["v1_full"]
    peak = max(r["peak_rss_mib"].values())
    checks = [
        ("export time", f"{m['export']:.2f} s (CPU {c['export']:.2f} s)",
         f"{m['tar']:.2f} s (CPU {c['tar']:.2f} s; tar | zstd -1 -T0)",
         f"{export_ratio:.2f}x", "<= 1.0x", export_ratio <= 1.0),
        ("export size", f"{b['archive'] / MIB:.1f} MiB", f"{b['tar_zstd'] / MIB:.1f} MiB",
         f"{size_ratio:.3f}x", "<= 1.0x", size_ratio <= 1.0),
        ("import time (verified, durable)", f"{m['import']:.2f} s (CPU {c['import']:.2f} s)",
         f"{m['untar']:.2f} s (CPU {c['untar']:.2f} s; zstd -d | tar -x)",
         f"{import_ratio:.2f}x", "<= 1.0x", import_ratio <= 1.0),
        ("thin archive of v1 (base v0)", f"{b['v1_thin'] / MIB:.1f} MiB",
         f"{b['v1_full'] / MIB:.1f} MiB (full v1)", f"{thin_ratio:.1%}", "<= 15%",
         thin_ratio <= THIN_TARGET),
        ("peak RSS export / import", f"{r['peak_rss_mib']['export']:.0f} / "
         f"{r['peak_rss_mib']['import']:.0f} MiB", f"(anon {r['peak_anon_mib']['export']:.0f} / "
         f"{r['peak_anon_mib']['import']:.0f} MiB)", "", f"< {PEAK_LIMIT_MIB:.0f} MiB",
         peak < PEAK_LIMIT_MIB),
    ]  # fmt: skip
    rows = [[*row[:5], "pass" if row[5] else "**FAIL**"] for row in checks]
    head = ["step", "modelvault", "baseline (same run)", "ratio", "target", "verdict"]
    text = (
        f"Archive benchmark: {r['size_mib']} MiB model, median of {r['runs']} runs, "
        f"workdir on {r['filesystem']}.\n\n{markdown_table(head, rows)}\n\n"
        f"1-minute load average {min(r['load_1min']):.1f} to {max(r['load_1min']):.1f} on "
        f"{os.cpu_count()} CPUs during the runs. CPU is user + system seconds of every thread "
        "(modelvault) or of every process of the pipeline (baseline); on a shared machine it "
        "varies less than the wall time. Page cache emptied before every step: "
        f"{'yes' if can_drop_page_cache() else 'no (not root)'}.\n"
    )
    return text, all(row[5] for row in checks)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workdir", type=Path, help="kept afterwards; its workload is reused")
    p.add_argument("--json", type=Path, help="also write every sample here")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    for tool in ("tar", "zstd"):
        if shutil.which(tool) is None:
            sys.exit(f"the baseline needs `{tool}` on PATH (apt-get install -y {tool})")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mv-bench-archive-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run(work, args.size_mib, args.runs)
    finally:
        if args.workdir is None:
            drop_tree(work)
    text, ok = report(result)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.check and not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
