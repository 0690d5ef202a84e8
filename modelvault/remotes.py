"""Configured remotes: names for fsspec URLs and their storage options, kept in the store config.

Credentials are never stored here: they come from the backend's usual places (for S3:
the AWS environment variables, ``AWS_ENDPOINT_URL_S3`` included, and profiles). A URL
with a ``user:password@`` part, and an option whose name looks like a credential
(``key``, ``secret``, ``token``, ``password``, ``passphrase``, ``Authorization``,
``connection_string`` ..., at any depth) or whose value is such a URL, are refused, so a
secret never lands in ``config.json``. What is shown (``repr``, ``mv remote list``) goes
through :meth:`Remote.public_url` and :meth:`Remote.public_options`, which hide secrets a
hand-edited config may still hold.
"""

from __future__ import annotations

import builtins
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelvault.errors import IntegrityError, InvalidInput, NotFound
from modelvault.repo import Repository
from modelvault.repo.layout import default_home

if TYPE_CHECKING:
    from modelvault.store import Store

__all__ = [
    "MASK",
    "Remote",
    "add",
    "chosen",
    "damage",
    "get",
    "list",
    "parse_options",
    "remove",
    "resolve",
]

# modelvault.remote.transport (URL redaction) is imported where used: importing it loads
# modelvault.remote and its sync machinery, which `mv save --label` need not pay for.

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}")
_SECRET_KEYS = re.compile(
    r"secret|passw|passphrase|token|credential|access_key|session|key$|auth|cookie"
    r"|connection_string|conn_str|sas|private",
    re.IGNORECASE,
)
MASK = "***"


@dataclass(frozen=True)
class Remote:
    """A configured remote: its name, fsspec URL and storage options.

    Its ``repr`` shows :meth:`public_url` and :meth:`public_options`, never a secret.
    """

    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)

    def public_url(self) -> str:
        """The URL without any ``user:password@`` part, for display."""
        from modelvault.remote.transport import public_url

        return public_url(self.url)

    def public_options(self) -> dict[str, Any]:
        """The options with anything that looks like a secret masked (at any depth)."""
        masked = _masked(self.options)
        assert isinstance(masked, dict)
        return masked

    def __repr__(self) -> str:
        return (
            f"Remote(name={self.name!r}, url={self.public_url()!r}, "
            f"options={self.public_options()!r})"
        )

    __str__ = __repr__


def _masked(value: Any) -> Any:
    from modelvault.remote.transport import has_password, public_url

    if isinstance(value, Mapping):
        return {
            str(k): (MASK if _SECRET_KEYS.search(str(k)) else _masked(v)) for k, v in value.items()
        }
    if isinstance(value, builtins.list | tuple):
        return [_masked(v) for v in value]
    if isinstance(value, str) and has_password(value):
        return public_url(value)
    return value


def _repo(store: Store | None) -> Repository:
    """The repository whose config keeps the remotes: ``store``'s, else the default
    store's (``$MODELVAULT_HOME``)."""
    if store is not None:
        return store.repo
    return Repository(default_home().expanduser().absolute())


