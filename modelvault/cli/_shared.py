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
    sys.stdout.write(text + "\n")


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
