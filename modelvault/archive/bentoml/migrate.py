"""Import every model of a BentoML model store (``$BENTOML_HOME/models``).

A BentoML model store is ``<root>/<name>/<version>/`` (each holding ``model.yaml`` and
the model's files) plus a ``<root>/<name>/latest`` file naming the newest version. Each
version folder is imported in place as a ``folder`` export (``reader.import_bentoml_folder``),
keeping its version and creation time, so ``latest`` agrees on both sides. A version the
store holds already is skipped without reading its files: running again imports nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelvault.archive.bentoml.info import MAX_YAML_BYTES, MODEL_YAML, parse_model_yaml
from modelvault.archive.bentoml.reader import import_bentoml_folder
from modelvault.errors import ArchiveError, NotFound, PathNotFound
from modelvault.refs import RefValue
from modelvault.repo import Repository
from modelvault.tags import Tag

__all__ = ["StoreStep", "bentoml_models_home", "find_versions", "import_bentoml_store"]


@dataclass(frozen=True)
class StoreStep:
    """One version folder done: its place in the run, the tag, and whether it was imported
    (False: the store held it already)."""

    index: int
    total: int
    tag: str
    imported: bool


def bentoml_models_home(path: str | os.PathLike[str] | None = None) -> Path:
    """The BentoML model store to read: ``path``, else ``$BENTOML_HOME/models``, else
    ``~/bentoml/models``."""
    if path is not None:
        return Path(path).expanduser().absolute()
    home = os.environ.get("BENTOML_HOME")
    root = Path(home).expanduser() if home else Path.home() / "bentoml"
    return (root / "models").absolute()


def find_versions(root: Path) -> list[Path]:
    """Every ``<name>/<version>/`` folder holding a ``model.yaml``, by name and version.

    Raises:
        PathNotFound: ``root`` is not a folder.
    """
    if not root.is_dir():
        raise PathNotFound(
            f"no BentoML model store at {root}: give its path, or set BENTOML_HOME to the "
            "folder holding models/"
        )
    found: list[Path] = []
    for name in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        for version in sorted(name.iterdir()):
            if version.is_dir() and not version.is_symlink() and (version / MODEL_YAML).is_file():
                found.append(version)
    return found


def _created(folder: Path) -> tuple[str, int]:
    """Sort key: the versions of a name oldest first (as BentoML saved them), so each is
    saved beside the one before (``ingest.Parent``); an unreadable model.yaml sorts first
    (its import then says what is wrong)."""
    try:
        info = parse_model_yaml((folder / MODEL_YAML).read_bytes()[: MAX_YAML_BYTES + 1])
    except (ArchiveError, OSError):
        return folder.parent.name, -1
    return folder.parent.name, info.creation_time


def _held(repo: Repository, folder: Path) -> bool:
    try:
        tag = Tag(folder.parent.name, folder.name)
    except ValueError:
        return False  # not a modelvault tag: the import says what is wrong
    try:
        repo.refs.read(tag)
    except NotFound:
        return False
    return True


def import_bentoml_store(
    repo: Repository,
    path: str | os.PathLike[str] | None = None,
    *,
    step: Callable[[StoreStep], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[RefValue]:
    """Import every model version of a BentoML model store; return the refs imported
    (not those the store held already). ``step`` is called after each version folder,
    ``progress`` with the file bytes saved.

    Raises:
        PathNotFound: there is no BentoML model store there.
        ArchiveError: a version folder is not a sound BentoML model (it is named; the
            versions imported before it stay, and a second run skips them).
        ModelExists: a tag the store holds already holds another model.
    """
    versions = sorted(find_versions(bentoml_models_home(path)), key=_created)
    done: list[RefValue] = []
    for i, folder in enumerate(versions, 1):
        imported = False
        if not _held(repo, folder):
            try:
                done.append(import_bentoml_folder(repo, folder, progress=progress))
            except ArchiveError as exc:
                raise ArchiveError(f"BentoML model {folder}: {exc}") from None
            imported = True
        if step is not None:
            step(StoreStep(i, len(versions), f"{folder.parent.name}:{folder.name}", imported))
    return done
