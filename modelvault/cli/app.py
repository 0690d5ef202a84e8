"""The typer app behind ``mv``: thin commands over :class:`modelvault.Store`.

Every command acts on the default store (``--store PATH``, else ``$MODELVAULT_HOME``,
else ``~/modelvault``). Errors become one line on stderr in :class:`_Group.invoke`.
"""

import contextlib
import logging
import os
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from modelvault import __version__
from modelvault.cli import _coerce, failures, progress, render
from modelvault.cli._shared import Quiet as Quiet
from modelvault.cli._shared import TableOrJson as TableOrJson
from modelvault.cli._shared import _echo as _echo
from modelvault.cli._shared import _parse_pairs as _parse_pairs
from modelvault.cli._shared import _say as _say
from modelvault.cli._shared import _store as _store
from modelvault.cli.aliases import alias_app
from modelvault.cli.compare import diff as diff
from modelvault.cli.compare import status as status
from modelvault.cli.failures import UsageError
from modelvault.cli.maintenance import delete_remote as delete_remote
from modelvault.cli.maintenance import du as du
from modelvault.cli.maintenance import gc as gc
from modelvault.cli.maintenance import unlock as unlock
from modelvault.cli.maintenance import verify as verify
from modelvault.cli.remotes import _list_remote, remote_app

if TYPE_CHECKING:
    from modelvault.model import Model


_coerce.install()


class _State:
    debug = bool(os.environ.get("MODELVAULT_DEBUG"))


def _fail(exc: BaseException) -> typer.Exit:
    """Print the one-line message of ``exc`` on stderr; the Exit to raise with its code."""
    message, code = failures.describe(exc)
    prefix = render.styled("mv: error:", "red", sys.stderr)
    sys.stderr.write(f"{prefix} {message}\n")
    return typer.Exit(code)


class _Warnings(logging.Handler):
    """modelvault's logged warnings (a damaged ref a listing skipped, ...) as one
    ``mv: warning:`` line each on stderr; a warning repeated within a command shows once."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message in self.seen:
            return
        self.seen.add(message)
        prefix = render.styled("mv: warning:", "yellow", sys.stderr)
        sys.stderr.write(f"{prefix} {message}\n")


def _show_warnings() -> None:
    """Route the ``modelvault`` loggers' warnings to :class:`_Warnings` (once per process)."""
    logger = logging.getLogger("modelvault")
    for handler in logger.handlers:
        if isinstance(handler, _Warnings):
            handler.seen.clear()
            return
    logger.addHandler(_Warnings())  # (having a handler, they no longer reach lastResort)


def _is_click_flow(exc: BaseException) -> bool:
    """typer/click's own exceptions (usage errors, exits, aborts) pass through untouched."""
    return type(exc).__module__.startswith(("typer.", "click."))


class _Group(TyperGroup):
    """The root group: turns errors raised by any command into one line and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            if _State.debug:
                raise
            sys.stderr.write("mv: interrupted (the store is consistent; `mv gc` frees leftovers)\n")
            raise typer.Exit(failures.EXIT_INTERRUPTED) from None
        except Exception as exc:
            if _is_click_flow(exc):
                raise
            if _State.debug:
                traceback.print_exc()
            raise _fail(exc) from None


_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}
_COMMON: dict[str, Any] = {
    "rich_markup_mode": None,
    "pretty_exceptions_enable": False,
    "context_settings": _SETTINGS,
    "no_args_is_help": True,
}
app = typer.Typer(
    name="mv",
    cls=_Group,
    help=(
        "modelvault: a git-like, content-addressed store for ML models.\n\n"
        "When the first argument is not a modelvault command or option, `mv` runs the "
        "system's own mv with the same arguments."
    ),
    **_COMMON,
)
models_app = typer.Typer(help="The model commands, BentoML style: `mv models list`.", **_COMMON)
app.add_typer(models_app, name="models")
app.add_typer(remote_app, name="remote")


class YamlOrJson(str, Enum):
    yaml = "yaml"
    json = "json"


# -- shared helpers ---------------------------------------------------------------------
def _complete_tags(incomplete: str) -> list[str]:
    """Shell completion of TAG arguments: names, then ``name:version`` once a ':' is typed."""
    try:
        models = _store().list()
    except Exception:
        return []
    if ":" in incomplete:
        return [str(m.tag) for m in models if str(m.tag).startswith(incomplete)]
    if "@" in incomplete:
        with contextlib.suppress(Exception):
            return [a for a in _store().aliases() if a.startswith(incomplete)]
        return []
    return sorted({m.tag.name for m in models if m.tag.name.startswith(incomplete)})


def _model_line(model: "Model", what: str) -> str:
    return f'Model(tag="{model.tag}") {what}'


def _default_remote(remote: str | None) -> str:
    return remote or os.environ.get("MODELVAULT_REMOTE") or "origin"


TagArg = Annotated[
    str,
    typer.Argument(
        help="NAME, NAME:VERSION or NAME@ALIAS", metavar="TAG", autocompletion=_complete_tags
    ),
]


def _lasting(where: str) -> None:
    """Refuse a ``memory://`` URL: it lives inside one process, and this one ends when
    the command does, so whatever was written there would be gone (issue 22)."""
    if where.startswith("memory:"):
        raise UsageError(
            f"{where}: a memory:// remote or archive lives only inside one Python process, "
            "and the CLI exits after this command; use a folder, file:// or s3:// instead"
        )


def _remote_url(remote: str | None) -> str:
    """The URL a command's REMOTE argument (or the default remote) means."""
    from modelvault import remotes

    return remotes.resolve(remote, store=_store())[0]


