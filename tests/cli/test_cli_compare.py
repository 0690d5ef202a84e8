"""``mv diff A B`` and ``mv status [REMOTE]`` through the installed script (API.md, CLI)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from _cli import Run

from modelvault.core.chunking import MAX_SIZE


def _two_versions(mv: Run, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "tok").mkdir(parents=True)
    (b / "tok").mkdir(parents=True)
    head = random.Random(22).randbytes(1 << 20)  # the same chunks every run
    (a / "w.bin").write_bytes(head)
    (b / "w.bin").write_bytes(head + os.urandom(100_000))
    (a / "tok" / "vocab.txt").write_text("a b")
    (b / "tok" / "vocab.txt").write_text("a b")
    (a / "gone.txt").write_text("x")
    (b / "added.txt").write_text("yy")
    assert mv("save", str(a), "clf:a", "-q").returncode == 0
    assert mv("save", str(b), "clf:b", "-q").returncode == 0


def test_diff_json_has_the_api_shape(mv: Run, tmp_path: Path) -> None:
    _two_versions(mv, tmp_path)
    out = mv("diff", "clf:a", "clf:b", "-o", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["added"] == ["added.txt"]
    assert doc["removed"] == ["gone.txt"]
    assert doc["changed"] == ["w.bin"]
    # every chunk of a's w.bin but its last (cut at a's end, not b's) is in b's
    assert (1 << 20) - MAX_SIZE <= doc["shared_bytes"] < 1 << 20


def test_diff_table_says_what_changed_and_what_dedup_saved(mv: Run, tmp_path: Path) -> None:
    _two_versions(mv, tmp_path)
    out = mv("diff", "clf:a", "clf:b")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("+") and "added.txt" in line for line in lines)
    assert any(line.startswith("-") and "gone.txt" in line for line in lines)
    assert any(line.startswith("M") and "w.bin" in line for line in lines)
    assert "1 added, 1 removed, 1 changed" in out.stdout
    assert "already stored for clf:a" in out.stdout
    missing = mv("diff", "clf:a", "clf:nope")
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_status_before_and_after_a_push(mv: Run, tmp_path: Path) -> None:
    _two_versions(mv, tmp_path)
    remote = (tmp_path / "remote").as_uri()
    before = json.loads(mv("status", remote, "-o", "json").stdout)
    assert {r["tag"] for r in before} == {"clf:a", "clf:b"}
    assert all(not r["on_remote"] and r["bytes_to_push"] > 1 << 20 for r in before)
    assert mv("push", "clf:a", remote, "-q").returncode == 0
    after = {r["tag"]: r for r in json.loads(mv("status", remote, "-o", "json").stdout)}
    assert after["clf:a"] == {"tag": "clf:a", "on_remote": True, "bytes_to_push": 0}
    assert 0 < after["clf:b"]["bytes_to_push"] < 700_000  # 100 KB appended, the cut around it
    table = mv("status", remote)
    assert table.returncode == 0 and "On remote" in table.stdout
    assert any("clf:a" in line and "yes" in line for line in table.stdout.splitlines())
    no_default = mv("status")
    assert no_default.returncode == 1 and "origin" in no_default.stderr
