"""A fresh machine's first pull from a remote of many packs (issue 18 point 3).

Builds a ``file://`` remote of ``--packs`` packs (one small version pushed at a time, so
one pack each, as a team's CI would), then, in a fresh process with an empty store, pulls
one 1 KiB tag and reports the wall time (Python start included), the requests the pull
made and how many index files (per-pack ``.idx`` and catalogue ``.cat``) it read.

Targets: at most 20 remote files read and under 1 s on ``file://``.

``--backend s3`` (or ``file,s3``, the default) does the same through moto's S3 server
(``moto.server``'s WSGI app on 127.0.0.1, in its own process, as ``tests/conftest.py``
and ``bench_remote.py`` run it), and reports the HTTP requests the server received
during the pull (a counting WSGI middleware around moto's app: every request, whatever
the client) beside modelvault's own count. The S3 remote is built by ``--s3-build``:
``copy`` (default: the ``file://`` remote's files put into the bucket as they are, the
same bytes and keys a push writes) or ``push`` (``--packs`` pushes to the bucket).

    python benchmarks/bench_catalogue.py [--packs 1000] [--runs 3] [--backend file,s3]
        [--s3-build copy|push] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from baselines import serve_on_loopback

COUNT_PATH = "/__bench_requests"  # not an S3 key: bucket names have no underscore

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import modelvault
from modelvault.remote.transport import wrapping
from modelvault.remote.wrappers import Metered
seen = {"idx": 0, "cat": 0, "requests": 0}
meters = []
def wrap(t):
    m = Metered(t)
    meters.append(m)
    orig = m.get
    def get(key):
        if key.endswith(".idx"): seen["idx"] += 1
        if key.endswith(".cat"): seen["cat"] += 1
        return orig(key)
    m.get = get
    return m
store = modelvault.Store(sys.argv[1])
url = sys.argv[2]
if len(sys.argv) > 4:  # an S3 endpoint: a fresh machine configures its remote
    modelvault.remotes.add("r", url, store=store, endpoint_url=sys.argv[4])
    url = "r"
with wrapping(wrap):
    store.pull(sys.argv[3], url)
seen["requests"] = sum(m.requests for m in meters)
seen["wall"] = time.perf_counter() - t0
print(json.dumps(seen))
"""


def build(url: str, packs: int, work: Path, options: dict[str, Any]) -> None:
    import modelvault

    store = modelvault.Store(work / "source")
    if options:
        modelvault.remotes.add("r", url, store=store, **options)
        url = "r"
    src = work / "src"
    src.mkdir(exist_ok=True)
    for i in range(packs):
        (src / "w.bin").write_bytes(os.urandom(1024))
        store.save(src, f"m:v{i:05d}")
        store.push(f"m:v{i:05d}", url)
        if i % 100 == 99:
            print(f"  pushed {i + 1}/{packs}", file=sys.stderr)


