"""``compare.diff`` and ``compare.status`` (``mv diff`` / ``mv status``): what they report,
and that they read only metadata and indexes."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault.compare import diff, status
from modelvault.core.chunking import MAX_SIZE


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


@pytest.fixture
def two(store: modelvault.Store, tmp_path: Path) -> tuple[modelvault.Model, modelvault.Model]:
    base = random.Random(50).randbytes(2 << 20)  # the same chunks every run
    a = store.save(
        _folder(tmp_path / "a", {"w.bin": base, "old.txt": b"old", "same/cfg": b"{}"}), "m:a"
    )
    b = store.save(
        _folder(
            tmp_path / "b",
            {"w.bin": base + os.urandom(300_000), "new/x.txt": b"new!", "same/cfg": b"{}"},
        ),
        "m:b",
    )
    return a, b


def test_diff_lists_files_and_the_bytes_dedup_saved(
    store: modelvault.Store, two: tuple[modelvault.Model, modelvault.Model]
) -> None:
    a, b = two
    d = diff(store.repo, a.ref, b.ref)
    assert d["added"] == ["new/x.txt"]
    assert d["removed"] == ["old.txt"]
    assert d["changed"] == ["w.bin"]
    assert d["sizes"] == {"new/x.txt": 4, "old.txt": 3, "w.bin": (2 << 20) + 300_000}
    # the 2 MiB head is held by chunks of A but for its last (cut at A's end, at most
    # MAX_SIZE), and same/cfg's 2 bytes; the appended 300 KB is not
    assert (2 << 20) - MAX_SIZE + 2 <= d["shared_bytes"] < (2 << 20) + 2
    assert d["shared_bytes"] + d["new_bytes"] == (2 << 20) + 300_000 + 4 + 2  # B's bytes
    same = diff(store.repo, a.ref, a.ref)
    assert same["added"] == same["removed"] == same["changed"] == []
    assert same["new_bytes"] == 0


def _remotes(tmp_path: Path, s3_bucket: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        ((tmp_path / "remote").as_uri(), {}),
        (s3_bucket["url"] + "/status", s3_bucket["options"]),
    ]


def test_status_says_what_a_push_would_send(
    store: modelvault.Store,
    two: tuple[modelvault.Model, modelvault.Model],
    tmp_path: Path,
    s3_bucket: dict[str, Any],
) -> None:
    a, b = two
    refs = [a.ref, b.ref]
    for i, (url, options) in enumerate(_remotes(tmp_path, s3_bucket)):
        modelvault.remotes.add(f"r{i}", url, store=store, **options)
        before = {r["tag"]: r for r in status(store.repo, url, options, refs)}
        assert not before["m:a"]["on_remote"] and not before["m:b"]["on_remote"]
        assert before["m:a"]["bytes_to_push"] > 2 << 20  # all of it (stored, random bytes)
        store.push("m:a", f"r{i}")
        after = {r["tag"]: r for r in status(store.repo, url, options, refs)}
        assert after["m:a"] == {"tag": "m:a", "on_remote": True, "bytes_to_push": 0}
        # only what A lacks: the appended bytes and B's own metadata
        assert 0 < after["m:b"]["bytes_to_push"] < 900_000  # + the chunk cut around the join
        pushed = store.push("m:b", f"r{i}")
        assert abs(pushed.sent - after["m:b"]["bytes_to_push"]) < 64 * 1024  # pack framing


def test_status_reads_indexes_not_packs(
    store: modelvault.Store, two: tuple[modelvault.Model, modelvault.Model], tmp_path: Path
) -> None:
    a, b = two
    url = (tmp_path / "remote").as_uri()
    store.push("m:a", url)
    for pack in (tmp_path / "remote" / "packs").glob("*.pack"):
        pack.unlink()  # a status that read a pack would fail now
    rows = status(store.repo, url, None, [a.ref, b.ref])
    assert [r["on_remote"] for r in rows] == [True, False]
