"""Scale benchmark (issue 18): what one process costs as the store grows.

Each operation runs in a fresh process (Python start-up included in "wall"; "op" is the
operation alone, after imports), against a store holding only a small model (the empty
store) and against a large one, so the difference is what the store's size costs:

- ``read``    open the store, get a model, read 1 MiB of one of its files;
- ``save1k``  save a new 1 KiB model;
- ``save-big`` / ``save-90`` (with ``--big-mib``): save a new model of that size, then a
  version sharing 90% of its bytes, on a fresh clone of the store (packs hard-linked)
  each run, removed after (targets: within 5% of the empty store);
- ``index``   (synthetic store only, once, first; not with ``--code``) merge every pack
  index into one multi-pack index: what the first write to a large format-2 store
  costs, and its memory (before it, this checkout reads such a store as it is, one
  ``.idx`` at a time into a dict, like the previous version);
- ``gc``      (``--real`` with ``--gc-real`` only: destructive) delete every other
  version of each name, then gc (target: time ~ bytes rewritten, memory < 300 MiB).

The large store is synthetic (``--objects``, default 16M): the small model's store plus
pack files that are sparse (a header, then a hole: no terabyte is written) with real
index files of random ids, written directly; or a real store (``--real PATH``). Targets
for ``read`` and ``save1k``: at most +10 MiB peak RSS and +30 ms over the empty store.
The report gives the per-object RAM slope ((RSS large - RSS empty) / objects) and its
extrapolation to 16M objects.

``--code DIR`` runs the children with ``DIR`` first on ``PYTHONPATH`` (a checkout of
another commit, say ``git worktree add /tmp/before <commit>``), for before/after figures
from the same stores: the stores' ``config.json`` is put back as made (format 2, which
both read) before each run.

    python benchmarks/bench_scale.py [--objects 16000000] [--per-pack 1000]
        [--runs 3] [--big-mib 0] [--workdir DIR] [--code DIR] [--real PATH
        --read-tag TAG --read-file REL [--gc-real]] [--json FILE]

Run it alone on the machine: the figures are wall times and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024
TAG = "bench:v1"
FILE = "w.bin"
PAYLOAD = 64 * 1024  # stored length of each synthetic object (the sparse packs' holes)
RSS_TARGET_MIB = 10
WALL_TARGET_S = 0.030


def peak_rss_mib() -> float:
    """This process's peak RSS (``VmHWM``). Not ``ru_maxrss``: Linux carries that over
    fork and exec, so a child reports at least its parent's peak at the fork."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# -- children ---------------------------------------------------------------------------


def read_mib(store: Any, tag: str, rel: str) -> None:
    """Read the first MiB of ``rel`` in model ``tag``."""
    with store.get(tag).open(rel) as f:  # a raw stream: read() may return less
        got = 0
        while got < MiB and (block := f.read(MiB - got)):
            got += len(block)
    assert got == MiB, got


def save_1k(store: Any) -> None:
    """Save a model of one 1 KiB file."""
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    (folder / "tiny.bin").write_bytes(os.urandom(1024))
    store.save(folder, "tiny")
    shutil.rmtree(folder)


def _child(op: str, store_path: str, args: list[str]) -> None:
    t0 = time.perf_counter()
    import modelvault

    imported = time.perf_counter()
    store = modelvault.Store(store_path)
    if op == "read":
        read_mib(store, *args)
    elif op == "save1k":
        save_1k(store)
    elif op in ("save-big", "save-90"):
        (src,) = args
        store.save(src, "big")
    elif op == "index":
        from modelvault.odb import PackDB

        db = PackDB(Path(store_path) / "objects")
        layer = db.rebuild_index()
        assert layer is not None
    elif op == "gc":
        by_name: dict[str, list[Any]] = {}
        for m in store.list():
            by_name.setdefault(m.tag.name, []).append(m.tag)
        for tags in by_name.values():
            for tag in tags[::2]:
                store.delete(tag)
        store.gc()
    else:
        raise SystemExit(f"unknown op {op}")
    done = time.perf_counter()
    print(
        json.dumps(
            {"op_s": done - imported, "import_s": imported - t0, "maxrss_mib": peak_rss_mib()}
        )
    )


def _run(op: str, store: Path, args: list[str], code: str | None, config: bytes) -> dict[str, Any]:
    if config:  # a new file renamed over it: a hard-link clone's original stays as it is
        tmp = store / "config.json.bench-tmp"
        tmp.write_bytes(config)
        os.replace(tmp, store / "config.json")
    return run_child(__file__, op, store, args, code)


def run_child(
    script: str, op: str, store: Path, args: list[str], code: str | None
) -> dict[str, Any]:
    """Run ``script --child OP STORE ARGS`` (importing modelvault from ``code`` when
    given): the JSON document its last line prints, with ``wall_s`` added."""
    env = dict(os.environ)
    if code:
        env["PYTHONPATH"] = code + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, script, "--child", op, str(store), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{op} on {store} failed:\n{out.stderr}")
    doc: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    doc["wall_s"] = wall
    return doc


