"""Batch payloads: numpy arrays, torch tensors (never imported here unless one is passed),
lists. How a payload is cut along the batch dim, what it merges with (its :data:`Key`), and
how parts are joined and outputs split again. Re-exported by :mod:`modelvault.runner.batching`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from itertools import accumulate, pairwise
from typing import Any, NamedTuple, TypeAlias

import numpy as np

from modelvault.errors import BatchingError, InvalidInput

BatchDim: TypeAlias = int | tuple[int, int]
"""The batch dim of a signature: one int for input and output, or ``(input_dim, output_dim)``."""

Key: TypeAlias = tuple[str, object, tuple[int | str, ...]]
"""What must be equal for payloads to merge: kind, dtype (and device), shape off the batch dim."""


# --- payloads: numpy arrays, torch tensors (never imported here unless one is passed), lists


def _is_tensor(value: object) -> bool:
    # A tensor can only exist if torch is already imported: no import is needed to check.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _axis(shape: tuple[int, ...], dim: int, what: str) -> int:
    if not -len(shape) <= dim < len(shape):
        raise BatchingError(
            f"cannot batch a {what} of shape {shape} along dim {dim}: "
            f"it has {len(shape)} dimension(s)"
        )
    return dim % len(shape)


class Cut(NamedTuple):
    """Where a payload sits along the batch dim."""

    rows: int  # its size along the batch dim
    axis: int  # the batch dim, normalised (never negative)
    key: Key  # payloads with equal keys can be concatenated


def cut(payload: object, dim: int) -> Cut:
    """How ``payload`` is cut along ``dim``: its rows, the axis and what it merges with.

    Raises:
        BatchingError: the payload is not a numpy array, torch tensor or list, or has no
            dimension ``dim`` (lists batch along dim 0 only).
    """
    if type(payload) is np.ndarray and dim == 0 and payload.ndim:  # the common case
        shape = payload.shape
        return Cut(shape[0], 0, numpy_key(payload.dtype, shape))
    if isinstance(payload, list):
        if dim != 0:
            raise BatchingError(f"a list payload batches along dim 0 only, not dim {dim}")
        return Cut(len(payload), 0, ("list", "", ()))
    if isinstance(payload, np.ndarray):
        d = _axis(payload.shape, dim, "numpy array")
        # The dtype object itself (hashable, cheap to compare); described with str() in errors.
        return Cut(payload.shape[d], d, ("numpy", payload.dtype, _rest(payload.shape, d)))
    if _is_tensor(payload):
        shape = tuple(payload.shape)  # type: ignore[attr-defined]
        d = _axis(shape, dim, "torch tensor")
        detail = f"{payload.dtype} on {payload.device}"  # type: ignore[attr-defined]
        return Cut(shape[d], d, ("torch", detail, _rest(shape, d)))
    raise BatchingError(
        f"cannot batch a payload of type {type(payload).__name__}: "
        "pass a numpy array, a torch tensor or a list"
    )


def numpy_key(dtype: np.dtype[Any], shape: tuple[int, ...]) -> Key:
    """The key of a numpy array of ``dtype`` and ``shape`` batched along dim 0."""
    return ("numpy", dtype, ("*",) + shape[1:])  # noqa: RUF005  (faster than unpacking)


def _rest(shape: tuple[int, ...], d: int) -> tuple[int | str, ...]:
    return (*shape[:d], "*", *shape[d + 1 :])


def describe_key(key: Key) -> str:
    """A key in words for error messages, e.g. ``numpy float64 of shape (*, 4)``."""
    kind, detail, rest = key
    if kind == "list":
        return "list"
    return f"{kind} {detail} of shape ({', '.join(str(n) for n in rest)})"


def _concat(parts: Sequence[Any], dim: int) -> Any:
    first = parts[0]
    if isinstance(first, list):
        return [row for part in parts for row in part]
    if isinstance(first, np.ndarray):
        return np.concatenate(parts, axis=dim)
    import torch  # only reached with tensors, so torch is already loaded

    return torch.cat(list(parts), dim=dim)


def _slice(value: Any, dim: int, start: int, stop: int) -> Any:
    if isinstance(value, list):
        return value[start:stop]
    if isinstance(value, np.ndarray):
        if dim == 0:
            return value[start:stop]
        return value[(slice(None),) * dim + (slice(start, stop),)]
    return value.narrow(dim, start, stop - start)


def _out_rows(value: object, dim: int) -> tuple[int, int]:
    """Rows of one output leaf along ``dim`` and the normalised dim."""
    if isinstance(value, list) and dim == 0:
        return len(value), 0
    if isinstance(value, np.ndarray) or _is_tensor(value):
        shape = tuple(value.shape)  # type: ignore[attr-defined]
        d = _axis(shape, dim, f"{type(value).__name__} output")
        return shape[d], d
    raise BatchingError(
        f"cannot split an output of type {type(value).__name__} along dim {dim}: "
        "return numpy arrays, torch tensors or lists (in a tuple, list or dict if several)"
    )


# --- outputs: split a batch's output per caller, join the parts of an oversize call


def _is_rows(value: object, dim: int, total: int) -> bool:
    # A list is one value per row when it is as long as the batch; else a list of outputs.
    return not isinstance(value, list) or (dim == 0 and len(value) == total)


def _rebuild(like: tuple[Any, ...] | list[Any], items: list[Any]) -> Any:
    if hasattr(like, "_fields"):  # a named tuple
        return type(like)(*items)
    return type(like)(items)


def split_output(output: Any, dim: int, sizes: Sequence[int]) -> list[Any]:
    """Cut a batch's output into one part per caller, ``sizes[i]`` rows along ``dim``.

    Tuples, dicts and lists of outputs are cut element by element.

    Raises:
        BatchingError: a leaf is not an array, tensor or list, or its rows along ``dim``
            differ from ``sum(sizes)``.
    """
    total = sum(sizes)
    if isinstance(output, dict):
        columns = {k: split_output(v, dim, sizes) for k, v in output.items()}
        return [{k: col[i] for k, col in columns.items()} for i in range(len(sizes))]
    if isinstance(output, tuple) or not _is_rows(output, dim, total):
        cols = [split_output(item, dim, sizes) for item in output]
        return [_rebuild(output, [col[i] for col in cols]) for i in range(len(sizes))]
    rows, d = _out_rows(output, dim)
    if rows != total:
        raise BatchingError(
            f"fn returned {rows} rows along dim {dim} for a batch of {total} rows; "
            "cannot give each caller its slice"
        )
    bounds = [0, *accumulate(sizes)]
    if d == 0 and isinstance(output, np.ndarray):  # the common case, kept cheap
        return [output[start:stop] for start, stop in pairwise(bounds)]
    return [_slice(output, d, bounds[i], bounds[i + 1]) for i in range(len(sizes))]


def join_outputs(parts: Sequence[Any], dim: int, sizes: Sequence[int]) -> Any:
    """Inverse of :func:`split_output`: concatenate the outputs of consecutive chunks."""
    first = parts[0]
    if isinstance(first, dict):
        return {k: join_outputs([p[k] for p in parts], dim, sizes) for k in first}
    chunks_are_rows = all(_is_rows(p, dim, n) for p, n in zip(parts, sizes, strict=True))
    if isinstance(first, tuple) or not chunks_are_rows:
        items = [join_outputs([p[i] for p in parts], dim, sizes) for i in range(len(first))]
        return _rebuild(first, items)
    return _concat(parts, _out_rows(first, dim)[1])


# --- the policy: how long to hold a batch for company


def _normalise_dims(batch_dim: BatchDim | Sequence[int]) -> tuple[int, int]:
    if isinstance(batch_dim, int) and not isinstance(batch_dim, bool):
        return batch_dim, batch_dim
    dims = tuple(batch_dim) if isinstance(batch_dim, Sequence) else ()
    if len(dims) != 2 or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise InvalidInput(
            f"batch_dim must be an int or (input_dim, output_dim), not {batch_dim!r}"
        )
    return dims[0], dims[1]
