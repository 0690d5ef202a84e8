"""Helpers the command modules share: the store the commands act on, output, options."""

import sys
from enum import Enum
from typing import TYPE_CHECKING, Annotated

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
