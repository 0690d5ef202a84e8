"""Turning models, remotes and reports into text: tables, YAML-like details, JSON.

Plain Python only (no rich): ``mv list`` must start fast. Colour is ANSI, used only
when the stream is a terminal and ``NO_COLOR`` is unset or empty (https://no-color.org).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelvault.model import Model
    from modelvault.remotes import Remote

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
_BOLD, _RED, _GREEN, _YELLOW, _RESET = "\x1b[1m", "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[0m"
STYLES = {"bold": _BOLD, "red": _RED, "green": _GREEN, "yellow": _YELLOW}


def use_colour(stream: IO[str]) -> bool:
    """True when ``stream`` is a terminal, ``NO_COLOR`` is unset or empty, and TERM is not dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def styled(text: str, style: str, stream: IO[str] | None = None) -> str:
    """``text`` wrapped in the ANSI codes of ``style`` when ``stream`` takes colour."""
    if not use_colour(stream if stream is not None else sys.stdout):
        return text
    return f"{STYLES[style]}{text}{_RESET}"


def human_size(n: int) -> str:
    """Bytes as BentoML shows them: ``512 B``, ``5.81 KiB``, ``1.20 GiB``."""
    if n < 1024:
        return f"{n} B"
    size = float(n) / 1024.0
    unit = 0
    while size >= 1024.0 and unit < len(_UNITS) - 1:
        size /= 1024.0
        unit += 1
    return f"{size:.2f} {_UNITS[unit]}"


def local_time(when: dt.datetime) -> str:
    """A creation time as the table shows it: local time, to the second."""
    # (time's C functions: ~4x faster than astimezone + strftime, 10,000 rows a listing)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when.timestamp()))


def iso_utc(when: dt.datetime) -> str:
    """A creation time as JSON shows it: ISO 8601 in UTC, with ``+00:00``."""
    return when.astimezone(dt.timezone.utc).isoformat()


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], stream: IO[str]) -> str:
    """Columns padded to their widest cell, two spaces apart; the header bold on a terminal."""
    body = [list(r) for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    head = line(headers)
    if use_colour(stream):
        head = f"{_BOLD}{head}{_RESET}"
    return "\n".join([head, *(line(r) for r in body)])


# -- JSON -----------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """A value JSON can carry: datetimes as ISO UTC, tuples as lists, the rest via str()."""
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def to_json(value: Any) -> str:
    """Indented JSON text of ``value`` (made jsonable first)."""
    return json.dumps(jsonable(value), indent=2, ensure_ascii=False)


def model_summary(model: Model) -> dict[str, Any]:
    """What ``mv list -o json`` shows of one model."""
    info = model.info
    return {
        "tag": str(model.tag),
        "name": info.name,
        "version": info.version,
        "module": info.module,
        "size": model.size,
        "creation_time": iso_utc(info.creation_time),
        "labels": dict(info.labels),
        "id": model.id,
    }


def model_details(model: Model) -> dict[str, Any]:
    """What ``mv get`` shows: every info field in BentoML's order, then tag, size and id."""
    info = model.info
    return {
        "name": info.name,
        "version": info.version,
        "module": info.module,
        "labels": dict(info.labels),
        "options": dict(info.options),
        "metadata": dict(info.metadata),
        "context": dict(info.context),
        "signatures": {k: dict(v) for k, v in info.signatures.items()},
        "api_version": info.api_version,
        "creation_time": iso_utc(info.creation_time),
        "tag": str(model.tag),
        "size": model.size,
        "id": model.id,
    }


def remote_summary(remote: Remote) -> dict[str, Any]:
    """What ``mv remote list -o json`` shows of one remote: never a secret."""
    return {"name": remote.name, "url": remote.public_url(), "options": remote.public_options()}


def remote_row(remote: Remote) -> tuple[str, str, str]:
    """A row of ``mv remote list``: name, URL and options, never a secret."""
    options = ", ".join(f"{k}={v}" for k, v in remote.public_options().items())
    return remote.name, remote.public_url(), options


# -- YAML-like ------------------------------------------------------------------------
_PLAIN = re.compile(r"[A-Za-z0-9_/][A-Za-z0-9_ ./+:\-]*")
_INT_OR_DATE = re.compile(r"0[xob][0-9a-fA-F_]+|[0-9]{4}-[0-9]{2}-[0-9]{2}.*")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~", ".inf", ".nan"}


def _is_plain(text: str) -> bool:
    """True when ``text`` reads back as the same string without quotes."""
    if not _PLAIN.fullmatch(text) or text != text.strip() or text.lower() in _YAML_WORDS:
        return False
    if ": " in text or text.endswith(":") or _INT_OR_DATE.fullmatch(text):
        return False
    try:
        float(text.replace("_", ""))
    except ValueError:
        return True
    return False  # a number in YAML


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if _is_plain(text):
        return text
    if any(ord(c) < 32 for c in text):
        return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML string
    return "'" + text.replace("'", "''") + "'"


def yaml_lines(value: Any, indent: int = 0) -> list[str]:
    """Block-style YAML of dicts, lists and scalars (what ``mv get`` prints)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            k = _scalar(str(key))
            if isinstance(item, Mapping | list | tuple) and item:
                lines.append(f"{pad}{k}:")
                nested = indent + 2 if isinstance(item, Mapping) else indent  # as PyYAML
                lines.extend(yaml_lines(item, nested))
            else:
                lines.append(f"{pad}{k}: {_inline(item)}")
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, Mapping | list | tuple) and item:
                sub = yaml_lines(item, indent + 2)
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {_inline(item)}")
    else:
        lines.append(f"{pad}{_inline(value)}")
    return lines


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list | tuple):
        return "[]"
    return _scalar(jsonable(value))


def to_yaml(value: Mapping[str, Any]) -> str:
    """YAML-like text of a mapping, as BentoML's ``models get`` prints it."""
    return "\n".join(yaml_lines(value))
