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
  folder followed by BLAKE3 of each file (the order alternates per run): target <= 1.2x;
- an alias move: ``move_remote_alias`` alone (one read and one conditional write), and
  ``push("bench@prod")`` of a version the remote holds (beside a plain push of it): the
  requests each makes.

Medians over ``--runs``. Markdown report on stdout, raw samples with ``--json``.

    python benchmarks/bench_remote_gc.py --workdir /var/tmp/rgc --delete newest
    python benchmarks/bench_remote_gc.py --workdir /var/tmp/rgc --delete every-other
    python benchmarks/bench_remote_gc.py --size-mib 16 --versions 4 --runs 1   # smoke run

**moto's memory.** moto keeps each S3 object in a ``tempfile.SpooledTemporaryFile``
that moves to a (deleted) file in ``$TMPDIR`` past ``MOTO_S3_DEFAULT_KEY_BUFFER_SIZE``
bytes (default ~5 MiB). This script starts the server with that buffer at 1 MiB and
``TMPDIR=<workdir>/moto-tmp``, so the bucket's bytes (~2.3 GiB for 10 versions of 1 GiB)
live on the work disk and in the page cache, not in moto's heap: the server's resident
memory is bounded by the requests in flight (a whole object is copied on each GET,
ranged or not; ~4 at once), not by the bucket. The report gives moto's peak resident
memory (``VmHWM``) and the bytes of its files. Before it starts, the script prints the
disk it needs (the family, the store, moto's files, the baseline's copy) and the
expected run time, and refuses when the work disk has too little room.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from baselines import MIB, drop_tree, markdown_table, median
from bench_remote import _start_server, _timed
from workload import generate_family

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import modelvault
from modelvault.aliases import AliasValue
from modelvault.remote.aliases import move_remote_alias
from modelvault.remote.transport import Metered, Retrying, Transport, open_transport, wrapping

GIB = 1024 * MIB
MOTO_KEY_BUFFER = 1 * MIB  # moto spools objects larger than this to files in $TMPDIR

# Throughputs for the time estimate, from RESULTS.md (bench_remote at 1 GiB on this
# machine's moto: first push 1 GiB in ~21 s, pull 1 GiB ~10 s, s3fs.get 1.15 GiB ~8 s)
# and the save figures of bench_store; generating the family wrote ~300 MiB/s at
# 192 MiB (page cache), taken as 150 MiB/s for 10 GiB.
EST_PUSH = 50 * MIB  # bytes/s sent to moto
EST_VERIFY = 100 * MIB  # bytes/s of ranged reads + BLAKE3
EST_GET_HASH = 120 * MIB  # bytes/s of s3fs.get + BLAKE3
EST_SAVE = 600 * MIB  # bytes/s of new bytes saved
EST_GENERATE = 150 * MIB  # bytes/s of family written
EST_FIXED = 4.0  # seconds per push (marker, ref, lock, listing) and per step


def _moto_usage(pid: int) -> tuple[int, int]:
    """moto's peak resident memory (VmHWM) and the bytes of the files it holds open in
    its spool folder, from /proc (0, 0 where there is no /proc)."""
    peak = held = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if "moto-tmp" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                    held += os.stat(f"/proc/{pid}/fd/{fd}").st_size
            except OSError:
                continue
    except OSError:
        pass
    return peak, held


def _alias_moves(store: modelvault.Store, url: str, endpoint: str, version: str) -> dict[str, int]:
    """Requests of an alias move: the move alone (create, then ten moves), and
    ``push("bench@prod")`` of a version the remote holds beside a plain push of it."""
    meter = Metered(open_transport(url, {"endpoint_url": endpoint}))
    t = Retrying(meter)
    model_id = store.get(f"bench:{version}").ref.model_id
    move_remote_alias(t, AliasValue("bench", "movebench", version, model_id))
    created = meter.requests
    for i in range(10):
        move_remote_alias(t, AliasValue("bench", "movebench", f"x{i}", model_id))
    moved = (meter.requests - created) / 10
    t.delete("aliases/bench/movebench")
    plain = store.push(f"bench:{version}", "gcbench").requests
    store.set_alias(f"bench:{version}", "prod")
    with_alias = store.push("bench@prod", "gcbench").requests
    return {
        "move_create_requests": created,
        "move_requests": int(moved),
        "push_plain_requests": plain,
        "push_alias_requests": with_alias,
    }


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
    moto_pid: int = 0,
) -> dict[str, Any]:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    url = f"s3://{bucket}/mv"
    modelvault.remotes.add("gcbench", url, store=store, endpoint_url=endpoint, replace=True)
    sample: dict[str, Any] = {}
    started = time.perf_counter()
    for v in range(versions):
        print(f"  run {k}: push bench:v{v}", file=sys.stderr)
        store.push(f"bench:v{v}", "gcbench")
    sample["push_all_s"] = time.perf_counter() - started
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
    kept = [v for v in range(versions) if v not in doomed]
    sample.update(_alias_moves(store, url, endpoint, f"v{kept[-1]}"))
    sample["moto_peak_rss"], sample["moto_file_bytes"] = _moto_usage(moto_pid)
    fs.rm(bucket, recursive=True)
    return sample


