"""BentoML interop benchmark (issue 20): modelvault beside BentoML itself, same run.

Workload (``workload.py``): the 1 GiB model family of the store benchmark, ``v0`` ..
``v10``. Setup (untimed): REAL BentoML (``.venv-bentoml``; ``make .venv-bentoml/.installed``)
saves every version into its own model store (``bentoml.models.create`` + the files, so
each keeps its BentoML version and creation time) and exports ``v0`` with ``bentoml models
export`` (its default: tar + xz, xz's default preset). Then, per run, each step in a fresh
process next to its baseline:

- ``import``: ``Store(new).import_model(BentoML's .bentomodel)`` (tar members streamed into
  the ingest path, durable) vs ``xz -dc F | tar -x -C DIR`` plus ``Store(new).save(DIR)``
  (the extract-then-save a user would otherwise do)                   target <= 1.0x
- ``export``: ``Store(p).export_model(v0, F, output_format="bentoml")`` vs BentoML's own
  ``bentoml.models.export_model`` of the same model (timed inside BentoML's process, its
  start-up not counted)                                               target <= 0.25x
- ``migration`` (once): ``import_bentoml_store`` of the 11 versions, stored bytes vs
  saving the same 11 folders natively into a fresh store            target <= 1.05x

Timings are medians over ``--runs``; BentoML's export (about 10 min per GiB) is sampled
``--export-runs`` times, its setup export of ``v0`` timed as the first sample; the pair
order alternates from run to run; inputs are read into the page cache and pending writes
flushed before every step (``baselines.prepare``). The baselines do not fsync;
modelvault's steps do.
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

from baselines import MIB, ChildResult, drop_tree, markdown_table, median, prepare, run_in_child
from bench_store import _import_modelvault, filesystem_of, log, paired
from workload import generate_family

ROOT = Path(__file__).resolve().parents[1]
BENTOML_PYTHON = ROOT / ".venv-bentoml" / "bin" / "python"
IMPORT_TARGET, EXPORT_TARGET, MIGRATION_TARGET = 1.0, 0.25, 1.05

# Run by BentoML's Python. argv: command, then its arguments. Prints one JSON line.
BENTOML_SCRIPT = r"""
import json, os, shutil, sys, time
import bentoml
command = sys.argv[1]
if command == "save":  # save each folder as a new version of "bench", oldest first
    tags = []
    for folder in sys.argv[2:]:
        with bentoml.models.create("bench", labels={"from": os.path.basename(folder)}) as m:
            shutil.copytree(folder, m.path, dirs_exist_ok=True)
        tags.append(str(m.tag))
    print(json.dumps(tags))
elif command == "export":  # tag, dest: seconds of the export alone
    start = time.perf_counter()
    bentoml.models.export_model(sys.argv[2], sys.argv[3])
    print(json.dumps(time.perf_counter() - start))
