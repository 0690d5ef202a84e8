"""CLI benchmark (issue 6): start-up of ``mv --help`` / ``mv list``, and ``mv save`` vs Python.

Targets:

- ``mv --help`` and ``mv list`` on a store of ``--tags`` tags (default 1,000): under 0.2 s
  wall each, Python start included;
- ``mv save DIR NAME`` of a folder: as fast as ``Store(p).save(DIR, NAME)`` from Python plus
  the CLI's start-up: mv save / (a Python process importing modelvault and saving +
  (mv --help - python -c pass)) <= 1.1.
- issue 22: ``mv list`` and ``mv get TAG`` under 0.15 s each, and ``mv save`` of a small
  folder (``--small-kib``, default 64 KiB in 8 files) at most 0.15 s more than ``cp -r``
  of it followed by ``sync`` (both into a fresh folder, interleaved).

Each command runs ``--runs`` times (default 9) in a fresh process; the report gives the
median and minimum wall time and the median CPU time (user + system of the child, which a
loaded machine disturbs less than wall time), next to ``python -c pass`` measured in the
same run. The 1,000-tag store is built once (``--workdir``, reused by later calls).

    python benchmarks/bench_cli.py [--tags 1000] [--runs 9] [--save-mib 64]
                                   [--workdir DIR] [--json FILE] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
START_TARGET_S = 0.2
SAVE_RATIO_TARGET = 1.1
QUICK_TARGET_S = 0.15  # issue 22: mv list, mv get; mv save (small) - cp -r + sync


@dataclass
class Sample:
    """Timings of one command over several runs (seconds)."""

    name: str
    wall_median: float
    wall_min: float
    cpu_median: float

    def row(self) -> str:
        return (
            f"| {self.name} | {self.wall_median:.3f} | {self.wall_min:.3f} | "
            f"{self.cpu_median:.3f} |"
        )


def _bin(name: str) -> str:
    """The console script next to this Python, else the one on PATH."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def time_command(
    name: str, argv: list[str], runs: int, env: dict[str, str], *, check: bool = True
) -> Sample:
    """Run ``argv`` ``runs`` times; wall and child CPU time of each run."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=check
        )
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return Sample(name, statistics.median(walls), min(walls), statistics.median(cpus))


def build_store(path: Path, tags: int) -> None:
    """A store of ``tags`` small models over 50 names (built once, reused)."""
    marker = path / f".bench-{tags}"
    if marker.exists():
        return
    sys.path.insert(0, str(HERE.parent))
    import modelvault

    shutil.rmtree(path, ignore_errors=True)
    store = modelvault.Store(path)
    src = path.parent / "small-model"
    src.mkdir(parents=True, exist_ok=True)
    (src / "weights.bin").write_bytes(os.urandom(4096))
    (src / "config.json").write_text('{"hidden": 64}')
    for i in range(tags):
        store.save(src, f"model{i % 50}", labels={"i": str(i)}, module="modelvault.sklearn")
        if i % 100 == 99:
            print(f"  built {i + 1}/{tags} tags", file=sys.stderr)
    marker.write_text("ok")


def write_folder(path: Path, mib: int) -> None:
    """A model folder of ``mib`` MiB of random bytes in 4 files."""
    if path.exists():
        return
    path.mkdir(parents=True)
    for i in range(4):
        with open(path / f"part{i}.bin", "wb") as f:
            for _ in range(mib // 4):
                f.write(os.urandom(1 << 20))


def time_saves(
    folder: Path, workdir: Path, runs: int, env: dict[str, str]
) -> tuple[Sample, Sample, Sample]:
    """``mv save`` vs a Python process doing ``Store(p).save`` (whole process, and the
    call alone), each into an empty store."""
    mv, py, py_process = [], [], []
    code = (
        "import sys, time, modelvault; s = modelvault.Store(sys.argv[1]); t = time.perf_counter();"
        " s.save(sys.argv[2], 'bench'); print(time.perf_counter() - t)"
    )
    for i in range(runs):
        store_a, store_b = workdir / f"save-cli-{i}", workdir / f"save-py-{i}"
        for p in (store_a, store_b):
            shutil.rmtree(p, ignore_errors=True)
        subprocess.run(["sync"], check=False)
        start = time.perf_counter()
        subprocess.run(
            [_bin("mv"), "--store", str(store_a), "save", "-q", str(folder), "bench"],
            env=env,
            stdout=subprocess.DEVNULL,
            check=True,
        )
        mv.append(time.perf_counter() - start)
        subprocess.run(["sync"], check=False)
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", code, str(store_b), str(folder)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        py_process.append(time.perf_counter() - start)
        py.append(float(out.stdout.strip()))
        for p in (store_a, store_b):
            shutil.rmtree(p, ignore_errors=True)
    med = statistics.median
    return (
        Sample("mv save", med(mv), min(mv), 0.0),
        Sample("python -c 'import modelvault; Store.save'", med(py_process), min(py_process), 0.0),
        Sample("Store.save call alone (in Python)", med(py), min(py), 0.0),
    )


def time_small_save(
    folder: Path, workdir: Path, runs: int, env: dict[str, str]
) -> tuple[Sample, Sample]:
    """``mv save`` of a small folder into a fresh store against ``cp -r`` + ``sync`` of it
    into a fresh folder, interleaved."""
    saves, copies = [], []
    for i in range(runs):
        dest, store = workdir / f"small-cp-{i}", workdir / f"small-store-{i}"
        for p in (dest, store):
            shutil.rmtree(p, ignore_errors=True)
        subprocess.run(["sync"], check=False)
        start = time.perf_counter()
        subprocess.run(["sh", "-c", f"cp -r '{folder}' '{dest}' && sync"], check=True)
        copies.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run(
            [_bin("mv"), "--store", str(store), "save", "-q", str(folder), "small"],
            env=env,
            stdout=subprocess.DEVNULL,
            check=True,
        )
        saves.append(time.perf_counter() - start)
        for p in (dest, store):
            shutil.rmtree(p, ignore_errors=True)
    med = statistics.median
    return (
        Sample("cp -r + sync (small folder)", med(copies), min(copies), 0.0),
        Sample("mv save (small folder)", med(saves), min(saves), 0.0),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--save-mib", type=int, default=64)
    parser.add_argument("--small-kib", type=int, default=64)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.gettempdir()) / "modelvault-bench-cli"
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / f"store-{args.tags}"
    print(f"building a store of {args.tags} tags in {store} (once)", file=sys.stderr)
    build_store(store, args.tags)
    env = {**os.environ, "MODELVAULT_HOME": str(store), "NO_COLOR": "1"}
    # As after a normal install: bytecode is cached (some sandboxes set this variable,
    # which makes every start-up recompile every module).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([_bin("mv"), "list"], env=env, stdout=subprocess.DEVNULL, check=True)

    mv = _bin("mv")
    samples = [
        time_command("python -c pass", [sys.executable, "-c", "pass"], args.runs, env),
        time_command("mv --help", [mv, "--help"], args.runs, env),
        time_command(f"mv list ({args.tags} tags)", [mv, "list"], args.runs, env),
        time_command(
            f"mv list -o json ({args.tags} tags)", [mv, "list", "-o", "json"], args.runs, env
        ),
        time_command("mv get TAG", [mv, "get", "model7"], args.runs, env),
        time_command(
            "mv (pass-through to the system mv)",
            [mv, "-n", __file__, __file__],
            args.runs,
            env,
            check=False,
        ),
    ]
    folder = workdir / f"folder-{args.save_mib}"
    write_folder(folder, args.save_mib)
    cli_save, py_process, py_call = time_saves(folder, workdir, max(3, args.runs // 3), env)
    samples += [cli_save, py_process, py_call]
    small = workdir / f"small-{args.small_kib}"
    if not small.exists():
        small.mkdir(parents=True)
        for i in range(8):
            (small / f"f{i}.bin").write_bytes(os.urandom(args.small_kib * 1024 // 8))
    cp_small, save_small = time_small_save(small, workdir, args.runs, env)
    samples += [cp_small, save_small]

    pass_s, help_s, list_s = samples[0], samples[1], samples[2]
    get_s = next(s for s in samples if s.name == "mv get TAG")
    extra = save_small.wall_median - cp_small.wall_median
    cli_start = help_s.wall_median - pass_s.wall_median  # what the CLI adds to Python's start
    save_ratio = cli_save.wall_median / (py_process.wall_median + cli_start)
    print(f"# mv CLI benchmark ({args.runs} runs, load average {os.getloadavg()[0]:.1f})\n")
    print("| command | wall median s | wall min s | CPU median s |")
    print("|---|---|---|---|")
    for s in samples:
        print(s.row())
    checks = {
        "mv --help < 0.2 s": help_s.wall_median < START_TARGET_S,
        "mv list < 0.2 s": list_s.wall_median < START_TARGET_S,
        f"mv save <= {SAVE_RATIO_TARGET}x (Python process saving + CLI start-up) "
        f"({save_ratio:.2f}x)": (save_ratio <= SAVE_RATIO_TARGET),
        f"mv list < {QUICK_TARGET_S} s": list_s.wall_median < QUICK_TARGET_S,
        f"mv get < {QUICK_TARGET_S} s": get_s.wall_median < QUICK_TARGET_S,
        f"mv save (small) - (cp -r + sync) <= {QUICK_TARGET_S} s ({extra:+.3f} s)": (
            extra <= QUICK_TARGET_S
        ),
    }
    print()
    for what, ok in checks.items():
        print(f"- {'PASS' if ok else 'MISS'}: {what}")
    if args.json:
        doc = {"samples": [asdict(s) for s in samples], "checks": checks}
        args.json.write_text(json.dumps(doc, indent=2))
    return 1 if args.check and not all(checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
