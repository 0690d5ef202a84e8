"""``mv remote add|list|remove`` and ``mv list --remote``: names for fsspec URLs, kept in
the store's config (:mod:`modelvault.remotes`). :mod:`modelvault.cli.app` adds this group
to its app as ``remote`` (and ``mv remote unlock`` from :mod:`modelvault.cli.maintenance`).
"""

import sys
from typing import Annotated

import typer

from modelvault.cli import render
from modelvault.cli._shared import TableOrJson, _echo, _parse_pairs, _say, _store

remote_app = typer.Typer(
    help="Configure remotes: names for fsspec URLs.",
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
)


def _list_remote(remote: str, name: str | None, output: TableOrJson) -> None:
    from modelvault.models import list_remote

    tags = list_remote(remote, name)
    if output is TableOrJson.json:
        docs = [{"tag": str(t), "name": t.name, "version": t.version} for t in tags]
        _echo(render.to_json(docs))
        return
    _echo(render.table(("Tag",), [(str(t),) for t in tags], sys.stdout))


@remote_app.command("add")
def remote_add(
    name: Annotated[str, typer.Argument(help="Name of the remote, e.g. origin.", metavar="NAME")],
    url: Annotated[
        str, typer.Argument(help="fsspec URL: s3://bucket/prefix, file:///srv/m", metavar="URL")
    ],
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option", "-O", help="Storage option KEY=VALUE for fsspec (VALUE parsed as JSON)."
        ),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Point an existing remote of that name elsewhere.")
    ] = False,
) -> None:
    """Add a remote (or, with --replace, point an existing one elsewhere)."""
    from modelvault import remotes

    opts = _parse_pairs(option, "option", typed=True)
    added = remotes.add(name, url, store=_store(), replace=replace, **opts)
    _say(f"Remote {added.name} -> {added.public_url()}")


@remote_app.command("list")
def remote_list(
    output: Annotated[TableOrJson, typer.Option("--output", "-o")] = TableOrJson.table,
) -> None:
    """List configured remotes (secrets masked: URL passwords, secret-looking options)."""
    from modelvault import remotes

    found = remotes.list(store=_store())
    if output is TableOrJson.json:
        _echo(render.to_json([render.remote_summary(r) for r in found]))
        return
    _echo(render.table(("Name", "URL", "Options"), map(render.remote_row, found), sys.stdout))


@remote_app.command("remove")
def remote_remove(
    name: Annotated[str, typer.Argument(help="Name of the remote.", metavar="NAME")],
) -> None:
    """Forget a remote (nothing on the remote is deleted)."""
    from modelvault import remotes

    remotes.remove(name, store=_store())
    _say(f"Remote {name} removed")