def add(
    name: str,
    url: str,
    *,
    store: Store | None = None,
    replace: bool = False,
    **storage_options: Any,
) -> Remote:
    """Add the remote ``name`` pointing at ``url``; with ``replace``, point an existing one
    elsewhere (adding it again exactly as it is changes nothing).

    Raises:
        InvalidInput: bad name, a URL that is not a path or a ``protocol://`` URL of a
            protocol fsspec knows, a URL with a ``user:password@`` part, an option that
            looks like credentials, or ``name`` exists with another URL or options and
            ``replace`` is not given.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(f"invalid remote name {name!r}: letters, digits, _ - . only")
    if not isinstance(url, str) or not url:
        raise InvalidInput("a remote needs a URL, e.g. s3://bucket/prefix or file:///srv/models")
    from modelvault.remote.transport import refuse_password, refuse_unknown_protocol

    refuse_password(url)
    refuse_unknown_protocol(url)
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
        _remotes_of(doc, where)
        if doc.get("remotes") is None:
            doc["remotes"] = {}
        entry = {"url": url, "options": remote.options}
        old = doc["remotes"].get(name)
        if old is not None and old != entry and not replace:
            from modelvault.remote.urls import public_url

            shown = public_url(str(old.get("url"))) if isinstance(old, dict) else "?"
            raise InvalidInput(
                f"remote {name!r} already exists ({shown}): add it with --replace "
                f"(Python: replace=True) to point it elsewhere, or `mv remote remove {name}`"
            )
        doc["remotes"][name] = entry

    repo = _repo(store)
    where = repo.layout.config
    repo.config.update(change)
    return remote


def list(*, store: Store | None = None) -> builtins.list[Remote]:
    """Every configured remote, sorted by name.

    Raises:
        InvalidInput: the ``remotes`` of the store's config.json (edited by hand) is not
            shaped as ``{"NAME": {"url": "...", "options": {...}}}``.
    """
    repo = _repo(store)
    return _remotes_of(repo.config.read(), repo.layout.config)


def damage(*, store: Store | None = None) -> str | None:
    """What is wrong with the ``remotes`` of the store's config.json (``verify`` reports
    it), or None: a shape :func:`list` refuses, or ``null``, which :func:`list` reads as no
    remotes but modelvault never writes (what the file held there is lost)."""
    repo = _repo(store)
    try:
        _remotes_of(repo.config.read(), repo.layout.config, null_is_none=False)
    except (InvalidInput, IntegrityError) as exc:
        return str(exc)
    return None


def _remotes_of(
    doc: Mapping[str, Any], where: object, *, null_is_none: bool = True
) -> builtins.list[Remote]:
    """The remotes of a config document, checked for shape."""
    raw = doc.get("remotes", {})
    fix = (
        '(expected "remotes": {"NAME": {"url": "s3://bucket/prefix", "options": {}}}): '
        "fix or delete that part of the file, then `mv remote add NAME URL`"
    )
    if raw is None and null_is_none:
        return []
    if not isinstance(raw, Mapping):
        raise InvalidInput(f'{where}: "remotes" is a {_kind(raw)}, not an object {fix}')
    out = []
    for name, entry in sorted(raw.items()):
        if not isinstance(entry, Mapping):
            raise InvalidInput(f"{where}: remote {name!r} is a {_kind(entry)}, not an object {fix}")
        url, options = entry.get("url"), entry.get("options", {})
        if not isinstance(url, str) or not url:
            raise InvalidInput(f"{where}: remote {name!r} has no URL {fix}")
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise InvalidInput(
                f"{where}: the options of remote {name!r} are a {_kind(options)}, not an "
                f"object {fix}"
            )
        out.append(Remote(str(name), url, dict(options)))
    return out


def _kind(value: Any) -> str:
    kinds = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}
    return kinds.get(type(value), "null value" if value is None else type(value).__name__)


def get(name: str, *, store: Store | None = None) -> Remote:
    """The configured remote ``name``.

    Raises:
        NotFound: no remote of that name.
    """
    for remote in list(store=store):
        if remote.name == name:
            return remote
    raise NotFound(f"no remote named {name!r}: add it with `mv remote add {name} URL`")


def chosen(remote: str | None = None) -> str:
    """The remote a push, pull or listing uses, as the user named it (a name or a URL):
    ``remote``, else ``$MODELVAULT_REMOTE``, else ``origin``."""
    return remote or os.environ.get("MODELVAULT_REMOTE") or "origin"


def resolve(remote: str | None = None, *, store: Store | None = None) -> tuple[str, dict[str, Any]]:
    """``(url, storage options)`` of a remote given by name or URL; by default
    ``$MODELVAULT_REMOTE`` (a name or a URL), else the configured remote ``origin``.

    Raises:
        NotFound: no remote given and no default, or an unknown remote name.
        InvalidInput: the ``remotes`` of config.json is not shaped as :func:`list` expects.
    """
    name = remote or os.environ.get("MODELVAULT_REMOTE") or None
    configured = {r.name: r for r in list(store=store)}
    if name is None:
        if "origin" in configured:
            return configured["origin"].url, dict(configured["origin"].options)
        raise NotFound(
            "no remote given, $MODELVAULT_REMOTE is not set and no remote is named "
            "'origin': add one with `mv remote add origin s3://bucket/prefix` "
            "(or modelvault.remotes.add('origin', url))"
        )
    if name in configured:
        return configured[name].url, dict(configured[name].options)
    if "://" in name or "/" in name:
        return name, {}
    raise NotFound(f"no remote named {name!r}: add it with `mv remote add {name} URL`")


def remove(name: str, *, store: Store | None = None) -> None:
    """Forget the remote ``name``.

    Raises:
        NotFound: no remote of that name.
    """
    get(name, store=store)

    def change(doc: dict[str, Any]) -> None:
        (doc.get("remotes") or {}).pop(name, None)

    _repo(store).config.update(change)


def _secret_option(options: Mapping[str, Any]) -> str | None:
    """The first option name that looks like a credential, or whose value is (or holds) a
    URL with a password; nested dicts and lists included."""
    for k, v in options.items():
        if _SECRET_KEYS.search(str(k)) or _holds_password(v):
            return str(k)
        if isinstance(v, Mapping):
            inner = _secret_option(v)
            if inner is not None:
                return inner
    return None


def _holds_password(value: Any) -> bool:
    from modelvault.remote.transport import has_password

    if isinstance(value, str):
        return has_password(value)
    if isinstance(value, builtins.list | tuple):
        return any(_holds_password(v) for v in value)
    return False


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
