"""Configured remotes: names for fsspec URLs and their storage options, kept in the store config.

Credentials are never stored here: they come from the backend's usual places (for S3:
the AWS environment variables, ``AWS_ENDPOINT_URL_S3`` included, and profiles). An option
whose name looks like a credential (``key``, ``secret``, ``token``, ``password`` ...) is
refused, so a secret never lands in ``config.json`` or in ``mv remote list``.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelvault.errors import InvalidInput, NotFound
from modelvault.store import Store

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}")
_SECRET_KEYS = re.compile(r"secret|passw|token|credential|access_key|session|key$", re.IGNORECASE)


@dataclass(frozen=True)
class Remote:
    """A configured remote: its name, fsspec URL and storage options."""

    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)

    def public_options(self) -> dict[str, Any]:
        """The options with anything that looks like a secret masked, for display."""
        return {k: ("***" if _SECRET_KEYS.search(k) else v) for k, v in self.options.items()}


def _store(store: Store | None) -> Store:
    if store is not None:
        return store
    from modelvault.models import default_store

    return default_store()


def add(name: str, url: str, *, store: Store | None = None, **storage_options: Any) -> Remote:
    """Add (or replace) the remote ``name`` pointing at ``url``.

    Raises:
        InvalidInput: bad name, or a URL that is not a path or ``protocol://`` URL.
    """
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"invalid remote name {name!r}: letters, digits, _ - . only")
    if not isinstance(url, str) or not url:
        raise InvalidInput("a remote needs a URL, e.g. s3://bucket/prefix or file:///srv/models")
    secret = _secret_option(storage_options)
    if secret is not None:
        raise InvalidInput(
            f"option {secret!r} looks like credentials: they are not stored in the config; "
            "use the backend's usual places (for S3: AWS_* environment variables or a profile)"
        )
    try:
        json.dumps(storage_options)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"storage options must be plain JSON values: {exc}") from exc
    remote = Remote(name, url, dict(storage_options))

    def change(doc: dict[str, Any]) -> None:
        doc.setdefault("remotes", {})[name] = {"url": url, "options": remote.options}

    _store(store).update_config(change)
    return remote


def list(*, store: Store | None = None) -> builtins.list[Remote]:
    """Every configured remote, sorted by name."""
    doc = _store(store).read_config().get("remotes", {})
    return [Remote(n, r["url"], dict(r.get("options", {}))) for n, r in sorted(doc.items())]


def get(name: str, *, store: Store | None = None) -> Remote:
    """The configured remote ``name``.

    Raises:
        NotFound: no remote of that name.
    """
    for remote in list(store=store):
        if remote.name == name:
            return remote
    raise NotFound(f"no remote named {name!r}: add it with `mv remote add {name} URL`")


def remove(name: str, *, store: Store | None = None) -> None:
    """Forget the remote ``name``.

    Raises:
        NotFound: no remote of that name.
    """
    get(name, store=store)

    def change(doc: dict[str, Any]) -> None:
        doc.get("remotes", {}).pop(name, None)

    _store(store).update_config(change)


def _secret_option(options: Mapping[str, Any]) -> str | None:
    """The first option name (nested dicts included) that looks like a credential."""
    for k, v in options.items():
        if _SECRET_KEYS.search(str(k)):
            return str(k)
        if isinstance(v, Mapping):
            inner = _secret_option(v)
            if inner is not None:
                return inner
    return None


def parse_options(items: Iterable[str], *, typed: bool = True) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` (the CLI's ``--option``, ``--label``, ``--metadata``) as a dict.

    With ``typed``, a value that reads as JSON (``true``, ``3``, ``{"a": 1}``) is taken
    as that value, anything else as a string; without, every value is a string.

    Raises:
        InvalidInput: an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(text) if typed else text
        except ValueError:
            out[key] = text
    return out
