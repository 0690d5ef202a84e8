"""Progress bars: drawn on stderr when it is a terminal (a pty here), never with -q."""

from __future__ import annotations

import itertools
import os
import re
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from _cli import console_script


def _run_on_pty(
    env: dict[str, str], *args: str, cwd: Path
) -> tuple[int, str, list[tuple[float, bytes]]]:
    """Run ``mv ARGS`` with stderr on a pseudo-terminal: (code, stdout, each read of the
    terminal with the time since the start at which it was read)."""
    master, slave = os.openpty()
    start = time.monotonic()
    proc = subprocess.Popen(
        [console_script("mv"), *args],
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        text=True,
    )
    os.close(slave)
    reads: list[tuple[float, bytes]] = []
    while True:
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            reads.append((time.monotonic() - start, data))
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait(timeout=60)
    return proc.returncode, out, reads


def run_with_tty_stderr(env: dict[str, str], *args: str, cwd: Path) -> tuple[int, str, bytes]:
    """Run ``mv ARGS`` with stderr on a pseudo-terminal; (code, stdout, stderr bytes)."""
    code, out, reads = _run_on_pty(env, *args, cwd=cwd)
    return code, out, b"".join(data for _, data in reads)


def test_bars_on_a_terminal_only(cli_env: dict[str, str], model_dir: Path, tmp_path: Path) -> None:
    env = {**cli_env, "TERM": "xterm"}
    code, out, err = run_with_tty_stderr(env, "save", str(model_dir), "bar:v1", cwd=tmp_path)
    assert code == 0 and 'Model(tag="bar:v1") saved' in out
    assert b"saving bar:v1" in err and b"KiB" in err
    assert b"\x1b[3" not in err  # NO_COLOR=1 in cli_env: a bar, but no colour

    code, out, err = run_with_tty_stderr(env, "save", "-q", str(model_dir), "bar:v2", cwd=tmp_path)
    assert code == 0 and err == b""

    dest = tmp_path / "co"
    code, out, err = run_with_tty_stderr(env, "checkout", "bar:v1", str(dest), cwd=tmp_path)
    assert code == 0 and b"checking out bar:v1" in err
    assert (dest / "weights.bin").read_bytes() == (model_dir / "weights.bin").read_bytes()


