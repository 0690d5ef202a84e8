"""The maintenance commands: ``mv gc``, ``mv verify``, ``mv du``.

:mod:`modelvault.cli.app` registers them on its app after the model commands (so ``mv
--help`` lists them in the same place) and re-exports them.
"""

import sys
from typing import Annotated, Any

import typer

from modelvault.cli import failures, progress, render
from modelvault.cli._shared import Quiet, TableOrJson, _echo, _say, _store


def gc(quiet: Quiet = False) -> None:
    """Free the stored bytes no tag reaches (after deletes)."""
    with progress.spinner("collecting garbage", quiet):
        freed = _store().gc()
    _say(f"Freed {render.human_size(freed)}")


def verify(
    output: Annotated[TableOrJson, typer.Option("--output", "-o")] = TableOrJson.table,
    quiet: Quiet = False,
) -> None:
    """Re-hash every stored object; exit 1 when anything is damaged or missing."""
    with progress.spinner("verifying", quiet):
        report = _store().verify()
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
        _print_repair(report.broken_tags, report.damaged_files)
    if not report.ok:
        raise typer.Exit(failures.EXIT_ERROR)


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