def _measure(
    op: str, store: Path, args: list[str], runs: int, code: str | None, config: bytes
) -> dict[str, float]:
    return _median([_run(op, store, args, code, config) for _ in range(runs)])


def _median(samples: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "wall_s": statistics.median(s["wall_s"] for s in samples),
        "op_s": statistics.median(s["op_s"] for s in samples),
        "maxrss_mib": statistics.median(s["maxrss_mib"] for s in samples),
    }


def clone(store: Path, dest: Path) -> Path:
    """A copy of ``store`` whose files under ``objects/packs/`` (the bulk: packs and
    indexes, written once to a new name and never changed in place) are hard links and
    every other file (refs, config, locks, state records: small, and some are changed in
    place, like the count in ``objects/packs.lock``) a real copy. What the clone writes
    or deletes leaves ``store`` as it is (``bench_scale_real.py`` checks it)."""
    remove(dest)
    for root, _, files in os.walk(store):
        rel = Path(root).relative_to(store)
        target = dest / rel
        target.mkdir(parents=True, exist_ok=True)
        linked = rel.parts[:2] == ("objects", "packs")
        for name in files:
            if linked:
                os.link(os.path.join(root, name), target / name)
            else:
                shutil.copy2(os.path.join(root, name), target / name, follow_symlinks=False)
    return dest


def remove(path: Path) -> None:
    """Remove a clone: folders made writable first (files are not chmod-ed: a file of a
    clone is the original's inode, and its read-only mode must stay)."""
    if path.exists():
        for root, dirs, _ in os.walk(path):
            for d in [root, *(os.path.join(root, d) for d in dirs)]:
                os.chmod(d, os.lstat(d).st_mode | 0o200)
        shutil.rmtree(path)


# -- stores -----------------------------------------------------------------------------


def _make_small_store(path: Path) -> None:
    import modelvault

    src = path.parent / f"{path.name}-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / FILE).write_bytes(os.urandom(4 * MiB))
    (src / "config.json").write_bytes(b'{"layers": 2}\n')
    modelvault.Store(path).save(src, TAG)
    shutil.rmtree(src)
    (path / "config.json").write_bytes(b'{"format": 2}')  # read by before and after


def _add_synthetic(path: Path, objects: int, per_pack: int) -> None:
    """Sparse packs with real ``.idx`` files of random ids (docs/format.md 4 and 5)."""
    import numpy as np
    from blake3 import blake3

    from modelvault.core.hashing import ObjType
    from modelvault.core.packfmt import FILE_HEADER, IDX_COUNT, IDX_MAGIC, PACK_MAGIC, VERSION

    dtype = np.dtype(
        [
            ("id", "S32"),
            ("kind", "u1"),
            ("codec", "u1"),
            ("pad", "<u2"),
            ("offset", "<u8"),
            ("stored", "<u4"),
            ("raw", "<u4"),
        ]
    )
    packs = path / "objects" / "packs"
    left = objects
    while left > 0:
        n = min(per_pack, left)
        left -= n
        arr = np.zeros(n, dtype)
        arr["id"] = np.sort(np.frombuffer(os.urandom(32 * n), "S32"))
        arr["kind"] = int(ObjType.CHUNK)
        arr["offset"] = FILE_HEADER.size + 44 + np.arange(n, dtype=np.uint64) * (44 + PAYLOAD)
        arr["stored"] = arr["raw"] = PAYLOAD
        digest = blake3(arr.tobytes()).digest()
        name = digest.hex()
        with open(packs / f"{name}.pack", "wb") as f:
            f.write(FILE_HEADER.pack(PACK_MAGIC, VERSION))
            f.truncate(FILE_HEADER.size + n * (44 + PAYLOAD))  # a hole: no bytes written
        body = FILE_HEADER.pack(IDX_MAGIC, VERSION) + IDX_COUNT.pack(n) + arr.tobytes() + digest
        (packs / f"{name}.idx").write_bytes(body + blake3(body).digest())