def test_colour_on_a_terminal_without_no_color(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm"
    code, _, err = run_with_tty_stderr(env, "get", "nope", cwd=tmp_path)
    assert code == 1 and err.startswith(b"\x1b[31mmv: error:")
    code, _, err = run_with_tty_stderr({**env, "NO_COLOR": "1"}, "get", "nope", cwd=tmp_path)
    assert code == 1 and err.startswith(b"mv: error:")


def test_push_and_pull_bars(cli_env: dict[str, str], model_dir: Path, tmp_path: Path) -> None:
    env = {**cli_env, "TERM": "xterm"}
    url = (tmp_path / "remote").as_uri()
    code, _, err = run_with_tty_stderr(env, "save", "-q", str(model_dir), "sync:v1", cwd=tmp_path)
    assert code == 0
    code, out, err = run_with_tty_stderr(env, "push", "sync:v1", url, cwd=tmp_path)
    assert code == 0 and b"pushing sync:v1" in err and "Successfully pushed" in out
    other = {**env, "MODELVAULT_HOME": str(tmp_path / "other")}
    code, out, err = run_with_tty_stderr(other, "pull", "sync:v1", url, cwd=tmp_path)
    assert code == 0 and b"pulling sync:v1" in err and "Successfully pulled" in out
    assert b"Traceback" not in err


def test_export_bar_has_a_total_and_speeds_match_sizes(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The export bar knows its total from the first frame (no ``6.8/? MiB``), and speeds
    are in the binary units the sizes use (KiB/s, MiB/s, never kB/s or MB/s)."""
    src = tmp_path / "big"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(24 << 20))
    env = {**cli_env, "TERM": "xterm", "COLUMNS": "160"}
    code, _, err = run_with_tty_stderr(env, "save", "-q", str(src), "big:v1", cwd=tmp_path)
    assert code == 0
    code, _, err = run_with_tty_stderr(env, "export", "big:v1", str(tmp_path), cwd=tmp_path)
    assert code == 0 and b"exporting big:v1" in err, err
    assert b"/?" not in err, err
    assert re.search(rb"\d/\d+(\.\d+)? MiB", err), err
    assert not re.search(rb"\d (kB|MB|GB)/s", err), err


def test_speed_is_in_binary_units() -> None:
    """The speed column beside DownloadColumn(binary_units=True): MiB/s, not MB/s."""
    from rich.progress import Progress

    from modelvault.cli.progress import _binary_speed_column

    now = [0.0]
    column = _binary_speed_column()
    with Progress(column, get_time=lambda: now[0], auto_refresh=False, disable=True) as p:
        task = p.add_task("x", total=None)
        for _ in range(5):
            now[0] += 1.0
            p.advance(task, 3 * 1024 * 1024)  # 3 MiB a second
        text = column.render(p.tasks[0]).plain
    assert text == "3.0 MiB/s"


def test_verify_and_gc_draw_bars(cli_env: dict[str, str], model_dir: Path, tmp_path: Path) -> None:
    """verify shows the bytes checked of the store's packs; gc its phases."""
    env = {**cli_env, "TERM": "xterm", "COLUMNS": "160"}
    for v in ("v1", "v2"):
        code, _, _ = run_with_tty_stderr(env, "save", "-q", str(model_dir), f"g:{v}", cwd=tmp_path)
        assert code == 0
    code, out, err = run_with_tty_stderr(env, "verify", cwd=tmp_path)
    assert code == 0 and "ok" in out
    assert b"verifying" in err and b"KiB" in err, err
    code, _, _ = run_with_tty_stderr(env, "delete", "g:v1", "-y", cwd=tmp_path)
    assert code == 0
    code, out, err = run_with_tty_stderr(env, "gc", cwd=tmp_path)
    assert code == 0 and "Freed" in out
    assert b"collecting garbage" in err or b"marking" in err or b"deleting" in err, err


# -- push and pull: the total before the first byte, then bytes as they go -------------

MiB = 1 << 20
_SIZED = re.compile(rb"(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?) MiB")


def _frames(
    env: dict[str, str], *args: str, cwd: Path
) -> tuple[int, str, list[tuple[float, bytes]]]:
    """Run ``mv ARGS`` with stderr on a pseudo-terminal: (code, stdout, the bar's frames
    with the time each was read). A frame is what rich drew between two carriage returns."""
    code, out, reads = _run_on_pty(env, *args, cwd=cwd)
    return code, out, [(t, part) for t, data in reads for part in data.split(b"\r") if part.strip()]


def _aws_keys() -> dict[str, str]:
    """The S3 server's credentials and region (``s3_server`` sets them)."""
    return {
        k: os.environ[k]
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }


def _sizes(frames: list[tuple[float, bytes]]) -> list[tuple[float, float, float]]:
    """(time, MiB done, MiB in all) of each frame that shows sizes."""
    out = []
    for t, frame in frames:
        m = _SIZED.search(frame)
        if m:
            out.append((t, float(m.group(1)), float(m.group(2))))
    return out


def _check_bar(
    frames: list[tuple[float, bytes]], *, verb: bytes, least: float, waiting: bytes = b"comparing"
) -> None:
    """The bar says it is comparing (no sizes) until it knows the total (``least`` MiB or
    a little more: packs have headers), which then never changes; never ``/?``."""
    text = b"".join(f for _, f in frames)
    assert b"/?" not in text, text[-2000:]
    sized = _sizes(frames)
    assert sized, text[-2000:]
    first = next(i for i, (_, f) in enumerate(frames) if _SIZED.search(f))
    assert any(verb in f and b"(%s)" % waiting in f for _, f in frames[:first]), text[:2000]
    total = sized[0][2]
    assert least <= total < least * 1.01 and all(t == total for _, _, t in sized), sized


@pytest.mark.slow
def test_push_and_pull_bars_move_smoothly_on_a_slow_s3_link(
    s3_bucket: dict[str, Any], cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A 64 MiB model over a 24 MiB/s link to the S3 server: the bar shows 0 of the total
    before the first byte, then moves no further between two frames than the link carried
    meanwhile plus the uploads in flight (each tells S3's parts as they land, at most 8
    MiB) or the reads in flight (each tells every MiB): no 32 MiB pack or 16 MiB range at
    once."""
    from _throttle import throttled

    from modelvault.remote.transport import PARTS

    rate = 24 * MiB
    src = tmp_path / "big"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(64 * MiB))
    env = {**cli_env, "TERM": "xterm", "COLUMNS": "160"}
    env.update(_aws_keys())
    other = {**env, "MODELVAULT_HOME": str(tmp_path / "other")}
    code, _, _ = run_with_tty_stderr(env, "save", "-q", str(src), "big:v1", cwd=tmp_path)
    assert code == 0
    with throttled(s3_bucket["endpoint_url"], rate, rate) as endpoint:
        for e in (env, other):
            url = s3_bucket["url"] + "/models"
            add = ["remote", "add", "slow", url, "-O", f"endpoint_url={endpoint}"]
            assert run_with_tty_stderr(e, *add, cwd=tmp_path)[0] == 0
        code, out, pushed = _frames(env, "push", "big:v1", "slow", cwd=tmp_path)
        assert code == 0 and "Successfully pushed" in out, out
        code, out, pulled = _frames(other, "pull", "big:v1", "slow", cwd=tmp_path)
        assert code == 0 and "Successfully pulled" in out, out
    for frames, verb, in_flight in (
        (pushed, b"pushing", 2 * max(PARTS) / MiB),  # two packs of 32 MiB: two uploads
        (pulled, b"pulling", 4.0),  # four ranged reads, each telling every MiB
    ):
        _check_bar(frames, verb=verb, least=64.0)
        sized = _sizes(frames)
        assert sized[0][1] == 0.0, sized[:3]
        moves = [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(sized)]
        assert sum(1 for _, d in moves if d > 0) >= 6, sized  # many steps, not a few jumps
        for dt, d in moves:
            assert 0 <= d <= in_flight + rate / MiB * dt + 0.1, (verb, dt, d, sized)


def test_push_and_pull_bars_on_a_file_remote_know_the_total_first(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """file://: "comparing" until the total is known, then sizes of that total only."""
    src = tmp_path / "m"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(24 * MiB))
    env = {**cli_env, "TERM": "xterm", "COLUMNS": "160"}
    url = (tmp_path / "remote").as_uri()
    assert run_with_tty_stderr(env, "save", "-q", str(src), "m:v1", cwd=tmp_path)[0] == 0
    code, _, frames = _frames(env, "push", "m:v1", url, cwd=tmp_path)
    assert code == 0
    _check_bar(frames, verb=b"pushing", least=24.0)
    other = {**env, "MODELVAULT_HOME": str(tmp_path / "other")}
    code, _, frames = _frames(other, "pull", "m:v1", url, cwd=tmp_path)
    assert code == 0
    _check_bar(frames, verb=b"pulling", least=24.0)


def test_import_from_an_s3_url_knows_the_archive_size_first(
    s3_bucket: dict[str, Any], cli_env: dict[str, str], tmp_path: Path
) -> None:
    """An archive at a URL: the bar says "opening" while it asks the size (one metadata
    request), then counts of that size: no ``0/? bytes`` or ``4.1/? MiB``."""
    src = tmp_path / "m"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(24 * MiB))
    env = {**cli_env, "TERM": "xterm", "COLUMNS": "200"}
    env.update(_aws_keys())
    env["AWS_ENDPOINT_URL_S3"] = s3_bucket["endpoint_url"]
    assert run_with_tty_stderr(env, "save", "-q", str(src), "m:v1", cwd=tmp_path)[0] == 0
    url = s3_bucket["url"] + "/archives/"
    assert run_with_tty_stderr(env, "export", "-q", "m:v1", url, cwd=tmp_path)[0] == 0
    other = {**env, "MODELVAULT_HOME": str(tmp_path / "other")}
    archive = url + "m-v1.bentomodel"
    code, out, frames = _frames(other, "import", archive, cwd=tmp_path)
    assert code == 0 and "imported" in out, out
    _check_bar(frames, verb=b"importing", least=24.0, waiting=b"opening")