"""


def bentoml(home: Path, *args: str) -> Any:
    """Run BENTOML_SCRIPT in BentoML's virtualenv with ``$BENTOML_HOME`` = ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="True")
    done = subprocess.run(
        [str(BENTOML_PYTHON), "-W", "ignore", "-c", BENTOML_SCRIPT, *args],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"BentoML failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- measured steps (run in child processes) ------------------------------------------


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def import_in_child(root: str, src: str) -> tuple[float, float]:
    """Seconds (wall, CPU) to import BentoML's archive into a new store."""
    store_cls = _import_modelvault().Store
    start, cpu = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    store_cls(root).import_model(src)
    return time.perf_counter() - start, _cpu(resource.RUSAGE_SELF) - cpu


def save_in_child(root: str, folder: str, tag: str) -> tuple[float, float]:
    """Seconds (wall, CPU) to save a folder into a store."""
    store_cls = _import_modelvault().Store
    start, cpu = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    store_cls(root).save(folder, tag)
    return time.perf_counter() - start, _cpu(resource.RUSAGE_SELF) - cpu


def export_in_child(root: str, tag: str, dest: str) -> tuple[float, float]:
    """Seconds (wall, CPU) to export ``tag`` for BentoML."""
    store_cls = _import_modelvault().Store
    start, cpu = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    store_cls(root).export_model(tag, dest, output_format="bentoml")
    return time.perf_counter() - start, _cpu(resource.RUSAGE_SELF) - cpu


def migrate_in_child(root: str, models: str) -> int:
    """Import the BentoML store; return the stored bytes."""
    store = _import_modelvault().Store(root)
    store.import_bentoml_store(models)
    return int(store.stats().stored_bytes)


def native_in_child(root: str, folders: list[str]) -> int:
    """Save the folders natively, oldest first; return the stored bytes."""
    store = _import_modelvault().Store(root)
    for i, folder in enumerate(folders):
        store.save(folder, f"bench:v{i}")
    return int(store.stats().stored_bytes)


def in_child(warm: Path, fn: Callable[..., Any], *args: Any) -> ChildResult[Any]:
    prepare(warm)
    return run_in_child(fn, *args)


def untar_and_save(archive: Path, dest: Path, root: Path) -> tuple[float, float]:
    """``xz -dc F | tar -x -C DIR``, then a save of DIR into a new store: wall and CPU."""
    drop_tree(dest)
    drop_tree(root)
    dest.mkdir()
    prepare(archive)
    start, cpu = time.perf_counter(), _cpu(resource.RUSAGE_CHILDREN)
    cmd = f"xz -dc '{archive}' | tar -x -C '{dest}'"
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)
    wall, used = time.perf_counter() - start, _cpu(resource.RUSAGE_CHILDREN) - cpu
    (dest / "model.yaml").unlink()  # what save stores is the model's files
    saved = run_in_child(save_in_child, str(root), str(dest), "bench:untarred").value
    return wall + saved[0], used + saved[1]


# --- the benchmark ----------------------------------------------------------------------


def run(work: Path, size_mib: int, versions: int, runs: int, export_runs: int) -> dict[str, Any]:
    family = work / "workload"
    manifest = generate_family(family, size_mib, versions, 0, log=log)
    folders = [str(family / f) for f in manifest.folders]
    home = work / "bentoml-home"
    drop_tree(home)
    log(f"BentoML saves {len(folders)} versions (setup)")
    tags: list[str] = bentoml(home, "save", *folders)
    theirs = work / "bentoml-v0.bentomodel"
    prepare(home)  # the setup export is timed as BentoML's first export sample
    log("BentoML exports v0 (setup, timed as its first export)")
    first = float(bentoml(home, "export", tags[0], str(theirs)))
    samples: dict[str, list[tuple[float, float]]] = {
        k: [] for k in ("import", "untar_save", "export", "bentoml_export")
    }
    samples["bentoml_export"].append((first, 0.0))
    ours = work / "ours-v0.bentomodel"
    imported = work / "imported"
    for turn in range(runs):
        log(f"run {turn + 1}/{runs}: import")
        drop_tree(imported)
        base, res = paired(
            turn,
            lambda: untar_and_save(theirs, work / "untarred", work / "untar-store"),
            lambda: in_child(theirs, import_in_child, str(imported), str(theirs)),
        )
        samples["untar_save"].append(base)
        samples["import"].append(res.value)
        log(f"run {turn + 1}/{runs}: export")
        drop_tree(ours)
        again = work / "bentoml-again.bentomodel"
        drop_tree(again)

        def theirs_export(dest: Path = again) -> tuple[float, float]:
            prepare(home)  # (CPU is not measured in BentoML's process: 0)
            return float(bentoml(home, "export", tags[0], str(dest))), 0.0

        if len(samples["bentoml_export"]) < export_runs:
            base, res = paired(
                turn + 1,
                theirs_export,
                lambda: in_child(imported, export_in_child, str(imported), tags[0], str(ours)),
            )
            samples["bentoml_export"].append(base)
        else:  # BentoML's export takes ~10 min per GiB: --export-runs caps its samples
            drop_tree(ours)
            res = in_child(imported, export_in_child, str(imported), tags[0], str(ours))
        samples["export"].append(res.value)
    log("migration: the BentoML store, and the same folders saved natively")
    migrated = in_child(home, migrate_in_child, str(work / "migrated"), str(home / "models"))
    native = in_child(family, native_in_child, str(work / "native"), folders)
    return {
        "size_mib": size_mib,
        "versions": versions,
        "runs": runs,
        "export_runs": len(samples["bentoml_export"]),
        "filesystem": filesystem_of(work),
        "samples": samples,
        "medians": {k: median([w for w, _ in v]) for k, v in samples.items()},
        "cpu_medians": {k: median([c for _, c in v]) for k, v in samples.items()},
        "bytes": {
            "bentoml_archive": theirs.stat().st_size,
            "our_archive": ours.stat().st_size,
            "migrated_stored": migrated.value,
            "native_stored": native.value,
            "logical": sum(manifest.folder_bytes),
        },
    }


