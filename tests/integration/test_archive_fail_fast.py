"""Archives to and from an S3 endpoint that refuses connections fail fast, as RemoteError
(API.md "Remotes": within 15 s by default), and leave nothing behind: export and import
open their URLs through ``modelvault.remote.transport``, with its S3 timeouts and retries
(``S3_CONFIG``) and its translation of foreign errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import modelvault

LIMIT = 15.0  # the contract: RemoteError within 15 s by default


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch) -> str:
    """Credentials as a user has them, and an S3 endpoint on a closed loopback port."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    return endpoint


@pytest.fixture
def saved(store: modelvault.Store, tmp_path: Path) -> modelvault.Store:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"w" * 10_000)
    store.save(tmp_path / "m", "m:v1")
    return store


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_export_to_a_refused_endpoint_is_a_remote_error_within_15_s(
    saved: modelvault.Store, refused: str
) -> None:
    start = time.monotonic()
    with pytest.raises(modelvault.RemoteError) as info:
        saved.export_model("m:v1", "s3://bucket/archives/")
    assert time.monotonic() - start < LIMIT
    text = str(info.value)
    assert "s3://bucket/archives/m-v1.bentomodel" in text and "unreachable" in text
    assert "EndpointConnectionError" in text


def test_import_from_a_refused_endpoint_is_a_remote_error_within_15_s(
    saved: modelvault.Store, refused: str
) -> None:
    before = _files(saved.path)
    start = time.monotonic()
    with pytest.raises(modelvault.RemoteError) as info:
        saved.import_model("s3://bucket/archives/m-v1.bentomodel")
    assert time.monotonic() - start < LIMIT
    text = str(info.value)
    assert "s3://bucket/archives/m-v1.bentomodel" in text and "unreachable" in text
    assert _files(saved.path) == before  # nothing staged is left


@pytest.mark.parametrize("command", ["export", "import"])
def test_mv_export_and_import_say_what_failed(
    saved: modelvault.Store, refused: str, command: str
) -> None:
    """Not "internal error": the one line of a RemoteError, with its advice."""
    mv = str(Path(sys.executable).with_name("mv"))
    args = ["m:v1", "s3://bucket/a/"] if command == "export" else ["s3://bucket/a/m-v1.bentomodel"]
    env = dict(os.environ, MODELVAULT_HOME=str(saved.path), NO_COLOR="1")
    start = time.monotonic()
    out = subprocess.run(
        [mv, command, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert time.monotonic() - start < LIMIT
    assert out.returncode != 0
    assert "internal error" not in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "s3://bucket/a/m-v1.bentomodel failed: EndpointConnectionError" in out.stderr
    assert "unreachable" in out.stderr


@pytest.mark.parametrize("module", ["modelvault.remote.transport", "modelvault.archive"])
def test_importing_the_transport_or_the_archive_does_not_load_the_store(module: str) -> None:
    """Both stand below the store (the façade): importing either loads neither
    ``modelvault.store`` nor ``modelvault.remotes``."""
    code = (
        f"import sys, {module}; "
        "print([m for m in ('modelvault.store', 'modelvault.remotes') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
