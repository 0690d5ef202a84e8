"""Many tags, many files (issue 18 point 4), each beside its baseline in the same run.

- ``mv list`` over ``--tags`` tags (default 10,000; 100 names of 100 versions), Python
  start included: target under 0.3 s; ``mv list NAME`` (100 of them) beside it, which
  must cost what it returns, not the whole refs folder; ``python -c pass`` as the floor.
- saving a folder of ``--files`` files of 1 KiB (default 100,000) with ``mv save``,
  against ``cp -r`` of the same folder followed by ``sync``: target at most 2x.

Each measurement runs ``--runs`` times (default 5) in a fresh process, interleaved with
its baseline; the report gives medians. The tag store is made by saving one model and
publishing its ref under every tag with the store's own ref writer (``RefStore.create``),
which is what a save ends with.

    python benchmarks/bench_many.py [--tags 10000] [--files 100000] [--runs 5]
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

LIST_TARGET_S = 0.3
SAVE_RATIO_TARGET = 2.0


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def _wall(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def make_tag_store(path: Path, tags: int) -> None:
    import modelvault
    from modelvault.refs import RefValue
    from modelvault.tags import Tag

    store = modelvault.Store(path)
    src = path.parent / "one-model"
    src.mkdir(exist_ok=True)
    (src / "w.bin").write_bytes(os.urandom(1024))
    model = store.save(src, "seed:v0")
    names = max(1, tags // 100)
    for i in range(tags - 1):
        tag = Tag(f"name{i % names:04d}", f"v{i:06d}")
        ref = model.ref  # what a save writes: the model id, its time, module and size
        store.repo.refs.create(RefValue(tag, ref.model_id, ref.created + i, ref.module, ref.size))


def make_small_files(path: Path, files: int) -> None:
    per = 1000
    for i in range(files):
        folder = path / f"d{i // per:04d}"
        if i % per == 0:
            folder.mkdir(parents=True)
        (folder / f"f{i % per:04d}").write_bytes(os.urandom(1024))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tags", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-files", action="store_true", help="only the tags part")
    args = ap.parse_args()
    mv = _bin("mv")
    with tempfile.TemporaryDirectory(prefix="bench-many-") as tmp:
        root = Path(tmp)
        store = root / "tags" / "store"
        store.parent.mkdir()
        make_tag_store(store, args.tags)
        env = {**os.environ, "MODELVAULT_HOME": str(store)}
        floor, full, one = [], [], []
        for _ in range(args.runs):
            floor.append(_wall([sys.executable, "-c", "pass"]))
            full.append(_wall([mv, "list"], env))
            one.append(_wall([mv, "list", "name0001"], env))
        print(f"## {args.tags} tags, medians of {args.runs} runs (s)\n")
        print("| command | wall |\n|---|---|")
        print(f"| python -c pass | {statistics.median(floor):.3f} |")
        print(f"| mv list ({args.tags} tags) | {statistics.median(full):.3f} |")
        print(
            f"| mv list NAME ({args.tags // max(1, args.tags // 100)} tags) | "
            f"{statistics.median(one):.3f} |"
        )
        ok = statistics.median(full) <= LIST_TARGET_S
        print(f"\nmv list target <= {LIST_TARGET_S} s: {'met' if ok else 'MISSED'}\n")

        if args.no_files:
            return
        folder = root / "files"
        make_small_files(folder, args.files)
        subprocess.run(["sync"], check=True)
        cps, saves = [], []
        for run in range(args.runs):
            dest = root / f"cp{run}"
            cps.append(_wall(["sh", "-c", f"cp -r '{folder}' '{dest}' && sync"]))
            shutil.rmtree(dest)
            s = root / f"store{run}"
            saves.append(_wall([mv, "--store", str(s), "save", str(folder), "many:v1", "-q"]))
            shutil.rmtree(s)
            subprocess.run(["sync"], check=True)
        cp, save = statistics.median(cps), statistics.median(saves)
        print(f"## {args.files} files of 1 KiB, medians of {args.runs} runs (s)\n")
        print("| command | wall |\n|---|---|")
        print(f"| cp -r + sync | {cp:.3f} |")
        print(f"| mv save | {save:.3f} |")
        ratio = save / cp
        verdict = "met" if ratio <= SAVE_RATIO_TARGET else "MISSED"
        print(
            f"\nmv save / (cp -r + sync) = {ratio:.2f} (target <= {SAVE_RATIO_TARGET}: {verdict})"
        )


if __name__ == "__main__":
    main()
