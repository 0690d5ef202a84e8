"""Push and pull progress on real backends (moto's S3 server, file://): the totals come
before the first byte, and the bytes come as they go, a few MiB at a time at most
(not a 32 MiB pack or a 16 MiB ranged read at once)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault.remote.local import LocalTransport
from modelvault.remote.sync import TransferProgress, pull, push
from modelvault.remote.transport import PARTS, Retrying

MiB = 1 << 20
STEP = max(PARTS)  # the largest S3 part: no report moves further than one


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 MiB model folder (random, so nothing compresses or dedups)."""
    folder = tmp_path_factory.mktemp("big")
    (folder / "weights.bin").write_bytes(os.urandom(64 * MiB))
    (folder / "config.json").write_text('{"layers": 2}')
    return folder


@pytest.fixture(params=["s3", "file"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        return bucket["url"] + "/models", bucket["options"]
    return (tmp_path / "remote").as_uri(), {}


def _check_smooth(seen: list[TransferProgress], *, before: int) -> None:
    """The first report has the totals and at most ``before`` bytes (none moved yet); then
    the bytes grow by at most :data:`STEP` at a time to the total, which stays put."""
    assert seen, "no progress reported"
    first, last = seen[0], seen[-1]
    assert first.bytes <= before and first.total_bytes > 60 * MiB, first
    assert first.total_bytes == last.total_bytes and first.total_objects == last.total_objects
    assert last.bytes == last.total_bytes and last.objects == last.total_objects, last
    steps = [b.bytes - a.bytes for a, b in itertools.pairwise(seen)]
    assert min(steps) >= 0, steps
    assert max(steps) <= STEP, [round(s / MiB, 1) for s in steps]
    assert sum(1 for s in steps if s > 0) >= 64 * MiB // STEP, "too few reports"


@pytest.mark.slow
def test_push_and_pull_report_bytes_as_they_go(
    tmp_path: Path, big_model: Path, remote: tuple[str, dict[str, Any]]
) -> None:
    url, options = remote
    a = modelvault.Store(tmp_path / "a")
    a.save(big_model, "big:v1")
    pushed: list[TransferProgress] = []
    push(a.repo, "big:v1", url, options, progress=pushed.append)
    _check_smooth(pushed, before=0)

    b = modelvault.Store(tmp_path / "b")
    pulled: list[TransferProgress] = []
    result = pull(b.repo, "big:v1", url, options, progress=pulled.append)
    _check_smooth(pulled, before=MiB)  # (the model's few metadata objects, read first)
    assert result.received >= pulled[-1].total_bytes
    assert b.get("big:v1").object.size == a.get("big:v1").object.size


class _DropsOnce(LocalTransport):
    """file:// whose first upload breaks after 2 MiB have gone (a reset connection)."""

    dropped = False

    def upload(self, key: str, source: bytes | Path, progress: Any) -> None:
        if self.dropped:
            return super().upload(key, source, progress)
        self.dropped = True
        progress(2 * MiB)
        raise ConnectionResetError(104, "Connection reset by peer")


def test_a_retried_upload_takes_back_the_bytes_of_the_failed_attempt(tmp_path: Path) -> None:
    data = os.urandom(5 * MiB + 123)
    told: list[int] = []
    t = Retrying(_DropsOnce(tmp_path / "remote", "file:///remote"), delay=0.0)
    t.upload("packs/p.pack", data, told.append)
    assert told[:2] == [2 * MiB, -2 * MiB]
    running = [sum(told[: i + 1]) for i in range(len(told))]
    assert max(running) <= len(data) and running[-1] == len(data)
    assert (tmp_path / "remote" / "packs" / "p.pack").read_bytes() == data


def test_a_ranged_read_reports_piece_by_piece(tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 100)
    (tmp_path / "p").write_bytes(data)
    told: list[int] = []
    got = LocalTransport(tmp_path, "file:///x").read_range("p", 7, 3 * MiB, told.append)
    assert got == data[7 : 7 + 3 * MiB]
    assert told == [MiB, MiB, MiB]
    told.clear()
    assert (
        LocalTransport(tmp_path, "file:///x").read_range("p", MiB, 9 * MiB, told.append)
        == (data[MiB:])
    )
    assert sum(told) == len(data) - MiB


@pytest.mark.parametrize("kind", ["file", "bytes"])
def test_s3_upload_tells_its_last_bytes_once_the_object_exists(
    s3_bucket: dict[str, Any], tmp_path: Path, kind: str
) -> None:
    """A multipart upload's object appears when the upload is completed, after its last
    part: the bar reaches the pack's size only then (not while S3 assembles it)."""
    from modelvault.remote.transport import open_transport

    data = os.urandom(20 * MiB + 17)
    source: bytes | Path = data
    if kind == "file":
        source = tmp_path / "p.pack"
        source.write_bytes(data)
    t = open_transport(s3_bucket["url"], s3_bucket["options"])
    done = [0]
    there_at_the_end: list[bool] = []

    def told(n: int) -> None:
        done[0] += n
        if done[0] == len(data):
            there_at_the_end.append(s3_bucket["fs"].exists(f"{s3_bucket['url']}/packs/p.pack"))

    t.upload("packs/p.pack", source, told)
    assert there_at_the_end == [True]
    assert t.get("packs/p.pack") == data


@pytest.mark.parametrize("at", ["a part", "completion"])
@pytest.mark.parametrize("kind", ["file", "bytes"])
def test_a_failed_s3_multipart_upload_is_aborted(
    s3_bucket: dict[str, Any], tmp_path: Path, kind: str, at: str
) -> None:
    """An upload failing after its first part, or once every part is up when S3 is asked
    to complete it (botocore's own ``before-call`` event on the real client refuses the
    CompleteMultipartUpload), leaves no object and no pending multipart upload (whose
    parts S3 would keep, and bill, until aborted)."""
    from modelvault.remote.transport import open_transport

    data = os.urandom(20 * MiB)
    source: bytes | Path = data
    if kind == "file":
        source = tmp_path / "p.pack"
        source.write_bytes(data)
    t = open_transport(s3_bucket["url"], s3_bucket["options"])
    refused = []

    def fails(*_: Any, **__: Any) -> None:
        refused.append(at)
        raise ConnectionResetError(104, f"the link went down at {at}")

    told = fails if at == "a part" else lambda n: None
    if at == "completion":
        t.fs.connect()  # (the client the transport's requests go through)
        t.fs.s3.meta.events.register("before-call.s3.CompleteMultipartUpload", fails)
    with pytest.raises(OSError):
        t.upload("packs/p.pack", source, told)
    assert refused
    fs = s3_bucket["fs"]
    bucket = s3_bucket["url"].removeprefix("s3://")
    assert not fs.exists(f"{bucket}/packs/p.pack")
    assert fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", []) == []