def _serve(port: int) -> None:
    """moto's S3 app (as ``ThreadedMotoServer`` serves it), counting every request."""
    import logging
    import threading
    from collections import Counter

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = DomainDispatcherApplication(create_backend_app)
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def counted(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == COUNT_PATH:
            with lock:
                body = json.dumps(counts).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        with lock:
            counts[environ["REQUEST_METHOD"]] += 1
        return app(environ, start_response)

    server = make_server("127.0.0.1", port, counted, True, request_handler=MotoRequestHandler)
    server.serve_forever()


def start_s3() -> tuple[multiprocessing.process.BaseProcess, str]:
    for k, v in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(k, v)
    return serve_on_loopback(_serve, tries=400)


def server_requests(endpoint: str) -> dict[str, int]:
    with urllib.request.urlopen(endpoint + COUNT_PATH) as r:
        return dict(json.loads(r.read()))


def first_pull(
    url: str, tag: str, runs: int, work: Path, endpoint: str | None = None
) -> list[dict[str, float]]:
    out = []
    for _ in range(runs):
        dest = work / f"fresh-{uuid.uuid4().hex[:8]}"
        before = server_requests(endpoint) if endpoint else {}
        res = subprocess.run(
            [sys.executable, "-c", CHILD, str(dest), url, tag, *([endpoint] if endpoint else [])],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise SystemExit(f"first pull from {url} failed:\n{res.stderr}")
        doc = json.loads(res.stdout.strip().splitlines()[-1])
        if endpoint:
            after = server_requests(endpoint)
            by = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            doc["server_requests"] = sum(by.values())
            doc.update({f"server_{k}": v for k, v in by.items() if v})
        out.append(doc)
    return out


def _report(title: str, rows: list[dict[str, float]], runs: int) -> dict[str, Any]:
    keys = sorted({k for r in rows for k in r})
    med = {k: statistics.median(r.get(k, 0) for r in rows) for k in keys}
    files = med["idx"] + med["cat"]
    print(f"\n## {title} (medians of {runs})\n")
    s3 = "server_requests" in med
    print(
        "| wall s (Python start incl.) | requests (modelvault) |"
        + (" HTTP requests (server) |" if s3 else "")
        + " .idx read | .cat read | files |"
    )
    print("|---|---|" + ("---|" if s3 else "") + "---|---|---|")
    extra = f" {med['server_requests']:.0f} |" if s3 else ""
    print(
        f"| {med['wall']:.3f} | {med['requests']:.0f} |{extra} {med['idx']:.0f} | "
        f"{med['cat']:.0f} | {files:.0f} |"
    )
    if s3:
        by = ", ".join(
            f"{k[7:]} {v:.0f}"
            for k, v in med.items()
            if k.startswith("server_") and k != "server_requests"
        )
        print(f"\nserver requests by method: {by}")
    ok = files <= 20 and (s3 or med["wall"] < 1.0)
    target = "<= 20 index files" + ("" if s3 else " and < 1 s")
    print(f"\ntarget {target}: {'met' if ok else 'MISSED'}")
    return {"median": med, "samples": rows, "target_met": ok}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packs", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--backend", default="file,s3", help="file, s3 or file,s3")
    ap.add_argument("--s3-build", choices=("copy", "push"), default="copy")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    backends = args.backend.split(",")
    results: dict[str, Any] = {"packs": args.packs, "runs": args.runs}
    with tempfile.TemporaryDirectory(prefix="bench-cat-") as tmp:
        work = Path(tmp)
        url = (work / "remote").as_uri()
        t = time.perf_counter()
        build(url, args.packs, work, {})
        built = time.perf_counter() - t
        packs = len(list((work / "remote" / "packs").glob("*.pack")))
        cats = len(list((work / "remote" / "index").glob("*.cat")))
        print(
            f"remote of {packs} packs, {cats} catalogues, built in {built:.0f} s by "
            f"{args.packs} pushes",
            file=sys.stderr,
        )
        results.update({"remote_packs": packs, "catalogues": cats, "build_s": built})
        if "file" in backends:
            rows = first_pull(url, "m:v00000", args.runs, work)
            title = f"first pull of a 1 KiB tag from file:// with {packs} packs, {cats} catalogues"
            results["file"] = _report(title, rows, args.runs)
        if "s3" in backends:
            import s3fs

            proc, endpoint = start_s3()
            try:
                fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
                bucket = f"bench-{uuid.uuid4().hex[:10]}"
                fs.mkdir(bucket)
                s3url = f"s3://{bucket}/mv"
                t = time.perf_counter()
                if args.s3_build == "copy":
                    fs.put(str(work / "remote") + "/", f"{bucket}/mv/", recursive=True)
                else:
                    build(s3url, args.packs, work / "s3", {"endpoint_url": endpoint})
                s3_built = time.perf_counter() - t
                keys = fs.find(f"{bucket}/mv")
                s3_packs = sum(k.endswith(".pack") for k in keys)
                s3_cats = sum(k.endswith(".cat") for k in keys)
                print(f"S3 remote built ({args.s3_build}) in {s3_built:.0f} s", file=sys.stderr)
                rows = first_pull(s3url, "m:v00000", args.runs, work, endpoint)
                title = (
                    f"first pull of a 1 KiB tag through the S3 server (moto) with {s3_packs} "
                    f"packs, {s3_cats} catalogues, built by {args.s3_build}"
                )
                results["s3"] = {
                    **_report(title, rows, args.runs),
                    "build": args.s3_build,
                    "build_s": s3_built,
                    "remote_packs": s3_packs,
                    "catalogues": s3_cats,
                }
            finally:
                proc.terminate()
                proc.join()
    print("\n" + json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
