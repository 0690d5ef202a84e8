"""Scale benchmark on a REAL store of >= 16 GiB (issue 18, "How big, how fast").

The store is made once (``--gib``, default 16; not timed as a measurement) under
``--workdir`` (default ``/work/scale``) and reused by later runs: ``--versions`` versions
of each name (default 4: ``m0000:v0 .. v3``, then ``m0001``, ...) of one ``--model-mib``
file (default 512) of random bytes (numpy ``default_rng``: cheap, incompressible), each
version made from the one before by replacing 10% of its 1 MiB blocks in place (~90%
shared, like ``bench_store.py``'s family), until the packs hold ``--gib`` GiB.

Measured, each operation in a fresh process (wall with Python start, "op" after the
imports, peak RSS = ``VmHWM``), medians of ``--runs``, the stores taken in turn in
every run, against a store holding only a 4 MiB model (the empty store), on a clone of
each store made before the operation and removed after it (``bench_scale.clone``: the
files of ``objects/packs/`` hard-linked, the rest copied), so the stores are never
changed (the script checks that every file of the originals is as it was at the end):

- ``read-first`` the same, by the first process after the clone is made: it lists
  ``objects/packs/`` and writes the folder's record (what a copied store's first open
  costs, once; no target), so the operations below see the store at rest;
- ``read``     open the store, get a model, read 1 MiB of its file;
- ``save1k``   save a new 1 KiB model;   targets: +10 MiB, +30 ms over the empty store;
- ``save-big`` save a new ``--big-mib`` model (default 1024; 0 skips), then
  ``save-90`` a version sharing 90% of its bytes; target: within 5% of the empty store;
- ``gc``       (``--delete MODES``, comma separated; ``--delete none`` skips) delete half
  the models, then gc, on a clone: ``every-other`` version of each name (default; its
  packs become partly dead, so gc repacks), ``oldest`` half of each name's versions, or
  half the ``names`` (whole packs die; nothing is rewritten). Reported: delete and gc
  time, peak RSS (target < 300 MiB), bytes rewritten (new files in the clone) and read
  for repacking, bytes freed, seconds per GiB rewritten, beside a baseline in the same run:
  ``cp`` of as many bytes of the store's packs + ``sync`` (target: time ~ bytes rewritten).

``--code DIR`` runs the children with ``DIR`` first on ``PYTHONPATH`` (a checkout of an
earlier commit, with the compiled extensions copied in), and ``--as-format N`` sets each
clone's ``config.json`` to that format (2: what a checkout before the on-disk index
reads; the pack ``.idx`` files are all there), for before/after figures on the same
stores; the stores themselves are made by this checkout.

``--synthetic PATH`` adds a store made by ``bench_scale.py --workdir`` (16M objects over
sparse packs) to ``read``/``save1k``/``save-big``/``save-90``. The per-object RAM slope
((RSS store - RSS empty) / objects) is printed for each large store.

    python benchmarks/bench_scale_real.py [--gib 16] [--workdir /work/scale] [--runs 3]
        [--big-mib 1024] [--delete every-other[,oldest,names]] [--gc-runs N] [--synthetic PATH]
        [--generate-only] [--code DIR --as-format 2] [--json FILE]

Tiny check (seconds): ``--gib 0.25 --model-mib 16 --big-mib 16 --runs 1 --workdir /tmp/x``.
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
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_scale import (  # noqa: E402
    _big_sources,
    clone,
    peak_rss_mib,
    read_mib,
    remove,
    run_child,
    save_1k,
)

MiB = 1024 * 1024
GiB = 1024 * MiB
FILE = "w.bin"
SMALL_TAG = "bench:v1"
RSS_TARGET_MIB = 10
WALL_TARGET_S = 0.030
BIG_TARGET = 1.05
GC_RSS_TARGET_MIB = 300
MADE = ".bench-made.json"


# -- children: one operation each, in a fresh process ------------------------------------


def _delete_half(store: Any, mode: str) -> int:
    by_name: dict[str, list[Any]] = {}
    for m in store.list():
        by_name.setdefault(m.tag.name, []).append(m)
    doomed: list[Any] = []
    names = sorted(by_name)
    for i, name in enumerate(names):
        versions = sorted(by_name[name], key=lambda m: m.info.creation_time)
        if mode == "every-other":
            doomed += versions[::2]
        elif mode == "oldest":
            doomed += versions[: len(versions) // 2]
        elif mode == "names":
            doomed += versions if i % 2 == 0 else []
        else:
            raise SystemExit(f"unknown --delete mode {mode}")
    for m in doomed:
        store.delete(m.tag)
    return len(doomed)


def _child(op: str, store_path: str, args: list[str]) -> None:
    t0 = time.perf_counter()
    import modelvault

    imported = time.perf_counter()
    store = modelvault.Store(store_path)
    extra: dict[str, Any] = {}
    if op == "read":
        read_mib(store, *args)
    elif op == "save1k":
        save_1k(store)
    elif op == "save":
        src, name = args
        store.save(src, name)
    elif op == "gc":
        import inspect

        (mode,) = args
        extra["deleted"] = _delete_half(store, mode)
        deleted = time.perf_counter()
        repack = {"bytes": 0, "packs": 0}

        def progress(step: Any) -> None:  # maintenance.Step
            if step.phase == "repacking":
                repack["bytes"] = max(repack["bytes"], step.total_bytes)
                repack["packs"] = max(repack["packs"], step.total_objects)

        if "progress" in inspect.signature(store.gc).parameters:
            extra["freed"] = store.gc(progress=progress)
        else:  # an earlier checkout (--code): no progress, nothing counted as read to repack
            extra["freed"] = store.gc()
        extra["delete_s"] = deleted - imported
        extra["gc_s"] = time.perf_counter() - deleted
        extra["repack_read"] = repack["bytes"]
        extra["repack_packs"] = repack["packs"]
    else:
        raise SystemExit(f"unknown op {op}")
    done = time.perf_counter()
    doc = {"op_s": done - imported, "import_s": imported - t0, "maxrss_mib": peak_rss_mib()}
    print(json.dumps({**doc, **extra}))


CODE: str | None = None  # --code: the checkout the children import modelvault from
AS_FORMAT: int | None = None  # --as-format: the format a clone's config.json is set to


def _run(op: str, store: Path, args: list[str]) -> dict[str, Any]:
    os.sync()  # earlier writes are not charged to this operation
    return run_child(__file__, op, store, args, CODE)


# -- stores ----------------------------------------------------------------------------


def _pack_bytes(store: Path) -> int:
    packs = store / "objects" / "packs"
    return sum(e.stat().st_size for e in os.scandir(packs) if e.is_file()) if packs.exists() else 0


def _objects(store: Path) -> int | None:
    try:
        from modelvault.repo import Repository

        return int(Repository(store).objects.count())
    except Exception:  # an internal API: the count is context only
        return None


def make_empty(path: Path) -> None:
    """A store holding one 4 MiB model (what ``read`` reads)."""
    import modelvault

    if (path / MADE).exists():
        return
    shutil.rmtree(path, ignore_errors=True)
    src = path.parent / f"{path.name}-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / FILE).write_bytes(os.urandom(4 * MiB))
    modelvault.Store(path).save(src, SMALL_TAG)
    shutil.rmtree(src)
    (path / MADE).write_text(json.dumps({"read_tag": SMALL_TAG, "read_file": FILE}))


def make_real(path: Path, gib: float, model_mib: int, versions: int, seed: int) -> dict[str, Any]:
    """Save versions of names until the packs hold ``gib`` GiB (reused when made)."""
    import numpy as np
    from blake3 import blake3

    import modelvault

    made = path / MADE
    want = {"gib": gib, "model_mib": model_mib, "versions": versions, "seed": seed}
    if made.exists():
        doc: dict[str, Any] = json.loads(made.read_text())
        if all(doc.get(k) == v for k, v in want.items()):
            return doc
        raise SystemExit(f"{path} was made with other options ({doc}); remove it first")
    target = int(gib * GiB)
    free = shutil.disk_usage(path.parent if path.parent.exists() else "/").free
    if free < target + model_mib * MiB + 2 * GiB:
        raise SystemExit(f"{free / GiB:.1f} GiB free under {path.parent}: too little for {gib} GiB")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    store = modelvault.Store(path)
    rng = np.random.default_rng(seed)
    src = path.parent / f"{path.name}-src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    weights = src / FILE
    t0 = time.perf_counter()
    tags: list[str] = []
    fam = 0
    while _pack_bytes(path) < target:
        name = f"m{fam:04d}"
        with open(weights, "wb") as f:
            for _ in range(model_mib):
                f.write(rng.bytes(MiB))
        for k in range(versions):
            if k:  # 10% of the 1 MiB blocks get new bytes, in place
                changed = rng.choice(model_mib, size=max(1, model_mib // 10), replace=False)
                with open(weights, "r+b") as f:
                    for i in sorted(changed.tolist()):
                        f.seek(i * MiB)
                        f.write(rng.bytes(MiB))
            tags.append(str(store.save(src, f"{name}:v{k}").tag))
        with store.get(tags[-1]).open(FILE) as f:  # the stored bytes are the file's
            assert blake3(f.read()).digest() == blake3(weights.read_bytes()).digest()
        fam += 1
        took = time.perf_counter() - t0
        print(
            f"  {name}: {len(tags)} models, {_pack_bytes(path) / GiB:.2f} GiB stored, {took:.0f} s",
            file=sys.stderr,
        )
    shutil.rmtree(src)
    doc = {
        **want,
        "names": fam,
        "models": len(tags),
        "read_tag": tags[-1],
        "read_file": FILE,
        "pack_bytes": _pack_bytes(path),
        "objects": _objects(path),
        "generate_s": time.perf_counter() - t0,
    }
    made.write_text(json.dumps(doc, indent=2))
    return doc


def snapshot(store: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every file of ``store``: (inode, size, mtime_ns, mode)."""
    out = {}
    for root, _, files in os.walk(store):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            out[os.path.relpath(os.path.join(root, name), store)] = (
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
                st.st_mode,
            )
    return out


