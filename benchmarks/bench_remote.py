"""Remote benchmark (issue 4): push and pull against a local S3 server, beside s3fs itself.

Workload (``workload.py``): a ~``--size-mib`` safetensors model (v0) and a version (v1)
with ~10% of its tensor bytes changed and every offset shifted. The S3 server is moto's
(``ThreadedMotoServer``) in its own process on 127.0.0.1, so it does not share a GIL with
the client. Both models are saved once into a local store (untimed). Each run uses a fresh
bucket and measures, next to its baseline in the same run (the order alternates):

- ``push v0`` (first push, empty remote)    vs ``s3fs.put(v0 folder)``     target <= 1.2x
- ``push v1`` after v0: bytes sent <= 1.15x the changed bytes, time <= 0.25x ``push v0``
- ``pull v0`` into an empty store (durable) vs ``s3fs.get(v0 folder)``    target <= 1.2x
- requests of each push and pull (they grow with packs, not chunks)

Medians over ``--runs``. Markdown report on stdout, raw samples with ``--json``.

    python benchmarks/bench_remote.py                      # 1024 MiB, 3 runs
    python benchmarks/bench_remote.py --size-mib 64 --runs 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from baselines import MIB, drop_tree, markdown_table, median, serve_on_loopback
from workload import generate_family

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import modelvault


def _serve(port: int) -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    while True:
        time.sleep(3600)


def _start_server() -> tuple[multiprocessing.process.BaseProcess, str]:
    return serve_on_loopback(_serve)


def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def one_run(
    k: int, store: modelvault.Store, fam: Path, endpoint: str, work: Path
) -> dict[str, Any]:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    url = f"s3://{bucket}/mv"
    modelvault.remotes.add("bench", url, store=store, endpoint_url=endpoint)
    sample: dict[str, Any] = {}
    ours_first = k % 2 == 1

    def baseline_put() -> None:
        sample["s3fs_put_s"], _ = _timed(
            lambda: fs.put(str(fam / "v0"), f"{bucket}/plain/v0", recursive=True)
        )

    def push_v0() -> None:
        sample["push_v0_s"], r = _timed(lambda: store.push("bench:v0", "bench"))
        sample["push_v0_sent"], sample["push_v0_requests"] = r.sent, r.requests

    def same_objects_put() -> None:  # context: the store's pack files, put as plain objects
        packs = sorted(str(p) for p in store.repo.objects.pack_dir.glob("*.pack"))
        sample["s3fs_put_packs_s"], _ = _timed(lambda: fs.put(packs, f"{bucket}/raw/"))

    for step in (push_v0, baseline_put) if ours_first else (baseline_put, push_v0):
        print(f"  run {k}: {step.__name__}", file=sys.stderr)
        step()

    same_objects_put()
    print(f"  run {k}: push_v1", file=sys.stderr)
    sample["push_v1_s"], r = _timed(lambda: store.push("bench:v1", "bench"))
    sample["push_v1_sent"], sample["push_v1_requests"] = r.sent, r.requests

    pulled = work / f"pulled-{k}"

    def baseline_get() -> None:
        drop_tree(pulled)
        sample["s3fs_get_s"], _ = _timed(
            lambda: fs.get(f"{bucket}/plain/v0", str(pulled) + "/", recursive=True)
        )

    def pull_v0() -> None:
        empty = modelvault.Store(work / f"empty-{k}")
        modelvault.remotes.add("bench", url, store=empty, endpoint_url=endpoint)
        os.sync()
        sample["pull_v0_s"], r = _timed(lambda: empty.pull("bench:v0", "bench"))
        sample["pull_v0_received"], sample["pull_v0_requests"] = r.received, r.requests
        sample["pull_v0_objects"] = r.objects
        drop_tree(empty.path)

    for step in (pull_v0, baseline_get) if ours_first else (baseline_get, pull_v0):
        print(f"  run {k}: {step.__name__}", file=sys.stderr)
        os.sync()
        step()
    drop_tree(pulled)
    sample["s3fs_get_packs_s"], _ = _timed(
        lambda: fs.get(f"{bucket}/raw/", str(pulled) + "/", recursive=True)
    )
    drop_tree(pulled)
    fs.rm(bucket, recursive=True)
    return sample


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mv-bench-remote-"))
    work.mkdir(parents=True, exist_ok=True)
    fam = work / f"family-{args.size_mib}"
    print(f"workload {args.size_mib} MiB in {fam}", file=sys.stderr)
    manifest = generate_family(fam, args.size_mib, 2, 0)
    changed = manifest.changed_bytes[1]
    store_path = work / "store"
    drop_tree(store_path)
    store = modelvault.Store(store_path)
    store.save(fam / "v0", "bench:v0")
    store.save(fam / "v1", "bench:v1")
    proc, endpoint = _start_server()
    samples = []
    try:
        for k in range(args.runs):
            samples.append(one_run(k, store, fam, endpoint, work))
    finally:
        proc.kill()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    def med(key: str) -> float:
        return median([s[key] for s in samples])

    def row(step: str, ours: str, base: str, ratio: float, target: str) -> list[str]:
        return [step, ours, base, f"{ratio:.2f}x", target]

    push0, put, push1 = med("push_v0_s"), med("s3fs_put_s"), med("push_v1_s")
    pull0, get, sent1 = med("pull_v0_s"), med("s3fs_get_s"), med("push_v1_sent")
    rows = [
        row("first push v0", f"{push0:.1f} s", f"s3fs.put {put:.1f} s", push0 / put, "<= 1.2x"),
        row("push v1 (time)", f"{push1:.1f} s", f"push v0 {push0:.1f} s", push1 / push0, "<=0.25x"),
        row(
            "push v1 (bytes sent)",
            f"{sent1 / MIB:.1f} MiB",
            f"changed {changed / MIB:.1f} MiB",
            sent1 / changed,
            "<= 1.15x",
        ),
        row(
            "pull v0 (empty store)",
            f"{pull0:.1f} s",
            f"s3fs.get {get:.1f} s",
            pull0 / get,
            "<=1.2x",
        ),
    ]
    rows += [
        ["context: s3fs.put of the store's pack files (v0+v1)", f"{med('s3fs_put_packs_s'):.1f} s",
         "", "", ""],
        ["context: s3fs.get of those pack files", f"{med('s3fs_get_packs_s'):.1f} s", "", "", ""],
    ]  # fmt: skip
    print(f"## bench_remote: {args.size_mib} MiB, {args.runs} runs (medians), moto S3\n")
    print(markdown_table(["step", "modelvault", "baseline (same run)", "ratio", "target"], rows))
    reqs = [
        ["push v0", int(med("push_v0_requests"))],
        ["push v1", int(med("push_v1_requests"))],
        ["pull v0", int(med("pull_v0_requests"))],
    ]
    print(f"\nrequests (objects pulled: {int(med('pull_v0_objects'))}):\n")
    print(markdown_table(["operation", "requests"], reqs))
    if args.json:
        args.json.write_text(json.dumps({"samples": samples, "changed_bytes": changed}, indent=2))


if __name__ == "__main__":
    main()
