"""mv delete --remote, mv gc --remote, mv verify --remote, mv remote unlock (installed
``mv``, a file:// remote), with their progress bars on a terminal."""

from __future__ import annotations

import json
import time
from pathlib import Path

from _cli import Run, no_traceback
from test_cli_progress import run_with_tty_stderr

from modelvault.repo.layout import PACKS, lock_key


def _pushed(mv: Run, model_dir: Path, url: str) -> None:
    assert mv("remote", "add", "shared", url).returncode == 0
    for version in ("v1", "v2"):
        (model_dir / "weights.bin").write_bytes(version.encode() * 100_000)
        assert mv("save", str(model_dir), f"clf:{version}").returncode == 0
        out = mv("push", f"clf:{version}", "shared")
        assert out.returncode == 0, out.stderr


def test_delete_gc_and_verify_on_a_remote(mv: Run, model_dir: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    _pushed(mv, model_dir, remote.as_uri())
    asked = mv("delete", "clf:v1", "--remote", "shared", input="n\n")
    assert asked.returncode == 1 and "Nothing deleted" in asked.stdout
    out = mv("delete", "clf:v1", "--remote", "shared", "-y")
    assert out.returncode == 0, out.stderr
    assert "Deleted clf:v1 on shared" in out.stdout
    listed = mv("list", "--remote", "shared", "-o", "json")
    assert [m["tag"] for m in json.loads(listed.stdout)] == ["clf:v2"]
    assert mv("list").stdout.count("clf:") == 2  # the local store is untouched
    missing = mv("delete", "clf:v9", "--remote", "shared", "-y")
    assert missing.returncode == 1
    no_traceback(missing)

    gc = mv("gc", "--remote", "shared")
    assert gc.returncode == 0, gc.stderr
    assert "Freed" in gc.stdout and "on shared" in gc.stdout
    assert "Freed 0 B" in mv("gc", "--remote", "shared").stdout

    ok = mv("verify", "--remote", "shared", "-o", "json")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["ok"] and doc["objects_checked"] > 0 and doc["corrupt"] == []

    pack = max((remote / PACKS).glob("*.pack"), key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.chmod(0o644)
    pack.write_bytes(bytes(data))
    bad = mv("verify", "--remote", "shared")
    assert bad.returncode == 1
    assert "DAMAGED" in bad.stdout and "broken tag clf:v2" in bad.stdout
    assert "corrupt object" in bad.stdout
    assert bad.stderr.startswith("mv: error: the remote shared is damaged")


def test_remote_unlock(mv: Run, model_dir: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    _pushed(mv, model_dir, remote.as_uri())
    doc = {"exclusive": True, "operation": "gc", "host": "gone", "pid": 7, "namespace": "x",
           "time": time.time(), "version": 1}  # fmt: skip
    lock = remote / lock_key("a" * 32)
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps(doc))
    out = mv("remote", "unlock", "shared")
    assert out.returncode == 0 and "Removed 0 lock(s)" in out.stdout
    assert lock.exists()
    out = mv("remote", "unlock", "shared", "--all")
    assert out.returncode == 0 and "Removed 1 lock(s)" in out.stdout
    assert not lock.exists()


def test_remote_gc_and_verify_bars(
    cli_env: dict[str, str], model_dir: Path, tmp_path: Path
) -> None:
    env = {**cli_env, "TERM": "xterm"}
    url = (tmp_path / "remote").as_uri()
    for version in ("v1", "v2"):
        (model_dir / "weights.bin").write_bytes(version.encode() * 100_000)
        code, _, _ = run_with_tty_stderr(
            env, "save", "-q", str(model_dir), f"b:{version}", cwd=tmp_path
        )
        assert code == 0
        code, _, _ = run_with_tty_stderr(env, "push", "-q", f"b:{version}", url, cwd=tmp_path)
        assert code == 0
    code, _, _ = run_with_tty_stderr(env, "delete", "b:v1", "--remote", url, "-y", cwd=tmp_path)
    assert code == 0
    code, out, err = run_with_tty_stderr(env, "gc", "--remote", url, cwd=tmp_path)
    assert code == 0 and "Freed" in out
    assert b"deleting" in err or b"marking" in err, err
    code, out, err = run_with_tty_stderr(env, "verify", "--remote", url, cwd=tmp_path)
    assert code == 0 and b"verifying" in err and "ok" in out
    code, out, err = run_with_tty_stderr(env, "verify", "-q", "--remote", url, cwd=tmp_path)
    assert code == 0 and err == b""
