"""URLs and failures of remotes, without any backend library: secrets kept out of URLs
(:func:`has_password`, :func:`public_url`, :func:`redact`, :func:`refuse_password`), and
what a foreign exception means (:func:`is_transient`, :func:`remote_error`: one line, the
public URL, advice). Re-exported by :mod:`modelvault.remote.transport`, which alone
imports fsspec.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping
from typing import Any

from modelvault.errors import InvalidInput, ModelVaultError, RemoteError

# ``scheme://`` then a user part: ``user@`` (no '/', no ':') or ``user:password@`` where
# the password may hold '/' and '+' (AWS secret keys do); ``host:8080/path@x`` is a port.
_SCHEME = r"[a-zA-Z][a-zA-Z0-9+.\-]*://"
_USER_ONLY = re.compile(rf"^({_SCHEME})([^/@:]*)@")
_USER_PASSWORD = re.compile(rf"^({_SCHEME})([^/@:]*):(?!\d+(?:/|$))([^@]*)@")
_URL_IN_TEXT = re.compile(rf"{_SCHEME}[^\s'\"<>]*")
_HINT_FOR_SECRETS = (
    "credentials come from the backend's usual places (for S3: AWS_ACCESS_KEY_ID / "
    "AWS_SECRET_ACCESS_KEY or AWS_PROFILE), see docs/remotes.md"
)


def has_password(url: str) -> bool:
    """Whether ``url`` carries a ``user:password@`` part."""
    return isinstance(url, str) and _USER_PASSWORD.match(url) is not None


def public_url(url: str) -> str:
    """``url`` without any ``user:secret@`` (or ``user@``) part: the one form shown anywhere."""
    url = _USER_PASSWORD.sub(r"\1", url, count=1)
    return _USER_ONLY.sub(r"\1", url, count=1)


def redact(text: str) -> str:
    """``text`` with every URL in it shown as :func:`public_url` shows it."""
    return _URL_IN_TEXT.sub(lambda m: public_url(m.group(0)), text)


def refuse_password(url: str) -> None:
    """Raise InvalidInput (naming the URL without its secret) if ``url`` holds a password.

    Raises:
        InvalidInput: ``url`` is ``scheme://user:password@...``.
    """
    if has_password(url):
        raise InvalidInput(
            f"{public_url(url)}: a URL with a user:password@ part is refused, so no secret "
            f"is stored, shown or logged; {_HINT_FOR_SECRETS}"
        )


def _password_in(value: Any, where: str = "") -> str | None:
    """The path of the first option (nested included) whose value is a URL with a password."""
    if isinstance(value, str):
        return where if has_password(value) else None
    items: Any = ()
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    for k, v in items:
        found = _password_in(v, f"{where}.{k}" if where else str(k))
        if found is not None:
            return found
    return None


_TRANSIENT_ERRNOS = {
    errno.EAGAIN,
    errno.EIO,
    errno.EBUSY,
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.EPIPE,
}
_PERMANENT = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


_FOREIGN = ("botocore", "aiobotocore", "aiohttp", "urllib3", "http", "requests", "fsspec")
# failures of the connection or of a body in flight, by class name (imports stay lazy)
_NETWORK_ERRORS = frozenset(
    {
        "ConnectionError",  # botocore: EndpointConnectionError, ConnectTimeoutError, ...
        "HTTPClientError",  # botocore: ReadTimeoutError, ConnectionClosedError, ...
        "ClientConnectionError",  # aiohttp
        "ClientPayloadError",  # aiohttp: a body cut short
        "IncompleteRead",  # http.client, urllib3
        "ProtocolError",  # urllib3
        "FSTimeoutError",  # fsspec
    }
)
_STREAM_ERRORS = frozenset(
    {
        "AioReadTimeoutError",  # aiobotocore: a body that stopped coming
        "FSTimeoutError",  # s3fs raises it from the above
        "ResponseStreamingError",
        "ClientPayloadError",
        "IncompleteRead",
    }
)
_NO_CREDENTIALS = frozenset(
    {
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "NoAuthTokenError",
    }
)


def _named(exc: BaseException, names: frozenset[str]) -> bool:
    """Whether ``exc`` is an instance of a foreign class named in ``names``."""
    return any(
        c.__name__ in names and c.__module__.split(".")[0] in _FOREIGN for c in type(exc).__mro__
    )


def is_transient(exc: BaseException) -> bool:
    """Whether a failure may go away by itself (network, throttling, a busy server).

    Missing credentials, access denied, a missing bucket, invalid parameters and every
    other error of the backend's libraries are not: retrying cannot fix them.
    """
    if isinstance(exc, (ModelVaultError, *_PERMANENT)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)) or _named(exc, _NETWORK_ERRORS):
        return True
    if type(exc).__module__.split(".")[0] in _FOREIGN:
        return False  # NoCredentialsError, ParamValidationError, ClientError, ...
    if isinstance(exc, OSError):
        text = str(exc)
        slow = any(s in text for s in ("SlowDown", "ServiceUnavailable", "InternalError"))
        return exc.errno is None or exc.errno in _TRANSIENT_ERRNOS or slow
    return False


def _advice(exc: BaseException) -> str:
    """What to do about a failure, when its kind is known."""
    if _named(exc, _NO_CREDENTIALS):
        return (
            "no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
            "AWS_PROFILE, where this runs (docs/remotes.md, Credentials)"
        )
    if isinstance(exc, PermissionError):
        return "access denied: check the credentials and what they may do on this bucket or path"
    if isinstance(exc, FileNotFoundError):
        return "the bucket (or folder) does not exist: create it, or fix the URL (`mv remote list`)"
    if isinstance(exc, (ConnectionError, TimeoutError)) or _named(exc, _NETWORK_ERRORS):
        return (
            "the endpoint is unreachable or stalled: check the URL and endpoint_url "
            "(`mv remote list`) and the network; timeouts: docs/remotes.md"
        )
    return ""


def remote_error(what: str, exc: BaseException, attempts: int = 1) -> RemoteError:
    """RemoteError for a failed ``what`` (verb and public URL): one line, the cause's class
    and text, advice when the kind is known, and never a secret (URLs are redacted)."""
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    detail = str(exc) or str(exc.__cause__ or exc.__context__ or "") or "no detail"
    cause = " ".join(detail.split())
    advice = _advice(exc)
    text = f"{what} failed{tries}: {type(exc).__name__}: {cause}" + (
        f"; {advice}" if advice else ""
    )
    return RemoteError(redact(text))
