"""Remote gc and verify benchmark (issue 19) against a local S3 server, beside s3fs itself.

Workload (``workload.py``): a family of ``--versions`` versions (default 10) of a
~``--size-mib`` safetensors model, each ~10% changed from the one before, saved into a
local store and pushed one by one to a fresh bucket on moto's S3 server (its own process
on 127.0.0.1). Then, measured:

- ``gc_remote`` after ``delete_remote`` of every other version (half of them): time,
  requests (every request the gc made, lock included), packs before and after, bytes
  freed, and bytes **rewritten** by repacking (uploaded) and read for it — requests
  should grow with packs, not chunks;
- ``verify_remote`` of the remote vs ``s3fs.get`` of the same pack files into a local
  folder followed by BLAKE3 of each file (the order alternates per run): target <= 1.2x.

Medians over ``--runs``. Markdown report on stdout, raw samples with ``--json``.

    python benchmarks/bench_remote_gc.py                           # 1024 MiB, 10 versions
    python benchmarks/bench_remote_gc.py --size-mib 16 --versions 4 --runs 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from baselines import MIB, drop_tree, markdown_table, median
from bench_remote import _start_server, _timed
from workload import generate_family

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import modelvault
from modelvault.remote.transport import Metered, Transport, wrapping


def _metered(fn: Any) -> tuple[float, Any, Metered]:
    """Run ``fn`` with every transport it opens counted; (seconds, value, the meter)."""
    meters: list[Metered] = []

    def wrap(t: Transport) -> Transport:
        meters.append(Metered(t))
        return meters[-1]

    with wrapping(wrap):
        seconds, value = _timed(fn)
    total = Metered.__new__(Metered)
    total.requests = sum(m.requests for m in meters)
    total.sent = sum(m.sent for m in meters)
    total.received = sum(m.received for m in meters)
    return seconds, value, total


def _get_and_hash(fs: Any, bucket: str, dest: Path) -> int:
    from blake3 import blake3

    drop_tree(dest)
    fs.invalidate_cache()
    fs.get(f"{bucket}/mv/packs/", str(dest) + "/", recursive=True)
    n = 0
    for path in sorted(dest.rglob("*.pack")):
        h = blake3()
        with open(path, "rb") as f:
            while block := f.read(8 * MIB):
                h.update(block)
                n += len(block)
        h.digest()
    return n


def one_run(
    k: int,
    store: modelvault.Store,
    versions: int,
    endpoint: str,
    work: Path,
    delete: str = "every-other",
) -> dict[str, Any]:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    url = f"s3://{bucket}/mv"
    modelvault.remotes.add("gcbench", url, store=store, endpoint_url=endpoint, replace=True)
    for v in range(versions):
        store.push(f"bench:v{v}", "gcbench")
    sample: dict[str, Any] = {}
    fs.invalidate_cache()
    sample["packs_before"] = len(fs.glob(f"{bucket}/mv/packs/*.pack"))
    sample["bytes_before"] = sum(fs.du(f"{bucket}/mv/packs/", total=False).values())
    # every other version (v0, v2, ...): each version is made from the one before, so
    # what a deleted one changed lives on in the next and little is garbage; "newest":
    # the newer half, whose changes no kept version holds
    doomed = range(0, versions, 2) if delete == "every-other" else range(versions // 2, versions)
    for v in doomed:
        store.delete_remote(f"bench:v{v}", "gcbench")
    print(f"  run {k}: gc_remote", file=sys.stderr)
    seconds, freed, meter = _metered(lambda: store.gc_remote("gcbench"))
    sample.update(
        gc_s=seconds,
        gc_freed=freed,
        gc_requests=meter.requests,
        gc_rewritten=meter.sent,
        gc_read=meter.received,
    )
    fs.invalidate_cache()
    sample["packs_after"] = len(fs.glob(f"{bucket}/mv/packs/*.pack"))
    sample["bytes_after"] = sum(fs.du(f"{bucket}/mv/packs/", total=False).values())

    def verify() -> None:
        seconds, report, meter = _metered(lambda: store.verify_remote("gcbench"))
        assert report.ok, report
        sample.update(verify_s=seconds, verify_requests=meter.requests)
        sample["verify_bytes"] = report.bytes_checked

    def baseline() -> None:
        sample["get_hash_s"], sample["get_hash_bytes"] = _timed(
            lambda: _get_and_hash(fs, bucket, work / f"got-{k}")
        )

    for step in (verify, baseline) if k % 2 == 0 else (baseline, verify):
        print(f"  run {k}: {step.__name__}", file=sys.stderr)
        step()
    drop_tree(work / f"got-{k}")
    fs.rm(bucket, recursive=True)
    return sample


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--versions", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--delete", choices=["every-other", "newest"], default="every-other", help="which half"
    )
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mv-bench-rgc-"))
    work.mkdir(parents=True, exist_ok=True)
    fam = work / f"family-{args.size_mib}-{args.versions}"
    print(f"workload {args.versions} x {args.size_mib} MiB in {fam}", file=sys.stderr)
    generate_family(fam, args.size_mib, args.versions, 0)
    store_path = work / "store"
    drop_tree(store_path)
    store = modelvault.Store(store_path)
    for v in range(args.versions):
        store.save(fam / f"v{v}", f"bench:v{v}")
    proc, endpoint = _start_server()
    samples = []
    try:
        for k in range(args.runs):
            samples.append(one_run(k, store, args.versions, endpoint, work, args.delete))
    finally:
        proc.kill()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    def med(key: str) -> float:
        return median([s[key] for s in samples])

    print(
        f"## bench_remote_gc: {args.versions} versions of {args.size_mib} MiB, half deleted "
        f"({args.delete}), {args.runs} runs (medians), moto S3\n"
    )
    rows = [
        ["gc_remote", f"{med('gc_s'):.1f} s", f"{int(med('gc_requests'))} requests",
         f"packs {int(med('packs_before'))} -> {int(med('packs_after'))}"],
        ["  bytes freed (returned)", f"{med('gc_freed') / MIB:.1f} MiB", "",
         f"packs {med('bytes_before') / MIB:.1f} -> {med('bytes_after') / MIB:.1f} MiB"],
        ["  bytes rewritten by repacking (sent)", f"{med('gc_rewritten') / MIB:.1f} MiB",
         f"read {med('gc_read') / MIB:.1f} MiB", ""],
    ]  # fmt: skip
    print(markdown_table(["step", "modelvault", "", ""], rows))
    verify, base = med("verify_s"), med("get_hash_s")
    print()
    print(
        markdown_table(
            ["step", "modelvault", "baseline (same run)", "ratio", "target"],
            [
                [
                    "verify_remote",
                    f"{verify:.1f} s ({int(med('verify_requests'))} requests)",
                    f"s3fs.get + BLAKE3 {base:.1f} s",
                    f"{verify / base:.2f}x",
                    "<= 1.2x",
                ]
            ],
        )
    )
    if args.json:
        args.json.write_text(json.dumps({"samples": samples}, indent=2))


if __name__ == "__main__":
    main()
