"""Damaged ref documents of every shape (docs/format.md section 6), for local and remote
tests: what bit rot, a truncating crash of another tool or a careless hand leaves."""

from __future__ import annotations

import json
from typing import Any


def shapes(valid: bytes) -> dict[str, bytes]:
    """Name -> bytes of a damaged ref, each made from the ``valid`` document of a ref."""
    doc: dict[str, Any] = json.loads(valid)
    model = doc["model"]

    def with_(**changes: Any) -> bytes:
        return json.dumps({**doc, **changes}).encode()

    def raw_created(text: str) -> bytes:  # JSON numbers json.dumps does not write
        return json.dumps({**doc, "created": "@@"}).replace('"@@"', text).encode()

    without_model = {k: v for k, v in doc.items() if k != "model"}
    return {
        "truncated": valid[: len(valid) // 2],
        "empty": b"",
        "list": b"[1, 2]",
        "null": b"null",
        "string": b'"refs"',
        "number": b"5",
        "model-int": b'{"model": 5, "created": 1}',
        "model-missing": json.dumps(without_model).encode(),
        "model-null": with_(model=None),
        "model-short": with_(model=model[:-2]),
        "model-long": with_(model=model + "00"),
        "model-not-hex": with_(model="z" * 64),
        "model-list": with_(model=[model]),
        "created-missing": json.dumps({"model": model}).encode(),
        "created-1e400": raw_created("1e400"),
        "created-nan": raw_created("NaN"),
        "created-float": with_(created=1.5),
        "created-string": with_(created=str(doc["created"])),
        "created-bool": with_(created=True),
        "created-negative": with_(created=-1),
        "created-huge": with_(created=10**30),
        "created-null": with_(created=None),
        "size-negative": with_(size=-5),
        "size-huge": with_(size=10**30),
        "size-bool": with_(size=True),
        "size-string": with_(size="12"),
        "module-int": with_(module=5),
        "deep": b"[" * 100_000,
        "not-utf8": b"\xff\xfe\x00garbage",
    }


SHAPES = list(shapes(json.dumps({"model": "ab" * 32, "created": 1, "size": 1}).encode()))
