"""Plain coercion of command-line values for typer, so ``mv`` starts without pydantic.

typer (0.2x) coerces every non-flag parameter through a pydantic ``TypeAdapter`` it
builds on each run: importing pydantic and building the adapters costs ~0.1 s of CPU per
command, half the start-up budget of ``mv list``. The parameters of ``mv`` only need
``str``, ``bool``, ``pathlib.Path``, an ``Enum`` of choices, ``list[str]`` and their ``| None``
forms; :func:`install` makes typer coerce exactly those here and hands everything else
(and any parameter with a custom parser, a click type or path checks) back to typer.

It relies on two internals of typer (``typer.core.build_runtime_param`` and
``typer._coercion.RuntimeParam``); when they are absent it does nothing, and typer's own
coercion runs (correct, only slower). tests/cli/test_startup.py notices either way.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Convert = Callable[[Any], Any]


def _strip_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else None
    return annotation


def _choice(enum_type: type[enum.Enum], case_sensitive: bool) -> Convert:
    def convert(value: Any) -> Any:
        if isinstance(value, enum_type):
            return value
        for member in enum_type:
            same = (
                member.value == value
                if case_sensitive
                else str(member.value).lower() == str(value).lower()
            )
            if same:
                return member
        allowed = ", ".join(repr(m.value) for m in enum_type)
        raise ValueError(f"{value!r} is not one of {allowed}.")

    return convert


_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError(f"{value!r} is not a valid boolean.")


def _leaf(annotation: Any, info: Any) -> Convert | None:
    if annotation is str:
        return str
    if annotation is bool:
        return _bool
    if annotation is Path:
        checks = info.exists or info.resolve_path or not info.file_okay or not info.dir_okay
        return None if checks or info.allow_dash or info.path_type else Path
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _choice(annotation, bool(info.case_sensitive))
    return None


def converter(annotation: Any, info: Any) -> Convert | None:
    """A plain converter for the annotations ``mv`` uses, or None to leave it to typer."""
    if getattr(info, "parser", None) is not None or getattr(info, "click_type", None):
        return None
    annotation = _strip_optional(annotation)
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation) or (None,)
        leaf = _leaf(item, info)
        if leaf is None:
            return None
        convert_leaf = leaf
        return lambda values: [convert_leaf(v) for v in values]
    return _leaf(annotation, info)


def install() -> bool:
    """Route typer's coercion of simple parameters through :func:`converter`; True if done."""
    try:
        from typer import BadParameter, _coercion, core
    except ImportError:
        return False
    original = getattr(core, "build_runtime_param", None)
    base = getattr(_coercion, "RuntimeParam", None)
    if original is None or base is None:
        return False
    if getattr(original, "_modelvault_plain", False):
        return True

    @dataclass(frozen=True)
    class PlainRuntimeParam(base):  # type: ignore[misc, valid-type]
        convert: Convert

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            try:
                return self.convert(value)
            except ValueError as exc:
                raise BadParameter(str(exc), ctx=ctx, param=param) from exc

    def build(descriptor: Any) -> Any:
        convert = None
        if getattr(descriptor, "file_annotation", None) is None:
            convert = converter(descriptor.annotation, descriptor.parameter_info)
        if convert is None:
            return original(descriptor)
        return PlainRuntimeParam(
            annotation=descriptor.annotation,
            parameter_info=descriptor.parameter_info,
            convert=convert,
        )

    build._modelvault_plain = True  # type: ignore[attr-defined]
    setattr(core, "build_runtime_param", build)  # noqa: B010 (not an exported name)
    return True
