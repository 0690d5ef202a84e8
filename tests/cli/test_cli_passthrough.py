"""``mv`` runs the system's own mv when the arguments are not for modelvault."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from _cli import Run, console_script

from modelvault.cli import COMMANDS, is_modelvault_invocation
from modelvault.cli.passthrough import find_system_mv

SYSTEM_MV = shutil.which("mv", path="/usr/bin:/bin")


def test_moves_a_file(mv: Run, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    out = mv("a.txt", "b.txt")
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "a.txt").exists()
    assert (tmp_path / "b.txt").read_text() == "hello"


def test_options_and_exit_status_are_the_system_mvs(mv: Run, tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    verbose = mv("-v", "x", "y")
    assert verbose.returncode == 0 and "y" in verbose.stdout  # GNU/BSD mv -v prints the move
    missing = mv("does-not-exist", "z")
    reference = subprocess.run(
        [SYSTEM_MV or "/bin/mv", "does-not-exist", "z"], cwd=tmp_path, capture_output=True
    )
    assert missing.returncode == reference.returncode != 0
    assert "Traceback" not in missing.stderr and "does-not-exist" in missing.stderr


def test_double_dash_moves_a_file_named_like_a_command(mv: Run, tmp_path: Path) -> None:
    (tmp_path / "list").write_text("not a command")
    out = mv("--", "list", "renamed")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "renamed").read_text() == "not a command"


def test_moves_into_a_folder_with_many_files(mv: Run, tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    for name in ("one", "two", "three"):
        (tmp_path / name).write_text(name)
    assert mv("one", "two", "three", "dest").returncode == 0
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["one", "three", "two"]


def _fake_modelvault_mv(folder: Path) -> Path:
    """A copy of the installed ``mv`` script (another environment's modelvault)."""
    folder.mkdir()
    fake = folder / "mv"
    shutil.copy(console_script("mv"), fake)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake


def test_skips_other_modelvault_scripts_on_path(
    mv: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    other_env = _fake_modelvault_mv(tmp_path / "other-venv-bin")
    own_bin = str(Path(console_script("mv")).parent)
    path = os.pathsep.join([own_bin, str(other_env.parent), "/usr/bin", "/bin"])
    found = find_system_mv(path, console_script("mv"))
    assert found is not None and Path(found).name == "mv"
    assert str(other_env.parent) not in found and own_bin not in found

    (tmp_path / "f").write_text("f")
    out = mv("f", "g", env={**cli_env, "PATH": path})
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "g").exists()


def test_falls_back_to_bin_mv(tmp_path: Path) -> None:
    own = console_script("mv")
    assert find_system_mv(str(tmp_path), own) == "/bin/mv"
    assert find_system_mv("", own) == "/bin/mv"


def test_a_later_mv_on_path_wins_over_bin_mv(tmp_path: Path) -> None:
    folder = tmp_path / "tools"
    folder.mkdir()
    tool = folder / "mv"
    tool.write_text('#!/bin/sh\necho fake-mv "$@"\n')
    tool.chmod(0o755)
    path = os.pathsep.join([str(Path(console_script("mv")).parent), str(folder)])
    assert find_system_mv(path, console_script("mv")) == str(tool)


@pytest.mark.parametrize(
    ("args", "ours"),
    [
        ((), True),
        (("list",), True),
        (("models", "list"), True),
        (("--help",), True),
        (("-h",), True),
        (("--version",), True),
        (("--store=/x", "list"), True),
        (("--store", "/x", "list"), True),
        (("--debug", "get", "x"), True),
        (("a.txt", "b.txt"), False),
        (("-v", "a", "b"), False),
        (("-f", "a", "b"), False),
        (("--", "list", "x"), False),
        (("./list", "x"), False),
        (("--target-directory=d", "a"), False),
    ],
)
def test_dispatch(args: tuple[str, ...], ours: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.endswith("_COMPLETE"):
            monkeypatch.delenv(key)
    assert is_modelvault_invocation(list(args)) is ours


def test_completion_requests_are_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_MV_COMPLETE", "complete_bash")
    assert is_modelvault_invocation(["a.txt", "b.txt"])


def test_commands_constant_matches_the_app() -> None:
    from typer.main import get_command

    from modelvault.cli.app import app

    group = get_command(app)
    assert set(group.commands) == set(COMMANDS)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("typo", "meant"), [("lst", "list"), ("pul", "pull"), ("verfy", "verify")])
def test_a_near_miss_of_a_command_says_did_you_mean_and_moves_nothing(
    mv: Run, tmp_path: Path, typo: str, meant: str
) -> None:
    (tmp_path / "x").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    out = mv(typo, "x")
    assert out.returncode == 2
    assert f"did you mean '{meant}'?" in out.stderr
    assert "Try 'mv --help'" not in out.stderr  # not coreutils' message
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_file_named_like_a_near_miss_is_still_moved(mv: Run, tmp_path: Path) -> None:
    (tmp_path / "lst").write_text("mine")
    out = mv("lst", "renamed")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "renamed").read_text() == "mine"


def test_a_word_like_no_command_goes_to_the_system_mv(mv: Run, tmp_path: Path) -> None:
    out = mv("zebra", "y")
    assert out.returncode != 0 and "did you mean" not in out.stderr
    assert "zebra" in out.stderr  # coreutils: cannot stat 'zebra'


def test_quiet_before_the_command_is_ours(mv: Run) -> None:
    out = mv("-q", "verify")
    assert out.returncode == 0, out.stderr
    assert "invalid option" not in out.stderr


def test_quiet_among_global_options_applies_to_any_command(mv: Run, tmp_path: Path) -> None:
    src = tmp_path / "m"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w")
    store = str(tmp_path / "s")
    saved = mv("-q", "--store", store, "save", str(src), "q:v1")
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout == ""  # no status line
    listed = mv("--store", store, "-q", "list")  # a listing is what `list` is for: printed
    assert listed.returncode == 0, listed.stderr
    assert "q:v1" in listed.stdout
    pushed = mv("--store", store, "push", "q:v1", (tmp_path / "r").as_uri(), "-q")
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout == ""
    loud = mv("--store", store, "push", "q:v1", (tmp_path / "r").as_uri())
    assert "Successfully pushed" in loud.stdout


def test_quiet_then_a_typo_is_still_a_near_miss(mv: Run, tmp_path: Path) -> None:
    out = mv("-q", "lst")
    assert out.returncode == 2
    assert "did you mean 'list'?" in out.stderr