def _plan(args: argparse.Namespace, work: Path) -> tuple[int, float]:
    """The disk the run needs at its peak (bytes) and its expected duration (seconds),
    from the sizes and the throughputs above."""
    size = args.size_mib * MIB
    fam = work / f"family-{args.size_mib}-{args.versions}"
    have_family = (fam / "manifest.json").is_file()
    # each version changes ~10% of the one before: the remote and the store hold about
    # the first version plus a tenth of each other one (RESULTS: 558 MiB for 10 x 256)
    stored = size * (1 + 0.135 * (args.versions - 1))
    disk = (0 if have_family else size * args.versions) + 3 * stored  # store, moto, copy
    seconds = 0.0 if have_family else size * args.versions / EST_GENERATE
    seconds += stored / EST_SAVE + EST_FIXED * args.versions
    per_run = stored / EST_PUSH + EST_FIXED * args.versions  # pushes
    per_run += stored / EST_VERIFY + stored / EST_GET_HASH + 4 * EST_FIXED  # verify, baseline
    per_run += 0.2 * stored / EST_VERIFY + 2 * EST_FIXED  # gc: metadata, repacks, deletes
    return int(disk), seconds + args.runs * per_run


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
    need, expected = _plan(args, work)
    free = shutil.disk_usage(work).free
    print(
        f"needs ~{need / GIB:.1f} GiB on {work} ({free / GIB:.1f} GiB free); moto's bucket "
        f"lives in files there, its memory stays ~1 GiB at most; expected run time "
        f"~{expected / 60:.0f} min",
        file=sys.stderr,
    )
    if need > free:
        raise SystemExit(f"not enough room on {work}: give --workdir on a larger disk")
    moto_tmp = work / "moto-tmp"
    moto_tmp.mkdir(exist_ok=True)
    os.environ["TMPDIR"] = str(moto_tmp)  # moto (a spawned process) inherits both
    os.environ["MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"] = str(MOTO_KEY_BUFFER)
    began = time.perf_counter()
    fam = work / f"family-{args.size_mib}-{args.versions}"
    print(f"workload {args.versions} x {args.size_mib} MiB in {fam}", file=sys.stderr)
    generate_family(fam, args.size_mib, args.versions, 0)
    store_path = work / "store"
    drop_tree(store_path)
    store = modelvault.Store(store_path)
    for v in range(args.versions):
        store.save(fam / f"v{v}", f"bench:v{v}")
    proc, endpoint = _start_server()
    os.environ.pop("TMPDIR")  # (only the server's objects go there)
    tempfile.tempdir = None
    samples = []
    try:
        for k in range(args.runs):
            samples.append(
                one_run(k, store, args.versions, endpoint, work, args.delete, proc.pid or 0)
            )
    finally:
        proc.kill()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            drop_tree(store_path)
    took = time.perf_counter() - began

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
    moves = [
        ("move_remote_alias: read + conditional write", "move_requests"),
        ("  the first (create, If-None-Match: *)", "move_create_requests"),
        ("push of a version the remote holds (no move)", "push_plain_requests"),
        ('push("bench@prod") of it: + name lock, ref check, move', "push_alias_requests"),
    ]
    print()
    print(markdown_table(["alias move", "requests"], [[a, str(int(med(k)))] for a, k in moves]))
    print(
        f"\nmoto: peak resident memory {max(s['moto_peak_rss'] for s in samples) / MIB:.0f} MiB, "
        f"its files {max(s['moto_file_bytes'] for s in samples) / MIB:.0f} MiB (bucket "
        f"before its removal); pushes of the {args.versions} versions "
        f"{med('push_all_s'):.0f} s a run; whole script {took / 60:.1f} min "
        f"(expected ~{expected / 60:.0f})"
    )
    if args.json:
        args.json.write_text(json.dumps({"samples": samples}, indent=2))


if __name__ == "__main__":
    main()
