"""``mv diff A B`` and ``mv status [REMOTE]``: metadata and indexes only, never a chunk.

:mod:`modelvault.cli.app` registers them (see docs/cli.md).
"""

import sys
from typing import Annotated

import typer

from modelvault.cli import render
from modelvault.cli._shared import TableOrJson, _echo, _store


def diff(
    a: Annotated[str, typer.Argument(help="The model to compare from.", metavar="A")],
    b: Annotated[str, typer.Argument(help="The model to compare to.", metavar="B")],
    output: Annotated[TableOrJson, typer.Option("--output", "-o")] = TableOrJson.table,
) -> None:
    """Files added, removed and changed from A to B, and the bytes of B A already holds."""
    from modelvault.compare import diff as compare

    store = _store()
    result = compare(store.repo, store.get(a).ref, store.get(b).ref)
    if output is TableOrJson.json:
        _echo(render.to_json(result))
        return
    marked = (("+", result["added"]), ("-", result["removed"]), ("M", result["changed"]))
    rows = [
        (mark, path, render.human_size(result["sizes"][path]))
        for mark, paths in marked
        for path in paths
    ]
    rows.sort(key=lambda row: row[1])
    if rows:
        _echo(render.table(("", "File", "Size"), rows, sys.stdout))
    total = result["shared_bytes"] + result["new_bytes"]
    share = f" ({result['shared_bytes'] / total:.0%})" if total else ""
    _echo(
        f"{len(result['added'])} added, {len(result['removed'])} removed, "
        f"{len(result['changed'])} changed; {render.human_size(result['shared_bytes'])} of "
        f"{result['b']} already stored for {result['a']}{share}, "
        f"{render.human_size(result['new_bytes'])} new"
    )


def status(
    remote: Annotated[
        str | None,
        typer.Argument(
            help="Remote name or URL [default: $MODELVAULT_REMOTE, else origin].",
            metavar="REMOTE",
        ),
    ] = None,
    output: Annotated[TableOrJson, typer.Option("--output", "-o")] = TableOrJson.table,
) -> None:
    """Each local tag: on the remote or not, and the bytes `mv push` would send now."""
    from modelvault import remotes
    from modelvault.compare import status as compare

    store = _store()
    url, options = remotes.resolve(remote, store=store)
    refs = [m.ref for m in store.list()]
    rows = compare(store.repo, url, options, refs)
    if output is TableOrJson.json:
        _echo(render.to_json(rows))
        return
    cells = [
        (r["tag"], "yes" if r["on_remote"] else "no", render.human_size(r["bytes_to_push"]))
        for r in rows
    ]
    _echo(render.table(("Tag", "On remote", "To push"), cells, sys.stdout))