RemoteArg = Annotated[
    str | None,
    typer.Argument(
        help="Remote name or URL [default: $MODELVAULT_REMOTE, else origin].", metavar="REMOTE"
    ),
]


# -- root -----------------------------------------------------------------------------
def _print_version(value: bool) -> None:
    if value:
        _echo(f"modelvault {__version__}")
        raise typer.Exit()


# Commands that may make the store they write into; every other one, given a --store
# folder that does not exist, says so instead of making an empty store and reading it.
_MAKE_STORE = frozenset({"save", "import", "pull", "remote", "alias", "models"})


def _check_named_store(ctx: typer.Context, store: Path) -> None:
    source = ctx.get_parameter_source("store")
    if getattr(source, "name", "") != "COMMANDLINE" or ctx.invoked_subcommand in _MAKE_STORE:
        return
    if not (store.expanduser() / "config.json").exists():  # a store's first file
        raise UsageError(
            f"no store at {store}: check the --store path (a store is made by the first "
            "`mv save`, `mv import` or `mv pull` into it)"
        )


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    store: Annotated[
        Path | None,
        typer.Option(
            "--store",
            envvar="MODELVAULT_HOME",
            help="Store folder [default: ~/modelvault].",
        ),
    ] = None,
) -> None:
    """modelvault: a git-like, content-addressed store for ML models."""
    _State.debug = _State.debug or debug
    _show_warnings()
    if store is not None:
        _check_named_store(ctx, store)
        os.environ["MODELVAULT_HOME"] = str(store)


# -- model commands (also under `mv models`) --------------------------------------------
def list_models(
    name: Annotated[
        str | None,
        typer.Argument(
            help="Only the versions of this name.", metavar="NAME", autocompletion=_complete_tags
        ),
    ] = None,
    output: Annotated[TableOrJson, typer.Option("--output", "-o")] = TableOrJson.table,
    remote: Annotated[
        str | None, typer.Option("--remote", help="List the tags a remote holds instead.")
    ] = None,
) -> None:
    """List models, newest first: Tag, Module, Size, Creation Time."""
    if remote is not None:
        _list_remote(remote, name, output)
        return
    store = _store()
    models = store.list(name) if name else store.list()
    if output is TableOrJson.json:
        _echo(render.to_json([render.model_summary(m) for m in models]))
        return
    rows = [
        (
            str(m.tag),
            m.module,
            render.human_size(m.size),
            render.local_time(m.creation_time),
        )
        for m in models
    ]
    _echo(render.table(("Tag", "Module", "Size", "Creation Time"), rows, sys.stdout))


def get(
    tag: TagArg,
    output: Annotated[YamlOrJson, typer.Option("--output", "-o")] = YamlOrJson.yaml,
) -> None:
    """Show one model's details (name, version, module, labels, metadata, context, ...)."""
    details = render.model_details(_store().get(tag))
    _echo(render.to_json(details) if output is YamlOrJson.json else render.to_yaml(details))


