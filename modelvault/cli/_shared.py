"""Helpers the command modules share: the store the commands act on, output, options."""

import sys
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from modelvault.store import Store


class TableOrJson(str, Enum):
    table = "table"
    json = "json"


def _store() -> "Store":
    from modelvault.models import default_store

    return default_store()


def _echo(text: str) -> None:
    """What the command exists to print (a listing, a report): printed even with ``-q``."""
    sys.stdout.write(text + "\n")


class _Quiet:
    """Set by ``main()`` when ``-q`` / ``--quiet`` is given, before or after the command."""

    on = False


def _say(text: str) -> None:
    """A status line ("saved", "pushed ..."): left out with ``-q``."""
    if not _Quiet.on:
        _echo(text)


Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bar and no status line; errors still.")
]


def _parse_pairs(pairs: list[str] | None, what: str, *, typed: bool) -> dict[str, Any]:
    """``KEY=VALUE`` arguments as a dict; values parsed as JSON when ``typed`` and valid."""
    from modelvault.cli.failures import UsageError
    from modelvault.errors import InvalidInput
    from modelvault.remotes import parse_options

    try:
        return parse_options(pairs or [], typed=typed)
    except InvalidInput as exc:
        raise UsageError(f"{what}: {exc}") from None
