"""What the fault-injection harness works on: source folders, template stores and a
``file://`` remote built once, copied fresh for each fault, and the invariant checks run
after each fault (``verify`` ok, every tag whole or absent, nothing left behind).

Builds on the crash tests' helpers: ``Source`` (a folder and the digest of each file)
from tests/integration/test_crash.py and ``leftovers`` from tests/integration/_procs.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _procs import leftovers
from test_crash import Source, _digest_file

import modelvault
from modelvault import Store

MIB = 1024 * 1024
SHARED = 8 * MIB  # the bytes A, B and C share
OWN = 4 * MIB  # the bytes each of them has alone
DELETE_VERSIONS = 40  # versions of "m" in the delete template


def make_source(root: Path, shared: bytes, rng: np.random.Generator, own: int = OWN) -> Source:
    """A model folder: one large weights file (shared head + own tail) and small files."""
    (root / "sub").mkdir(parents=True)
    (root / "weights.bin").write_bytes(shared + rng.bytes(own))
    (root / "config.json").write_text('{"hidden": 768, "layers": 12}\n' * 40)
    for i in range(6):
        (root / "sub" / f"part{i}.txt").write_bytes(rng.bytes(3000 + 997 * i))
    (root / "empty.txt").write_bytes(b"")
    return Source(root)


def folder_matches(folder: Path, src: Source) -> bool:
    """``folder`` holds exactly the files of ``src``, byte for byte."""
    files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    if sorted(files) != sorted(src.digests):
        return False
    return all(_digest_file(files[rel]) == digest for rel, digest in src.digests.items())


@dataclass
class World:
    """Sources A, B, C and the templates every fault starts from."""

    root: Path
    a: Source
    b: Source
    c: Source
    plain: Path  # store: base:v0 = A
    gcstore: Path  # store: base:v0 = A, keep:v1 = B, dead:v1 = C deleted (both cached)
    delstore: Path  # store: base:v0 = A, m:<40 versions> = B
    remote: Path  # file:// remote folder: m:v1 = B
    archive: str  # archive of m:v1 = B
    delete_tags: list[str] = field(default_factory=list)

    def copy(self, template: Path, dest: Path) -> Path:
        shutil.copytree(template, dest, symlinks=True)
        return dest


def build_world(root: Path, seed: int = 16) -> World:
    rng = np.random.default_rng(seed)
    shared = rng.bytes(SHARED)
    a = make_source(root / "src-a", shared, rng)
    b = make_source(root / "src-b", shared, rng)
    c = make_source(root / "src-c", shared, rng)

    plain = root / "plain"
    Store(plain).save(a.root, "base:v0")

    other = Store(root / "other")
    other.save(b.root, "m:v1")
    archive = other.export_model("m:v1", str(root / "m-v1.bentomodel"))
    remote = root / "remote"
    other.push("m:v1", f"file://{remote}")

    gcstore = root / "gcstore"
    g = Store(gcstore)
    g.save(c.root, "dead:v1")  # first: A's shared chunks then sit in C's packs
    g.save(a.root, "base:v0")
    g.save(b.root, "keep:v1")
    _ = g.get("dead:v1").path
    _ = g.get("keep:v1").path
    g.delete("dead:v1")

    delstore = root / "delstore"
    d = Store(delstore)
    d.save(a.root, "base:v0")
    tags = [str(d.save(b.root, "m").tag) for _ in range(DELETE_VERSIONS)]
    return World(root, a, b, c, plain, gcstore, delstore, remote, archive, tags)


def check_store(path: Path, whole: Mapping[str, Source], maybe: Mapping[str, Source]) -> set[str]:
    """The crash invariants of a local store; returns the tags of ``maybe`` present.

    ``verify`` passes; each tag of ``whole`` is listed and reads back byte-exact; each
    tag of ``maybe`` is listed and byte-exact, or absent; no other tag is listed.
    """
    store = Store(path)
    report = store.verify()
    assert report.ok, report
    listed = {str(m.tag) for m in store.list()}
    assert set(whole) <= listed, f"lost tags: {set(whole) - listed}"
    assert listed <= set(whole) | set(maybe), f"unexpected tags: {listed - set(whole)}"
    for tag in listed:
        src = whole[tag] if tag in whole else maybe[tag]
        assert src.matches(store.get(tag)), f"{tag} does not read back byte-exact"
    return listed & set(maybe)


def check_tags(path: Path, must: set[str], may: frozenset[str] | set[str] = frozenset()) -> None:
    """The store lists every tag of ``must``, maybe some of ``may``, and nothing else (a
    cheap check after a re-run; :func:`check_clean` then re-reads everything)."""
    listed = {str(m.tag) for m in Store(path).list()}
    assert must <= listed <= must | may, (listed, must, may)


def check_clean(path: Path, known: Mapping[str, Source]) -> None:
    """gc removes every temporary a killed process left, and keeps every tag whole."""
    store = Store(path)
    before = {str(m.tag) for m in store.list()}
    store.gc()
    left = leftovers(path)
    assert left == [], f"gc must remove what a killed process left: {left}"
    check_store(path, {t: known[t] for t in before}, {})


def check_remote(
    url: str, scratch: Path, whole: Mapping[str, Source], maybe: Mapping[str, Source]
) -> set[str]:
    """Every tag the remote lists pulls into an empty store and reads back byte-exact;
    returns the tags of ``maybe`` present."""
    store = Store(scratch)
    listed = {str(t) for t in store.list_remote(url)}
    assert set(whole) <= listed, f"remote lost tags: {set(whole) - listed}"
    assert listed <= set(whole) | set(maybe), f"unexpected remote tags: {listed}"
    for tag in sorted(listed):
        store.pull(tag, url)  # raises if an object is missing or damaged
        src = whole[tag] if tag in whole else maybe[tag]
        assert src.matches(store.get(tag)), f"remote {tag} does not read back byte-exact"
    assert store.verify().ok
    return listed & set(maybe)


@dataclass
class Case:
    """One writing operation: its template, arguments, and the checks after a fault.

    ``setup(dirs)`` copies the templates into the fresh folders ``dirs`` (store, remote,
    out) and returns the operation's arguments; ``check(dirs)`` asserts the invariants
    (tags whole or absent) and returns whether the operation's effect is present;
    ``rerun(dirs, present)`` re-runs the operation in this process.
    """

    op: str
    setup: Callable[[dict[str, Path]], dict[str, Any]]
    check: Callable[[dict[str, Path]], bool]
    rerun: Callable[[dict[str, Path], bool], None]
    known: Mapping[str, Source]  # every tag that may be in the store afterwards


def cases(w: World) -> dict[str, Case]:
    """The writing operations of the harness, keyed by :data:`_ops.OPS` name."""
    A = {"base:v0": w.a}
    B = {"m:v1": w.b}

    def plain(d: dict[str, Path], **args: Any) -> dict[str, Any]:
        w.copy(w.plain, d["store"])
        return args

    def saved_check(d: dict[str, Path]) -> bool:
        return bool(check_store(d["store"], A, B))

    def save_rerun(op: str) -> Callable[[dict[str, Path], bool], None]:
        def rerun(d: dict[str, Path], present: bool) -> None:
            from _ops import run_op

            tag = "m:v2" if present else "m:v1"
            run_op(op, str(d["store"]), {"src": str(w.b.root), "tag": tag})
            check_tags(d["store"], {*A, tag}, set(B))

        return rerun

    def import_rerun(d: dict[str, Path], present: bool) -> None:
        Store(d["store"]).import_model(w.archive)  # again: a no-op if it got in
        check_tags(d["store"], {*A, *B})

    def export_check(d: dict[str, Path]) -> bool:
        check_store(d["store"], A, {})
        dest = d["out"] / "base.bentomodel"
        if not dest.exists():
            return False
        Store(d["out"] / "check").import_model(str(dest))
        check_store(d["out"] / "check", A, {})
        return True

    def export_rerun(d: dict[str, Path], present: bool) -> None:
        dest = d["out"] / ("again.bentomodel" if present else "base.bentomodel")
        Store(d["store"]).export_model("base:v0", str(dest))
        Store(d["out"] / "check2").import_model(str(dest))
        check_store(d["out"] / "check2", A, {})

    def push_setup(d: dict[str, Path]) -> dict[str, Any]:
        w.copy(w.remote, d["remote"])
        return plain(d, tag="base:v0", remote=f"file://{d['remote']}")

    def push_check(d: dict[str, Path]) -> bool:
        check_store(d["store"], A, {})
        n = len(list((d["out"]).glob("scratch*")))
        got = check_remote(f"file://{d['remote']}", d["out"] / f"scratch{n}", B, A)
        return bool(got)

    def push_rerun(d: dict[str, Path], present: bool) -> None:
        Store(d["store"]).push("base:v0", f"file://{d['remote']}")
        check_remote(f"file://{d['remote']}", d["out"] / "scratch-rerun", {**A, **B}, {})

    def pull_setup(d: dict[str, Path]) -> dict[str, Any]:
        w.copy(w.remote, d["remote"])
        return plain(d, tag="m:v1", remote=f"file://{d['remote']}")

    def pull_rerun(d: dict[str, Path], present: bool) -> None:
        Store(d["store"]).pull("m:v1", f"file://{d['remote']}")
        check_tags(d["store"], {*A, *B})

    G = {"base:v0": w.a, "keep:v1": w.b}

    def gc_setup(d: dict[str, Path]) -> dict[str, Any]:
        w.copy(w.gcstore, d["store"])
        return {}

    def gc_check(d: dict[str, Path]) -> bool:
        check_store(d["store"], G, {})
        assert folder_matches(Path(Store(d["store"]).get("keep:v1").path), w.b)
        return True

    def gc_rerun(d: dict[str, Path], present: bool) -> None:
        Store(d["store"]).gc()
        assert Store(d["store"]).gc() == 0, "a second gc right after frees nothing"
        check_tags(d["store"], set(G))

    M = dict.fromkeys(w.delete_tags, w.b)

    def delete_setup(d: dict[str, Path]) -> dict[str, Any]:
        w.copy(w.delstore, d["store"])
        return {"tag": "m"}

    def delete_check(d: dict[str, Path]) -> bool:
        left = check_store(d["store"], A, M)
        return not left  # the effect: every version gone

    def delete_rerun(d: dict[str, Path], present: bool) -> None:
        store = Store(d["store"])
        if present:
            try:
                store.delete("m")
            except modelvault.NotFound:
                pass
            else:
                raise AssertionError("deleting a name with no version must raise NotFound")
        else:
            store.delete("m")
        check_tags(d["store"], set(A))

    def path_check(d: dict[str, Path]) -> bool:
        check_store(d["store"], A, {})
        return (d["store"] / "cache" / Store(d["store"]).get("base:v0").id).is_dir()

    def path_rerun(d: dict[str, Path], present: bool) -> None:
        assert folder_matches(Path(Store(d["store"]).get("base:v0").path), w.a)

    def checkout_setup(d: dict[str, Path]) -> dict[str, Any]:
        return plain(d, tag="base:v0", dest=str(d["out"] / "co"))

    def checkout_check(d: dict[str, Path]) -> bool:
        check_store(d["store"], A, {})
        dest = d["out"] / "co"
        if not dest.exists():
            return False
        assert folder_matches(dest, w.a), "a checkout folder appears whole or not at all"
        return True

    def checkout_rerun(d: dict[str, Path], present: bool) -> None:
        dest = d["out"] / ("co2" if present else "co")
        Store(d["store"]).checkout("base:v0", dest)
        assert folder_matches(dest, w.a)

    src = str(w.b.root)
    known = {**A, **B, "m:v2": w.b}
    return {
        "save": Case(
            "save", lambda d: plain(d, src=src, tag="m:v1"), saved_check, save_rerun("save"), known
        ),
        "create": Case(
            "create",
            lambda d: plain(d, src=src, tag="m:v1"),
            saved_check,
            save_rerun("create"),
            known,
        ),
        "import": Case(
            "import", lambda d: plain(d, archive=w.archive), saved_check, import_rerun, known
        ),
        "export": Case(
            "export",
            lambda d: plain(d, tag="base:v0", dest=str(d["out"] / "base.bentomodel")),
            export_check,
            export_rerun,
            known,
        ),
        "push": Case("push", push_setup, push_check, push_rerun, known),
        "pull": Case("pull", pull_setup, saved_check, pull_rerun, known),
        "gc": Case("gc", gc_setup, gc_check, gc_rerun, G),
        "delete": Case("delete", delete_setup, delete_check, delete_rerun, {**A, **M}),
        "path": Case("path", lambda d: plain(d, tag="base:v0"), path_check, path_rerun, known),
        "checkout": Case("checkout", checkout_setup, checkout_check, checkout_rerun, known),
    }


def fresh_dirs(root: Path, name: str) -> dict[str, Path]:
    """New, not yet existing folders for one fault: store, remote, out (created)."""
    base = root / name
    base.mkdir(parents=True)
    (base / "out").mkdir()
    return {"store": base / "store", "remote": base / "remote", "out": base / "out"}
