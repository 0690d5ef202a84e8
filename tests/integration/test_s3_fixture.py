"""The S3 fixture serves a real S3 API on loopback, reached through s3fs."""

from __future__ import annotations

from typing import Any


def test_s3_round_trip_through_s3fs(s3_bucket: dict[str, Any]) -> None:
    fs = s3_bucket["fs"]
    path = s3_bucket["url"][len("s3://") :] + "/hello.txt"
    with fs.open(path, "wb") as f:
        f.write(b"hello")
    assert fs.cat(path) == b"hello"
    assert s3_bucket["endpoint_url"].startswith("http://127.0.0.1:")