def _big_sources(work: Path, mib: int, seed: int = 18) -> tuple[Path, Path]:
    """A new model of ``mib`` MiB of random bytes and a version sharing 90% of them.

    ``seed`` must differ from any seed the measured store's models were made with, or
    the "new" model is not new there (``bench_scale_real.py`` makes its store with 18)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a, b = work / "big-a", work / "big-b"
    mark = work / "big.seed"
    if (
        mark.exists()
        and mark.read_text() == str(seed)
        and all(
            (p / "w.bin").is_file() and (p / "w.bin").stat().st_size == mib * MiB for p in (a, b)
        )
    ):
        return a, b  # made by an earlier run with the same seed: the same bytes
    for p in (a, b):
        p.mkdir(parents=True, exist_ok=True)
    mark.unlink(missing_ok=True)
    with open(a / "w.bin", "wb") as fa, open(b / "w.bin", "wb") as fb:
        for i in range(mib):
            block = rng.bytes(MiB)
            fa.write(block)
            fb.write(rng.bytes(MiB) if i % 10 == 9 else block)  # 90% shared
    mark.write_text(str(seed))
    return a, b


# -- main -------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        _child(argv[1], argv[2], argv[3:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--objects", type=int, default=16_000_000)
    p.add_argument("--per-pack", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--big-mib", type=int, default=0, help="also save-big/save-90 of this size")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--code", default=None, help="a checkout to run the children from")
    p.add_argument("--real", type=Path, default=None, help="a real store to measure too")
    p.add_argument("--read-tag", default=TAG)
    p.add_argument("--read-file", default=FILE)
    p.add_argument("--gc-real", action="store_true", help="delete half of --real, then gc")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)

    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    empty = work / "empty"
    if not empty.exists():
        _make_small_store(empty)
    synth = work / f"synthetic-{a.objects}"
    made = synth / ".bench-made"
    results: dict[str, Any] = {"objects": a.objects, "code": a.code or "this checkout"}
    if not made.exists():
        shutil.rmtree(synth, ignore_errors=True)
        shutil.copytree(empty, synth)
        t0 = time.perf_counter()
        _add_synthetic(synth, a.objects, a.per_pack)
        results["generate_s"] = time.perf_counter() - t0
        made.write_text("")
    configs = {s: (s / "config.json").read_bytes() for s in (empty, synth)}
    stores: list[tuple[str, Path, list[str]]] = [
        ("empty", empty, [TAG, FILE]),
        (f"{a.objects} objects", synth, [TAG, FILE]),
    ]
    if a.real is not None:
        configs[a.real] = b""  # a real store is measured as it is
        stores.append((f"real {a.real}", a.real, [a.read_tag, a.read_file]))
    ops = ["read", "save1k"]
    rows: list[dict[str, Any]] = []
    if not a.code:  # this checkout merges the packs' indexes first (the first write would)
        m = _measure("index", synth, [], 1, None, configs[synth])
        rows.append({"store": f"{a.objects} objects", "op": "index", **m})
    big = _big_sources(work, a.big_mib) if a.big_mib else None
    for label, store, read_args in stores:
        for op in ops:
            args = read_args if op == "read" else []
            m = _measure(op, store, args, a.runs, a.code, configs[store])
            rows.append({"store": label, "op": op, **m})
        if big is not None:  # on a fresh hard-link clone each run: the store stays as made
            samples: dict[str, list[dict[str, Any]]] = {"save-big": [], "save-90": []}
            for _ in range(a.runs):
                c = clone(store, work / "clone")
                try:
                    for op, src in (("save-big", big[0]), ("save-90", big[1])):
                        samples[op].append(_run(op, c, [str(src)], a.code, configs[store]))
                finally:
                    remove(c)
            for op, ss in samples.items():
                rows.append({"store": label, "op": op, **_median(ss)})
    if a.real is not None and a.gc_real:
        m = _measure("gc", a.real, [], 1, a.code, b"")
        rows.append({"store": f"real {a.real}", "op": "gc", **m})
    results["rows"] = rows

    base = {r["op"]: r for r in rows if r["store"] == "empty"}
    print(f"code: {results['code']}")
    print("| store | op | wall s | op s | peak RSS MiB | +RSS MiB | +wall ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        b = base.get(r["op"])
        d_rss = r["maxrss_mib"] - b["maxrss_mib"] if b else float("nan")
        d_wall = 1000 * (r["wall_s"] - b["wall_s"]) if b else float("nan")
        print(
            f"| {r['store']} | {r['op']} | {r['wall_s']:.3f} | {r['op_s']:.3f} | "
            f"{r['maxrss_mib']:.1f} | {d_rss:+.1f} | {d_wall:+.0f} |"
        )
    slopes = {}
    for r in rows:
        b = base.get(r["op"])
        if b and r["store"] == f"{a.objects} objects" and r["op"] in ("read", "save1k"):
            slope = (r["maxrss_mib"] - b["maxrss_mib"]) * MiB / a.objects
            slopes[r["op"]] = slope
            ok = (
                r["maxrss_mib"] - b["maxrss_mib"] <= RSS_TARGET_MIB
                and r["wall_s"] - b["wall_s"] <= WALL_TARGET_S
            )
            target = " (target +10 MiB, +30 ms: " + ("met)" if ok else "MISSED)")
            print(
                f"{r['op']}: {slope:.1f} bytes of RSS per stored object -> "
                f"{slope * 16e6 / MiB:.0f} MiB at 16M objects" + target
            )
    results["rss_bytes_per_object"] = slopes
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    if a.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
