"""Checking and normalising what users save beside a model's files."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelvault.core.objects import encode_value
from modelvault.errors import InvalidInput

__all__ = [
    "MAX_DEPTH",
    "SIGNATURE_DEFAULTS",
    "build_context",
    "check_labels",
    "check_storable",
    "normalise_signatures",
]

SIGNATURE_DEFAULTS: dict[str, Any] = {"batchable": False, "batch_dim": 0}


def _batch_dim(name: str, value: Any) -> int | tuple[int, int]:
    if isinstance(value, bool) or not isinstance(value, int | tuple | list):
        raise InvalidInput(f"signature {name!r}: batch_dim must be an int or (input, output)")
    if isinstance(value, int):
        return value
    dims = tuple(value)
    ok = len(dims) == 2 and all(isinstance(d, int) and not isinstance(d, bool) for d in dims)
    if not ok:
        raise InvalidInput(f"signature {name!r}: batch_dim tuple must be (input_dim, output_dim)")
    return (dims[0], dims[1])


def normalise_signatures(
    signatures: Mapping[str, Mapping[str, Any]] | None, default: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Fill in ``batchable`` and ``batch_dim`` defaults; raise InvalidInput on bad shapes."""
    source = default if signatures is None else signatures
    if not isinstance(source, Mapping):
        raise InvalidInput("signatures must be a dict: method name -> options")
    out: dict[str, dict[str, Any]] = {}
    for name, opts in source.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise InvalidInput(f"signature name {name!r} is not a Python identifier")
        if not isinstance(opts, Mapping):
            raise InvalidInput(f"signature {name!r}: options must be a dict")
        merged = {**SIGNATURE_DEFAULTS, **opts}
        if not isinstance(merged["batchable"], bool):
            raise InvalidInput(f"signature {name!r}: batchable must be True or False")
        merged["batch_dim"] = _batch_dim(name, merged["batch_dim"])
        out[name] = merged
    check_storable("signatures", out)
    return out


def check_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    """Labels are string keys to string values."""
    labels = dict(labels or {})
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidInput(f"labels map strings to strings; got {k!r}: {v!r}")
    return labels


MAX_DEPTH = 100  # lists and dicts inside one another (msgpack's own limit is 511)


def _plain(value: Any, what: str, depth: int = 0) -> Any:
    if hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalars
        return value.item()
    if isinstance(value, Mapping | list | tuple) and depth >= MAX_DEPTH:
        raise InvalidInput(f"{what} is nested deeper than {MAX_DEPTH} levels of lists and dicts")
    if isinstance(value, Mapping):
        return {k: _plain(v, what, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, what, depth + 1) for v in value]
    return value


def check_storable(what: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return ``value`` as plain data that msgpack can store, or raise InvalidInput."""
    if value is not None and not isinstance(value, Mapping):
        raise InvalidInput(f"{what} must be a dict, not {type(value).__name__}")
    plain = _plain(dict(value or {}), what)
    if any(not isinstance(k, str) for k in plain):
        raise InvalidInput(f"{what} keys must be strings")
    try:
        encode_value(plain)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(
            f"{what} must hold only str, int, float, bool, None, bytes, lists and dicts: {exc}"
        ) from exc
    return dict(plain)


def build_context(
    framework_name: str = "", framework_versions: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ``info.context`` of a new model."""
    import platform

    from modelvault import __version__

    return {
        "framework_name": framework_name,
        "framework_versions": dict(framework_versions or {}),
        "modelvault_version": __version__,
        "python_version": platform.python_version(),
    }
