"""The maintenance commands: ``mv gc``, ``mv verify``, ``mv du`` (``--remote NAME``: of a
remote), and ``mv delete --remote`` / ``mv remote unlock`` (remote maintenance).

:mod:`modelvault.cli.app` registers them on its app after the model commands (so ``mv
--help`` lists them in the same place) and re-exports them.
"""

import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from modelvault.cli import failures, progress, render
from modelvault.cli._shared import Quiet, TableOrJson, _echo, _say, _store

RemoteOpt = Annotated[
    str | None,
    typer.Option(
        "--remote", help="Work on this remote (a name or URL) instead of the local store."
    ),
]


def _remote_progress(bar: progress.Bar | None) -> Callable[[Any], None] | None:
    """A callback drawing gc / verify progress (a remote's ``RemoteProgress``, the local
    store's ``maintenance.Step``: the same fields) on ``bar``: the phase as the
    description, bytes when the phase counts bytes, else objects."""
    if bar is None:
        return None

    def show(p: Any) -> None:
        if p.total_bytes:
            bar.update(p.phase, p.bytes, p.total_bytes)
            return
        # a phase that counts objects (or packs): the count in words, the bar open-ended
        # (its columns speak bytes)
        of = f" of {p.total_objects}" if p.total_objects else ""
        bar.update(f"{p.phase} ({p.objects}{of})", 0, None)

    return show


def gc(remote: RemoteOpt = None, quiet: Quiet = False) -> None:
    """Free the stored bytes no tag reaches (after deletes); with --remote, on a remote
    (safe beside other machines' pushes: see docs/remotes.md, Remote gc)."""
    if remote is not None:
        with progress.bar(f"gc {remote}", None, quiet) as bar:
            freed = _store().gc_remote(remote, progress=_remote_progress(bar))
        _say(f"Freed {render.human_size(freed)} on {remote}")
        return
    with progress.bar("collecting garbage", None, quiet) as bar:
        freed = _store().gc(progress=_remote_progress(bar))
    _say(f"Freed {render.human_size(freed)}")


def verify(
    output: Annotated[TableOrJson, typer.Option("--output", "-o")] = TableOrJson.table,
    remote: RemoteOpt = None,
    quiet: Quiet = False,
) -> None:
    """Re-hash every stored object; exit 1 when anything is damaged or missing
    (--remote: every object of that remote, with ranged reads)."""
    if remote is not None:
        _verify_remote(remote, output, quiet)
        return
    with progress.bar("verifying", None, quiet) as bar:
        report = _store().verify(progress=_remote_progress(bar))
    if output is TableOrJson.json:
        doc = {
            "ok": report.ok,
            "objects_checked": report.objects_checked,
            "corrupt": report.corrupt,
            "missing": report.missing,
            "broken_tags": [str(t) for t in report.broken_tags],
            "damaged_files": report.damaged_files,
            "set_aside": report.set_aside,
            "rebuilt": report.rebuilt,
            "dropped_caches": report.dropped_caches,
        }
        _echo(render.to_json(doc))
    elif report.ok:
        _say(f"{render.styled('ok', 'green')}: {report.objects_checked} objects checked")
    else:
        _print_damage(report.objects_checked, report.corrupt, report.missing, report.broken_tags)
        if "config.json" in report.damaged_files:  # its repair is in the reason
            _echo(f"damaged config.json: {report.damaged_files['config.json']}")
        _print_repair(report.broken_tags, report.damaged_files)
    if not report.ok:
        raise typer.Exit(failures.EXIT_ERROR)


def _verify_remote(remote: str, output: TableOrJson, quiet: bool) -> None:
    with progress.bar(f"verifying {remote}", None, quiet) as bar:
        report = _store().verify_remote(remote, progress=_remote_progress(bar))
    if output is TableOrJson.json:
        doc = {
            "ok": report.ok,
            "remote": report.url,
            "objects_checked": report.objects_checked,
            "bytes_checked": report.bytes_checked,
            "corrupt": report.corrupt,
            "missing": report.missing,
            "broken_tags": [str(t) for t in report.broken_tags],
            "broken_aliases": report.broken_aliases,
            "damaged_files": report.damaged_files,
        }
        _echo(render.to_json(doc))
    elif report.ok:
        _say(
            f"{render.styled('ok', 'green')}: {report.objects_checked} objects checked on "
            f"{report.url}"
        )
    else:
        _print_damage(report.objects_checked, report.corrupt, report.missing, report.broken_tags)
        for alias, why in sorted(report.broken_aliases.items()):
            _echo(f"broken alias {alias}: {why}")
        for key, why in sorted(report.damaged_files.items()):
            _echo(f"damaged {report.url}/{key}: {why}")
        sys.stderr.write(
            f"mv: error: the remote {remote} is damaged; push each broken tag there again "
            "from a store that holds it sound (under a new version if its ref is damaged), "
            "then `mv verify --remote` again\n"
        )
    if not report.ok:
        raise typer.Exit(failures.EXIT_ERROR)