def new_bytes(clone_dir: Path, original: dict[str, tuple[int, int, int, int]]) -> int:
    """Bytes of the clone's files that are not links to the original's (what was written)."""
    inodes = {v[0] for v in original.values()}
    total = 0
    for root, _, files in os.walk(clone_dir):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            if st.st_ino not in inodes:
                total += st.st_size
    return total


def cp_sync_bytes(store: Path, nbytes: int, dest: Path) -> tuple[float, int]:
    """Time ``cp`` of whole packs of ``store`` adding up to ``nbytes`` + ``sync``."""
    picked, total = [], 0
    for p in sorted((store / "objects" / "packs").glob("*.pack")):
        if total >= nbytes:
            break
        picked.append(str(p))
        total += p.stat().st_size
    remove(dest)
    dest.mkdir(parents=True)
    os.sync()
    t0 = time.perf_counter()
    if picked:
        subprocess.run(["cp", *picked, str(dest)], check=True)
    subprocess.run(["sync"], check=True)
    took = time.perf_counter() - t0
    remove(dest)
    return took, total


# -- main ------------------------------------------------------------------------------


def _clone(store: Path, dest: Path) -> Path:
    c = clone(store, dest)
    if AS_FORMAT is not None:  # the clone's config.json is a copy: the original keeps its own
        (c / "config.json").write_text(json.dumps({"format": AS_FORMAT}))
    return c


