"""Fixtures shared by every test: isolated stores, and a real S3 server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import modelvault


@pytest.fixture
def store(tmp_path: Path) -> modelvault.Store:
    """A fresh store in a temporary folder."""
    return modelvault.Store(tmp_path / "store")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default store at a temporary folder and drop remote defaults."""
    home = tmp_path / "home-store"
    monkeypatch.setenv("MODELVAULT_HOME", str(home))
    monkeypatch.delenv("MODELVAULT_REMOTE", raising=False)
    return home


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: str) -> dict[str, Any]:
    """A new, empty bucket on the S3 server: ``{"url", "endpoint_url", "options"}``."""
    import s3fs

    name = f"mv-{uuid.uuid4().hex[:12]}"
    options = {"endpoint_url": s3_server}
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True)
    fs.mkdir(name)
    return {"url": f"s3://{name}", "endpoint_url": s3_server, "options": options, "fs": fs}


@pytest.fixture(scope="module")
def float_codec() -> Iterator[None]:
    """Switch the writing of the float codec (codec 3) on for a module: it is off by
    default (``modelvault.core.codec.FLOAT_WRITE``), always read."""
    from modelvault.core import codec

    before = codec.FLOAT_WRITE
    codec.FLOAT_WRITE = True
    try:
        yield
    finally:
        codec.FLOAT_WRITE = before
