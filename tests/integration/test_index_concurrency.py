"""Saves that merge pack indexes at their commits, deletes, gcs that sweep, repack and
rebuild the index, and readers, all at once in separate processes: no read of a listed
tag fails, and at the end every tag left reads whole and verify passes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modelvault import Store

CHILD = textwrap.dedent(
    """
    import hashlib, sys, tempfile, time
    from pathlib import Path
    import modelvault
    from modelvault.errors import NotFound

    def content(tag):
        seed = hashlib.sha256(tag.encode()).digest()
        return seed * 2048 + tag.encode()

    COMMON = hashlib.sha256(b"common").digest() * 8192
    role, store_path, stop = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    store = modelvault.Store(store_path)
    if role.startswith("save"):
        w, count = role[4:], int(sys.argv[4])
        for i in range(count):
            folder = Path(tempfile.mkdtemp())
            tag = f"s{w}:v{i}"
            (folder / "own.bin").write_bytes(content(tag))
            (folder / "common.bin").write_bytes(COMMON)
            store.save(folder, tag)
            if i >= 2 and i % 2 == 0:
                store.delete(f"s{w}:v{i - 2}")
    elif role == "gc":
        while not stop.exists():
            store.gc()
    else:
        reads = 0
        while not stop.exists():
            for model in store.list():
                tag = str(model.tag)
                try:
                    with store.get(tag).open("own.bin") as f:
                        data = f.read()
                except NotFound:
                    continue  # deleted since it was listed
                assert data == content(tag), tag
                reads += 1
        print(reads)
    """
)


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_merges_gc_and_readers_beside_saves(tmp_path: Path) -> None:
    path = tmp_path / "store"
    stop = tmp_path / "stop"
    Store(path)
    savers = [_start(f"save{w}", str(path), str(stop), "20") for w in range(2)]
    others = [_start(role, str(path), str(stop)) for role in ("gc", "read")]
    try:
        for p in savers:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err
    finally:
        stop.write_text("")
        time.sleep(0.1)
    for p in others:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    assert int(out.strip()) > 0  # the reader did read
    store = Store(path)
    store.gc()
    tags = sorted(str(m.tag) for m in store.list())
    assert len(tags) == 2 * 11  # per saver: v0..v19 less the 9 it deleted
    for tag in tags:
        with store.get(tag).open("own.bin") as f:
            assert f.read() == hashlib.sha256(tag.encode()).digest() * 2048 + tag.encode()
    assert store.verify().ok
    assert len(list((path / "objects" / "packs").glob("multi-*.midx"))) == 1