def _gc_fit(rows: list[dict[str, Any]]) -> tuple[float, float, float] | None:
    """gc seconds = a + b x GiB written, by least squares over every gc run; and cp +
    sync's seconds per GiB over the same runs (None with fewer than two distinct sizes)."""
    xs = [r["written"] / GiB for r in rows]
    if len({round(x, 3) for x in xs}) < 2:
        return None
    ys = [r["gc_s"] for r in rows]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    cp_bytes = sum(r["cp_bytes"] for r in rows)
    cp = sum(r["cp_s"] for r in rows) / (cp_bytes / GiB) if cp_bytes else float("nan")
    return my - b * mx, b, cp


def _med(samples: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in samples[0].items() if isinstance(v, int | float)]
    return {k: statistics.median(s[k] for s in samples) for k in keys}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        _child(argv[1], argv[2], argv[3:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gib", type=float, default=16.0, help="stored GiB of the real store")
    p.add_argument("--model-mib", type=int, default=512)
    p.add_argument("--versions", type=int, default=4, help="versions of each name")
    p.add_argument("--seed", type=int, default=18)
    p.add_argument("--workdir", type=Path, default=Path("/work/scale"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--big-mib", type=int, default=1024, help="save-big/save-90 size (0: skip)")
    p.add_argument("--delete", default="every-other", help="gc modes, comma separated, or none")
    p.add_argument("--gc-runs", type=int, default=None, help="runs of each gc (default --runs)")
    p.add_argument("--synthetic", type=Path, default=None, help="a bench_scale.py store too")
    p.add_argument("--generate-only", action="store_true")
    p.add_argument("--code", default=None, help="a checkout to run the children from")
    p.add_argument("--as-format", type=int, default=None, help="clones' config format")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    global CODE, AS_FORMAT
    CODE, AS_FORMAT = a.code, a.as_format

    work = a.workdir
    work.mkdir(parents=True, exist_ok=True)
    real = work / f"real-{a.gib:g}g"
    t0 = time.perf_counter()
    doc = make_real(real, a.gib, a.model_mib, a.versions, a.seed)
    print(
        f"real store {real}: {doc['models']} models of {a.model_mib} MiB ({doc['names']} names x "
        f"{a.versions} versions), {doc['pack_bytes'] / GiB:.2f} GiB in packs, "
        f"{doc['objects']} objects (made in {doc['generate_s']:.0f} s)",
        file=sys.stderr,
    )
    if a.generate_only:
        return 0
    empty = work / "empty"
    make_empty(empty)
    stores: list[tuple[str, Path, list[str], int | None]] = [
        ("empty", empty, [SMALL_TAG, FILE], _objects(empty)),
        (f"real {doc['pack_bytes'] / GiB:.1f} GiB", real, [doc["read_tag"], FILE], doc["objects"]),
    ]
    if a.synthetic is not None:
        made = json.loads((a.synthetic / MADE).read_text()) if (a.synthetic / MADE).exists() else {}
        tag, rel = made.get("read_tag", SMALL_TAG), made.get("read_file", FILE)
        stores.append(
            (f"synthetic {a.synthetic.name}", a.synthetic, [tag, rel], _objects(a.synthetic))
        )
    before = {s[1]: snapshot(s[1]) for s in stores}
    big = None
    if a.big_mib:
        # not the store's seed: its first model would be the "new" model's first half
        big = _big_sources(work / f"big-{a.big_mib}", a.big_mib, seed=a.seed + 1000)

    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    scratch = work / "clone"
    for run in range(a.runs):
        for label, store, read_args, _ in stores:
            print(f"  run {run + 1}/{a.runs}: {label}", file=sys.stderr)
            c = _clone(store, scratch)
            try:
                # the first process after the copy lists objects/packs/ and writes the
                # folder's record (docs/architecture.md "Known limits"): reported apart,
                # so the measured operations see the store at rest, as a user's is
                ops: list[tuple[str, list[str]]] = [
                    ("read-first", read_args),
                    ("read", read_args),
                    ("save1k", []),
                ]
                if big is not None:
                    ops += [("save-big", [str(big[0]), "big"]), ("save-90", [str(big[1]), "big"])]
                for op, args in ops:
                    child_op = "save" if op.startswith("save-") else op.removesuffix("-first")
                    samples.setdefault((label, op), []).append(_run(child_op, c, args))
            finally:
                remove(c)

    gc_rows: list[dict[str, Any]] = []
    modes = [] if a.delete == "none" else a.delete.split(",")
    gc_runs = a.runs if a.gc_runs is None else a.gc_runs
    free = shutil.disk_usage(work).free
    if modes and free < 0.4 * doc["pack_bytes"]:
        print(
            f"  warning: {free / GiB:.1f} GiB free; gc of a clone may rewrite ~30%", file=sys.stderr
        )
    for mode in modes:
        for run in range(gc_runs):
            print(f"  gc run {run + 1}/{gc_runs}: delete {mode}", file=sys.stderr)
            c = _clone(real, scratch)
            try:
                r = _run("gc", c, [mode])
                r["written"] = new_bytes(c, before[real])
            finally:
                remove(c)
            r["cp_s"], r["cp_bytes"] = cp_sync_bytes(real, r["written"], work / "cp-baseline")
            gc_rows.append({"mode": mode, **r})

    for store in before:  # the originals are as they were
        now = snapshot(store)
        changed = [k for k, v in before[store].items() if now.get(k) != v]
        if changed:
            raise SystemExit(f"{store} changed during the benchmark: {changed[:5]}")

    rows = [{"store": lbl, "op": op, "runs": len(s), **_med(s)} for (lbl, op), s in samples.items()]
    base = {r["op"]: r for r in rows if r["store"] == "empty"}
    print(f"\n## Scale: a real store of {doc['pack_bytes'] / GiB:.2f} GiB, medians of {a.runs}")
    fmt = f", clones set to format {a.as_format}" if a.as_format else ""
    print(f"code: {a.code or 'this checkout'}{fmt}\n")
    print("| store | op | wall s | op s | peak RSS MiB | +RSS MiB | +wall ms | vs empty |")
    print("|---|---|---|---|---|---|---|---|")
    verdicts: dict[str, str] = {}
    for r in rows:
        b = base[r["op"]]
        d_rss, d_wall = r["maxrss_mib"] - b["maxrss_mib"], r["wall_s"] - b["wall_s"]
        ratio = r["wall_s"] / b["wall_s"]
        if r["store"] != "empty" and r["op"] != "read-first":
            if r["op"] in ("read", "save1k"):
                ok = d_rss <= RSS_TARGET_MIB and d_wall <= WALL_TARGET_S
                verdicts[f"{r['store']} {r['op']}"] = "met" if ok else "MISSED"
            else:
                verdicts[f"{r['store']} {r['op']}"] = "met" if ratio <= BIG_TARGET else "MISSED"
        print(
            f"| {r['store']} | {r['op']} | {r['wall_s']:.3f} | {r['op_s']:.3f} | "
            f"{r['maxrss_mib']:.1f} | {d_rss:+.1f} | {1000 * d_wall:+.0f} | {ratio:.2f}x |"
        )
    print(
        "\ntargets: read/save1k +10 MiB and +30 ms; save-big/save-90 within 5% of the empty store"
    )
    for k, v in verdicts.items():
        print(f"  {k}: {v}")
    slopes: dict[str, dict[str, float]] = {}
    for label, _, _, objects in stores[1:]:
        if objects:
            for op in ("read", "save1k"):
                r = next(x for x in rows if x["store"] == label and x["op"] == op)
                slope = (r["maxrss_mib"] - base[op]["maxrss_mib"]) * MiB / objects
                slopes.setdefault(label, {})[op] = slope
                print(
                    f"  {label} ({objects} objects) {op}: {slope:.2f} bytes of RSS per object"
                    f" -> {slope * 16e6 / MiB:.0f} MiB at 16M objects"
                )
    if gc_rows:
        print(f"\n## gc of the real store after deleting half its models ({doc['models']} models)")
        print(
            "| delete | models deleted | delete s | gc s | peak RSS MiB | written MiB | "
            "read to repack MiB | freed MiB | gc s/GiB written | cp+sync of as many bytes s | "
            "gc / cp |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for mode in modes:
            ms = [x for x in gc_rows if x["mode"] == mode]
            m = _med(ms)
            per = m["gc_s"] / (m["written"] / GiB) if m["written"] >= MiB else float("nan")
            vs = m["gc_s"] / m["cp_s"] if m["cp_s"] else float("nan")
            print(
                f"| {mode} | {m['deleted']:.0f} | {m['delete_s']:.2f} | {m['gc_s']:.2f} | "
                f"{m['maxrss_mib']:.1f} | {m['written'] / MiB:.0f} | "
                f"{m['repack_read'] / MiB:.0f} | "
                f"{m['freed'] / MiB:.0f} | {per:.2f} | {m['cp_s']:.2f} | {vs:.2f}x |"
            )
            ok = m["maxrss_mib"] < GC_RSS_TARGET_MIB
            print(f"  {mode}: peak RSS < {GC_RSS_TARGET_MIB} MiB: {'met' if ok else 'MISSED'}")
        fit = _gc_fit(gc_rows)
        if fit is not None:
            print(
                f"  gc s ~ {fit[0]:.2f} + {fit[1]:.2f} x GiB written (least squares over "
                f"{len(gc_rows)} gc runs of {len(modes)} modes; cp + sync: "
                f"{fit[2]:.2f} s/GiB)"
            )
    fit = _gc_fit(gc_rows)
    results = {
        "code": a.code or "this checkout",
        "as_format": a.as_format,
        "gc_fit": None
        if fit is None
        else dict(zip(("s", "s_per_gib", "cp_s_per_gib"), fit, strict=True)),
        "real": doc,
        "runs": a.runs,
        "rows": rows,
        "gc": gc_rows,
        "rss_bytes_per_object": slopes,
        "verdicts": verdicts,
        "total_s": time.perf_counter() - t0,
    }
    line = json.dumps(results)
    print("\n" + line)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
