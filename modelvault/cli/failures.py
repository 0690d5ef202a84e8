"""One line per failure: what went wrong, what to do, and the exit code."""

from __future__ import annotations

from modelvault.errors import (
    ArchiveError,
    IntegrityError,
    InvalidInput,
    InvalidTag,
    ModelExists,
    ModelVaultError,
    NotFound,
    PathNotFound,
    RemoteError,
)

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Most specific class first; each hint says what to do next.
_HINTS: list[tuple[type[ModelVaultError], str]] = [
    (InvalidTag, "tags look like NAME or NAME:VERSION"),
    (PathNotFound, "check the path"),
    (NotFound, "`mv list` shows the models in the store"),
    (ModelExists, "versions are immutable: save under a new version, or without one"),
    (IntegrityError, "run `mv verify` to see what is damaged"),
    (ArchiveError, "the store is unchanged; export the archive again from a healthy store"),
    (RemoteError, "check the remote's URL, options and credentials (`mv remote list`)"),
]


class UsageError(InvalidInput):
    """A command-line argument that cannot be used (exit code 2)."""


def describe(exc: BaseException) -> tuple[str, int]:
    """The one-line message and exit code for an error that ends a command."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, ModelVaultError):
        code = EXIT_USAGE if isinstance(exc, InvalidTag | UsageError) else EXIT_ERROR
        hint = next((h for cls, h in _HINTS if isinstance(exc, cls)), None)
        said = hint is not None and hint.split(":")[0] in text  # the message says it already
        if hint and not said and "`mv " not in text and not isinstance(exc, UsageError):
            text = f"{text} ({hint})"
        return text, code
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}", EXIT_ERROR
    return (
        f"internal error: {type(exc).__name__}: {text} (run with --debug for the traceback)",
        EXIT_ERROR,
    )