def delete_remote(tags: list[str], remote: str, yes: bool) -> None:
    """``mv delete TAG... --remote NAME``: remove tags (or ``name@alias``) from a remote."""
    store = _store()
    if not yes:
        what = ", ".join(tags)
        try:
            answer = typer.confirm(f"Delete {what} on {remote}?", default=False)
        except typer.Abort:
            raise failures.UsageError(
                "no answer: nothing deleted (pass -y to skip the question)"
            ) from None
        if not answer:
            _say("Nothing deleted.")
            raise typer.Exit(1)
    for text in tags:
        for gone in store.delete_remote(text, remote):
            _say(f"Deleted {gone} on {remote} (`mv gc --remote {remote}` frees its bytes)")


def unlock(
    remote: Annotated[str, typer.Argument(help="Remote name or URL.", metavar="NAME")],
    everything: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Remove every lock, also live-looking ones: only when the machines holding "
            "them are known to be dead.",
        ),
    ] = False,
) -> None:
    """Remove a remote's stale locks (left by a push or gc that died); see docs/remotes.md."""
    n = _store().unlock_remote(remote, everything=everything)
    _say(f"Removed {n} lock(s) on {remote}")


def _print_repair(broken: list[Any], damaged_files: dict[str, str]) -> None:
    """The commands that repair the store (docs/architecture.md, Repair), on stderr."""
    lines = ["mv: error: the store is damaged; to repair it, fetch a healthy copy of each "
             "broken tag (from a remote, or `mv import FILE` of its archive):"]  # fmt: skip
    for tag in broken:
        bad_ref = f"refs/{tag.name}/{tag.version}" in damaged_files
        lines.append(f"  mv delete {tag} -y && mv pull {tag}" if bad_ref else f"  mv pull {tag}")
    lines.append("then `mv verify` again; `mv gc` frees the damaged packs verify set aside")
    sys.stderr.write("\n".join(lines) + "\n")


def _print_damage(checked: int, corrupt: list[str], missing: list[str], broken: list[Any]) -> None:
    head = render.styled("DAMAGED", "red")
    _echo(
        f"{head}: {checked} objects checked, {len(corrupt)} corrupt, {len(missing)} missing, "
        f"{len(broken)} tag(s) broken"
    )
    for oid in corrupt:
        _echo(f"corrupt object {oid}")
    for oid in missing:
        _echo(f"missing object {oid}")
    for tag in broken:
        _echo(f"broken tag {tag}")


def du(
    output: Annotated[TableOrJson, typer.Option("--output", "-o")] = TableOrJson.table,
) -> None:
    """Logical vs stored bytes per model and in total (the dedup ratio).

    Size: the model's files. Stored: bytes on disk of every object the model reaches
    (compressed, deduplicated within it). Unique: the part no other tag reaches, which
    `mv delete` + `mv gc` of this model alone would free.
    """
    store = _store()
    from modelvault.repo import maintenance

    rows = maintenance.footprints(store.repo, [m.ref for m in store.list()])
    stats = store.stats()
    total = {
        "models": stats.models,
        "logical_bytes": stats.logical_bytes,
        "stored_bytes": stats.stored_bytes,
        "dedup_ratio": round(stats.dedup_ratio, 4),
    }
    if output is TableOrJson.json:
        _echo(render.to_json({"models": rows, "total": total}))
        return
    cells = [
        (
            r["tag"],
            render.human_size(r["logical_bytes"]),
            render.human_size(r["stored_bytes"]),
            render.human_size(r["unique_bytes"]),
        )
        for r in rows
    ]
    _echo(render.table(("Tag", "Size", "Stored", "Unique"), cells, sys.stdout))
    _echo(
        f"Total: {stats.models} models, {render.human_size(stats.logical_bytes)} logical, "
        f"{render.human_size(stats.stored_bytes)} stored, "
        f"dedup ratio {stats.dedup_ratio:.2f}x"
    )
