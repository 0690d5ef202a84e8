"""Errors: one line on stderr, the right exit code, a traceback only with --debug; Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _cli import Run, console_script, no_traceback

from modelvault.cli.failures import describe
from modelvault.errors import (
    ArchiveError,
    IntegrityError,
    InvalidTag,
    ModelExists,
    NotFound,
    RemoteError,
)


def test_not_found_is_one_line(mv: Run) -> None:
    out = mv("get", "nope:v1")
    assert out.returncode == 1
    no_traceback(out)
    assert "nope:v1" in out.stderr and "`mv list" in out.stderr


def test_bad_tag_is_a_usage_error(mv: Run) -> None:
    out = mv("get", "Bad Tag!")
    assert out.returncode == 2
    no_traceback(out)
    assert "invalid model name" in out.stderr


def test_missing_argument_and_unknown_option_exit_2(mv: Run) -> None:
    for args in (("get",), ("list", "--bogus"), ("list", "-o", "xml"), ("remote", "nope")):
        out = mv(*args)
        assert out.returncode == 2, args
        assert "Traceback" not in out.stderr


def test_save_errors(mv: Run, model_dir: Path, tmp_path: Path) -> None:
    missing = mv("save", str(tmp_path / "absent"), "m")
    assert missing.returncode == 1
    no_traceback(missing)
    assert "no such file or folder" in missing.stderr

    assert mv("save", str(model_dir), "m:v1").returncode == 0
    exists = mv("save", str(model_dir), "m:v1")
    assert exists.returncode == 1
    no_traceback(exists)
    assert "already exists" in exists.stderr
    assert exists.stderr.count("immutable") == 1  # said once, not again as a hint

    bad_pair = mv("save", str(model_dir), "m", "--label", "novalue")
    assert bad_pair.returncode == 2
    no_traceback(bad_pair)
    assert "KEY=VALUE" in bad_pair.stderr


def test_debug_shows_the_traceback(mv: Run, cli_env: dict[str, str]) -> None:
    out = mv("--debug", "get", "nope")
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "NotFound" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("mv: error:")
    env_debug = mv("get", "nope", env={**cli_env, "MODELVAULT_DEBUG": "1"})
    assert "Traceback" in env_debug.stderr


def test_damaged_store_config_is_one_line(mv: Run, _isolated_home: Path) -> None:
    """Listing works, with one warning line; what needs the config (gc) fails with one
    error line after it; verify names the file with its repair."""
    assert mv("list").returncode == 0
    config = _isolated_home / "config.json"
    config.write_text("{not json")
    out = mv("list")
    assert out.returncode == 0 and "Traceback" not in out.stderr
    (warning,) = out.stderr.splitlines()
    assert warning.startswith(f"mv: warning: {config} is damaged")
    out = mv("gc")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    first, error = out.stderr.splitlines()
    assert first == warning and error.startswith(f"mv: error: {config} is damaged")
    out = mv("verify")
    assert out.returncode == 1
    assert f"damaged config.json: {config} is damaged" in out.stdout
    assert '{"format": 4}' in out.stdout


@pytest.mark.parametrize(
    ("error", "code", "words"),
    [
        (InvalidTag("invalid model name 'A B'"), 2, "NAME:VERSION"),
        (NotFound("model x:y not found"), 1, "`mv list"),
        (ModelExists("model x:y already exists"), 1, "immutable"),
        (IntegrityError("object abc is damaged"), 1, "`mv verify`"),
        (ArchiveError("archive truncated"), 1, "unchanged"),
        (RemoteError("connection refused"), 1, "`mv remote list`"),
        (PermissionError(13, "Permission denied", "/x"), 1, "Permission denied: /x"),
        (RuntimeError("boom"), 1, "--debug"),
    ],
)
def test_every_error_says_what_to_do(error: BaseException, code: int, words: str) -> None:
    message, exit_code = describe(error)
    assert exit_code == code
    assert words in message and "\n" not in message


def _big_folder(folder: Path, mib: int) -> Path:
    """A folder whose save takes seconds but little disk: a distinct 16 MiB head, then a
    sparse hole of ``mib`` MiB (zeros to read, cut and hash; they dedup to one chunk)."""
    folder.mkdir()
    with open(folder / "weights.bin", "wb") as f:
        f.write(os.urandom(16 << 20))
        f.truncate((16 + mib) << 20)
    return folder


@pytest.mark.slow
def test_ctrl_c_leaves_the_store_consistent(
    mv: Run, cli_env: dict[str, str], tmp_path: Path, _isolated_home: Path
) -> None:
    assert mv("list").returncode == 0  # the store exists before the save starts
    src = _big_folder(tmp_path / "big", 16384)  # seconds of work: the signal lands mid-save
    proc = subprocess.Popen(
        [console_script("mv"), "save", str(src), "big"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As in a terminal: a test runner started as a background job has SIGINT ignored,
        # which its children inherit, and Python then installs no KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    tmp = _isolated_home / "objects"
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.startswith(".tmp-") for p in tmp.rglob("*")):
            break  # a pack is being written
        time.sleep(0.01)
    assert proc.poll() is None, "the save finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err

    assert json.loads(mv("list", "-o", "json").stdout) == []
    assert mv("verify").returncode == 0
    assert mv("gc").returncode == 0
    small = tmp_path / "small"
    small.mkdir()
    (small / "w.bin").write_bytes(os.urandom(1 << 20))
    assert mv("save", str(small), "big").returncode == 0  # the store takes new saves


def test_a_mistyped_store_path_is_an_error_not_an_empty_store(
    mv: Run, model_dir: Path, tmp_path: Path
) -> None:
    typo = tmp_path / "modles"
    for args in (("list",), ("get", "m"), ("verify",), ("du",), ("gc",)):
        out = mv("--store", str(typo), *args)
        assert out.returncode == 2, args
        assert "no store at" in out.stderr and "Traceback" not in out.stderr
        assert not typo.exists(), args  # nothing was made
    (tmp_path / "empty").mkdir()
    assert mv("--store", str(tmp_path / "empty"), "list").returncode == 2
    assert list((tmp_path / "empty").iterdir()) == []
    # commands that write make the store, as before
    made = mv("--store", str(typo), "save", str(model_dir), "m:v1")
    assert made.returncode == 0, made.stderr
    listed = mv("--store", str(typo), "list")
    assert listed.returncode == 0 and "m:v1" in listed.stdout


def test_memory_urls_are_refused_by_the_cli(mv: Run, model_dir: Path) -> None:
    """A memory:// remote dies with the CLI's process: 'success' there would be a lie."""
    assert mv("save", str(model_dir), "m:v1").returncode == 0
    for args in (
        ("push", "m:v1", "memory://team"),
        ("pull", "m:v1", "memory://team"),
        ("export", "m:v1", "memory://team/"),
        ("import", "memory://team/m-v1.bentomodel"),
    ):
        out = mv(*args)
        assert out.returncode == 2, args
        assert "memory://" in out.stderr and "only inside one Python process" in out.stderr
        assert "Successfully" not in out.stdout
    assert mv("remote", "add", "mem", "memory://team").returncode == 0
    named = mv("push", "m:v1", "mem")  # a configured name for a memory URL: the same
    assert named.returncode == 2 and "only inside one Python process" in named.stderr
