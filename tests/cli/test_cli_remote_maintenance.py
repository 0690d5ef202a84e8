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


def test_delete_on_a_remote_with_aliases(mv: Run, model_dir: Path, tmp_path: Path) -> None:
    """``mv delete --remote`` of an aliased version refuses in one line naming the alias;
    ``NAME@ALIAS`` removes the remote alias only (bad ones: one line); an alias left
    naming a deleted version (a remote damaged by hand) makes ``mv verify --remote`` exit
    1 naming it and ``mv pull`` fail naming it and its version."""
    remote = tmp_path / "remote"
    _pushed(mv, model_dir, remote.as_uri())
    assert mv("alias", "set", "clf@prod", "clf:v1").returncode == 0
    assert mv("push", "clf@prod", "shared").returncode == 0
    for tag in ("clf:v1", "clf"):
        refused = mv("delete", tag, "--remote", "shared", "-y")
        assert refused.returncode == 1, refused.stdout
        no_traceback(refused)
        assert "clf@prod" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        assert "`mv delete clf@prod --remote shared`" in refused.stderr  # advice that works
    for bad, words in (("clf@-x", "invalid alias"), ("clf@stage", "no alias clf@stage")):
        refused = mv("delete", bad, "--remote", "shared", "-y")
        assert refused.returncode != 0 and words in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    doc = (remote / "aliases" / "clf" / "prod").read_bytes()
    out = mv("delete", "CLF@Prod", "--remote", "shared", "-y")
    assert out.returncode == 0 and "Deleted clf@prod on shared" in out.stdout, out.stderr
    assert json.loads(mv("alias", "list", "--remote", "shared", "-o", "json").stdout) == []
    assert "clf@prod" in mv("alias", "list").stdout  # the local alias stays
    assert mv("delete", "clf:v1", "--remote", "shared", "-y").returncode == 0

    (remote / "aliases" / "clf" / "old").write_bytes(doc)  # names the deleted clf:v1
    bad = mv("verify", "--remote", "shared")
    assert bad.returncode == 1
    assert "broken alias clf@old" in bad.stdout and "clf:v1" in bad.stdout
    pulled = mv("--store", str(tmp_path / "other"), "pull", "clf@old", remote.as_uri())
    assert pulled.returncode != 0
    no_traceback(pulled)
    assert "clf@old" in pulled.stderr and "clf:v1" in pulled.stderr


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