def delete(
    tags: Annotated[
        list[str],
        typer.Argument(
            help="NAME:VERSION, or NAME for all its versions.",
            metavar="TAG",
            autocompletion=_complete_tags,
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before deleting.")] = False,
    remote: Annotated[
        str | None,
        typer.Option(
            "--remote", help="Delete on this remote (a name or URL; NAME@ALIAS: the alias)."
        ),
    ] = None,
) -> None:
    """Delete model versions (a bare NAME deletes all its versions). Asks unless -y.

    Stored bytes are freed by `mv gc` (`mv gc --remote NAME` on a remote).
    """
    from modelvault.errors import IntegrityError, NotFound
    from modelvault.tags import Tag

    if remote is not None:
        delete_remote(tags, remote, yes)
        return
    store = _store()
    for text in tags:
        if "@" in text:
            store.delete(text)  # InvalidInput: how to remove an alias
        tag = Tag.from_str(text)
        damaged: list[Tag] = []  # damaged refs: deleting them is the repair their error advises
        if tag.version is None:
            targets = [store.get(r.tag) for r in store.repo.refs.versions(tag.name, damaged)]
        else:
            try:
                targets = [store.get(tag)]
            except IntegrityError:
                if tag.is_latest:
                    raise
                targets, damaged = [], [tag]
        if not targets and not damaged:
            raise NotFound(f"no model named {tag.name!r} in the store")
        if not yes:
            what = (
                f"all {len(targets) + len(damaged)} version(s) of {tag.name!r}"
                if tag.version is None
                else f"the damaged ref {tag}"
                if damaged
                else f"model {targets[0].tag}"
            )
            try:
                answer = typer.confirm(f"Delete {what}?", default=False)
            except typer.Abort:
                raise UsageError(
                    "no answer: nothing deleted (pass -y to skip the question)"
                ) from None
            if not answer:
                _say("Nothing deleted.")
                raise typer.Exit(1)
        for model in targets:
            store.delete(model.tag)
            _say(_model_line(model, "deleted"))
        for ref in damaged:
            with contextlib.suppress(NotFound):
                store.delete(ref)
            _say(f"Damaged ref {ref} deleted")


def save(
    path: Annotated[Path, typer.Argument(help="Folder (or file) to store.", metavar="DIR")],
    tag: Annotated[str, typer.Argument(help="NAME or NAME:VERSION", metavar="NAME[:VERSION]")],
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE (repeatable).")
    ] = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option("--metadata", "-m", help="KEY=VALUE, VALUE parsed as JSON when valid."),
    ] = None,
    module: Annotated[str, typer.Option("--module", help="Module recorded in the info.")] = "",
    quiet: Quiet = False,
) -> None:
    """Store a folder (or file) as a new model version."""
    store = _store()
    labels = _parse_pairs(label, "label", typed=False)
    meta = _parse_pairs(metadata, "metadata", typed=True)
    total = progress.tree_bytes(path) if progress.wanted(quiet) and path.exists() else None
    with progress.bar(f"saving {tag}", total, quiet) as bar:
        advance = bar.advance if bar else None
        model = store.save(path, tag, labels=labels, metadata=meta, module=module, progress=advance)
    _say(_model_line(model, f"saved ({render.human_size(model.size)})"))


def checkout(
    tag: TagArg,
    dest: Annotated[
        Path, typer.Argument(help="New folder to write the files into.", metavar="DEST")
    ],
    quiet: Quiet = False,
) -> None:
    """Write a model's files into a new folder, as writable copies."""
    store = _store()
    model = store.get(tag)
    with progress.bar(f"checking out {model.tag}", model.size, quiet) as bar:
        store.checkout(model.tag, dest, progress=bar.advance if bar else None)
    _say(_model_line(model, f"checked out to {dest}"))


def export(
    tag: TagArg,
    dest: Annotated[
        str | None,
        typer.Argument(
            help="File, folder or fsspec URL [default: current folder].", metavar="DEST"
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option("--base", help="Thin archive: leave out what this tag already holds."),
    ] = None,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="modelvault: its own verified packfile archive (BentoML cannot read it); "
            "bentoml: tar + xz that `bentoml models import` reads.",
            metavar="modelvault|bentoml",
        ),
    ] = "modelvault",
    quiet: Quiet = False,
) -> None:
    """Export a model as one .bentomodel archive (a folder receives NAME-VERSION.bentomodel).

    The default format is modelvault's own; --format bentoml writes one BentoML reads."""
    _lasting(dest or "")
    store = _store()
    model = store.get(tag)
    total = None
    if progress.wanted(quiet) and output_format == "modelvault":
        total = progress.archive_estimate(store, model, base)
    with progress.bar(f"exporting {model.tag}", total, quiet) as bar:
        advance = bar.advance if bar else None
        where = store.export_model(
            model.tag,
            dest or os.getcwd(),
            base=base,
            progress=advance,
            output_format=output_format,
        )
        if bar:
            bar.finish()
    _say(_model_line(model, f"exported to {where}"))