def report(r: dict[str, Any]) -> tuple[str, bool]:
    m, c, b = r["medians"], r["cpu_medians"], r["bytes"]
    imp, exp = m["import"] / m["untar_save"], m["export"] / m["bentoml_export"]
    mig = b["migrated_stored"] / b["native_stored"]
    checks = [
        ("import BentoML's .bentomodel", f"{m['import']:.2f} s (CPU {c['import']:.2f} s)",
         f"{m['untar_save']:.2f} s (xz -dc, tar -x, then save)", f"{imp:.2f}x",
         f"<= {IMPORT_TARGET}x", imp <= IMPORT_TARGET),
        ("export for BentoML", f"{m['export']:.2f} s (CPU {c['export']:.2f} s), "
         f"{b['our_archive'] / MIB:.1f} MiB", f"{m['bentoml_export']:.2f} s "
         f"(bentoml export), {b['bentoml_archive'] / MIB:.1f} MiB", f"{exp:.2f}x",
         f"<= {EXPORT_TARGET}x", exp <= EXPORT_TARGET),
        (f"migrate {r['versions']} versions: stored bytes", f"{b['migrated_stored'] / MIB:.1f} MiB",
         f"{b['native_stored'] / MIB:.1f} MiB (saved natively)", f"{mig:.3f}x",
         f"<= {MIGRATION_TARGET}x", mig <= MIGRATION_TARGET),
    ]  # fmt: skip
    rows = [[*row[:5], "pass" if row[5] else "**FAIL**"] for row in checks]
    head = ["step", "modelvault", "baseline (same run)", "ratio", "target", "verdict"]
    text = (
        f"BentoML interop benchmark: {r['size_mib']} MiB model, {r['versions']} versions, "
        f"median of {r['runs']} runs ({r.get('export_runs', r['runs'])} of BentoML's "
        f"export), workdir on {r['filesystem']}.\n\n"
        f"{markdown_table(head, rows)}\n\n{os.cpu_count()} CPUs. Logical bytes of the "
        f"family: {b['logical'] / MIB:.1f} MiB.\n"
    )
    return text, all(row[5] for row in checks)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--versions", type=int, default=11)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--export-runs",
        type=int,
        help="samples of BentoML's own export (default: --runs); "
        "the setup's export of v0 is timed and counts as the first",
    )
    p.add_argument("--workdir", type=Path, help="kept afterwards; its workload is reused")
    p.add_argument("--json", type=Path, help="also write every sample here")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    if not BENTOML_PYTHON.exists():
        sys.exit("BentoML's virtualenv is missing: make .venv-bentoml/.installed")
    for tool in ("tar", "xz"):
        if shutil.which(tool) is None:
            sys.exit(f"the baseline needs `{tool}` on PATH (apt-get install -y {tool})")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mv-bench-bentoml-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run(work, args.size_mib, args.versions, args.runs, args.export_runs or args.runs)
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
