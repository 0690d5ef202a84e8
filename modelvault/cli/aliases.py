"""``mv alias set|list|remove``: movable names for versions (``name@alias``).

:mod:`modelvault.cli.app` registers :data:`alias_app` under ``alias``.
"""

import sys
from typing import Annotated

import typer

from modelvault.cli import render
from modelvault.cli._shared import TableOrJson, _echo, _say, _store

alias_app = typer.Typer(
    help="Aliases: movable names for versions (NAME@ALIAS, e.g. iris_clf@prod).",
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
)

AliasArg = Annotated[
    str, typer.Argument(help="NAME@ALIAS, e.g. iris_clf@prod", metavar="NAME@ALIAS")
]


@alias_app.command("set")
def alias_set(
    alias: AliasArg,
    tag: Annotated[
        str,
        typer.Argument(
            help="The version: NAME (its newest now), NAME:VERSION or NAME@ALIAS.", metavar="TAG"
        ),
    ],
) -> None:
    """Point NAME@ALIAS at a version (moving it if it exists: atomically)."""
    from modelvault.aliases import parse_alias
    from modelvault.errors import InvalidInput, InvalidTag
    from modelvault.tags import Tag

    named = parse_alias(alias)
    if named is None:
        raise InvalidTag(f"{alias!r} is not an alias: give NAME@ALIAS, e.g. iris_clf@prod")
    name, short = named
    target = parse_alias(tag)
    target_name = target[0] if target is not None else Tag.from_str(tag).name
    if target_name != name:
        raise InvalidInput(
            f"{alias} can only name a version of {name!r}, not of {target_name!r}: "
            f"give {name}:VERSION"
        )
    pinned = _store().set_alias(tag, short)
    _say(f"Alias {name}@{short} -> {pinned}")


@alias_app.command("list")
def alias_list(
    name: Annotated[
        str | None, typer.Argument(help="Only the aliases of this name.", metavar="NAME")
    ] = None,
    output: Annotated[TableOrJson, typer.Option("--output", "-o")] = TableOrJson.table,
    remote: Annotated[
        str | None, typer.Option("--remote", help="List the aliases a remote holds instead.")
    ] = None,
) -> None:
    """List aliases: Alias, Tag."""
    store = _store()
    found = store.aliases_remote(remote, name) if remote is not None else store.aliases(name)
    if output is TableOrJson.json:
        docs = [
            {"alias": key, "name": tag.name, "version": tag.version, "tag": str(tag)}
            for key, tag in found.items()
        ]
        _echo(render.to_json(docs))
        return
    rows = [(key, str(tag)) for key, tag in found.items()]
    _echo(render.table(("Alias", "Tag"), rows, sys.stdout))


@alias_app.command("remove")
def alias_remove(alias: AliasArg) -> None:
    """Remove NAME@ALIAS (the version stays)."""
    _store().remove_alias(alias)
    _say(f"Alias {alias.lower()} removed")