def import_(
    src: Annotated[
        str | None,
        typer.Argument(
            help="A .bentomodel path or fsspec URL (modelvault's or BentoML's own export, "
            "any of its formats); with --bentoml-store, the BentoML model store "
            "[default: $BENTOML_HOME/models, else ~/bentoml/models].",
            metavar="SRC",
        ),
    ] = None,
    bentoml_store: Annotated[
        bool,
        typer.Option(
            "--bentoml-store",
            help="Import every model of a BentoML model store (versions and creation times "
            "kept; models the store holds already are skipped).",
        ),
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Import a .bentomodel archive (verified before its tag appears), or a BentoML store."""
    if bentoml_store:
        _import_bentoml_store(src, quiet)
        return
    if src is None:
        raise UsageError("mv import needs SRC: a .bentomodel path or URL (or --bentoml-store)")
    _lasting(src)
    store = _store()
    local_dir = "://" not in src and os.path.isdir(src)  # BentoML's "folder" format
    url = "://" in src
    total = None
    if progress.wanted(quiet) and not url:
        total = progress.tree_bytes(Path(src)) if local_dir else progress.file_bytes(src)
    with progress.bar(f"importing {src}", total, quiet, waiting="opening" if url else "") as bar:
        if bar is not None and url:
            bar.known(progress.file_bytes(src))  # one metadata request, under "opening"
        model = store.import_model(src, progress=bar.advance if bar else None)
    _say(_model_line(model, "imported"))


def _import_bentoml_store(path: str | None, quiet: bool) -> None:
    from modelvault.archive.bentoml.migrate import StoreStep, bentoml_models_home

    store = _store()
    root = bentoml_models_home(path)
    skipped = 0
    with progress.bar(f"importing BentoML store {root}", None, quiet) as bar:

        def step(done: StoreStep) -> None:
            nonlocal skipped
            skipped += not done.imported
            if bar is not None:
                what = f"importing BentoML store: {done.index}/{done.total} {done.tag}"
                bar.describe(what)

        models = store.import_bentoml_store(root, step=step, progress=bar.advance if bar else None)
    for model in models:
        _say(_model_line(model, "imported"))
    _say(
        f"Imported {len(models)} models from the BentoML store {root}"
        + (f" ({skipped} already in the store)" if skipped else "")
    )


def push(
    tag: TagArg,
    remote: RemoteArg = None,
    quiet: Quiet = False,
) -> None:
    """Send a model to a remote: only the objects it lacks."""
    _lasting(_remote_url(remote))
    store = _store()
    model = store.get(tag)
    with progress.bar(f"pushing {model.tag}", None, quiet, waiting="comparing") as bar:
        kw = {"progress": bar.transfer} if bar else {}
        target = tag if "@" in tag else model.tag  # name@alias: the remote alias moves too
        result = store.push(target, remote, **kw)
    sent = f"{result.objects} objects, {render.human_size(result.sent)} sent"
    _say(f'Successfully pushed model "{model.tag}" to {_default_remote(remote)} ({sent})')
    if "@" in tag:
        _say(f"Alias {tag.lower()} -> {model.tag} there")


def pull(
    tag: Annotated[
        str,
        typer.Argument(
            help="NAME (the remote's newest), NAME:VERSION or NAME@ALIAS (the remote's alias)",
            metavar="TAG",
        ),
    ],
    remote: RemoteArg = None,
    quiet: Quiet = False,
) -> None:
    """Fetch a model from a remote: only the objects the store lacks, verified."""
    _lasting(_remote_url(remote))
    with progress.bar(f"pulling {tag}", None, quiet, waiting="comparing") as bar:
        kw = {"progress": bar.transfer} if bar else {}
        result = _store().pull(tag, remote, **kw)
    got = f"{result.objects} objects, {render.human_size(result.received)} received"
    _say(f'Successfully pulled model "{result.tag or tag}" from {_default_remote(remote)} ({got})')
    if "@" in tag:
        _say(f"Alias {tag.lower()} -> {result.tag} here")


for _target in (app, models_app):
    _target.command("list")(list_models)
    _target.command("get")(get)
    _target.command("delete")(delete)
    _target.command("save")(save)
    _target.command("checkout")(checkout)
    _target.command("export")(export)
    _target.command("import")(import_)
    _target.command("push")(push)
    _target.command("pull")(pull)


# -- remotes (modelvault/cli/remotes.py) ---------------------------------------------
remote_app.command("unlock")(unlock)

# -- maintenance (modelvault/cli/maintenance.py) ---------------------------------------
app.command("gc")(gc)
app.command("verify")(verify)
app.command("du")(du)

# -- comparing (modelvault/cli/compare.py) ---------------------------------------------
app.command("diff")(diff)
app.command("status")(status)

# -- aliases (modelvault/cli/aliases.py) -----------------------------------------------
app.add_typer(alias_app, name="alias")


# -- running ----------------------------------------------------------------------------
def run(args: list[str], prog: str) -> int:
    """Run the app on ``args``; the exit code (typer handles usage errors: code 2)."""
    command = typer.main.get_command(app)
    try:
        command.main(args=args, prog_name=prog, standalone_mode=True)
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
