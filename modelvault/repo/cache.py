"""The cache of materialised model folders (``Model.path``): names, stat manifests,
checks, and removal. (Writing a folder out is the read path's: ``checkout.materialise``.)

A folder ``cache/<model id>`` is written under a temporary name guarded by an in-flight
lock (so ``gc`` in any process on the host leaves it alone), described by a stat
manifest ``cache/<model id>.stat``, and only then renamed into place. Read-only modes
do not stop root, so before a folder is handed out again its entries are compared
with the manifest: a file changed, added, removed, chmod'ed or replaced changes its
inode, size, mtime or ctime (or the listing), and such a folder is dropped and
written afresh. ``verify`` goes further and re-hashes the folders' bytes.

Manifest (JSON, docs/format.md)::

    {"format": 1, "entries": [[relpath, inode, mode, size, mtime_ns, ctime_ns], ...]}

with one entry per file and folder below the model folder (not the folder itself, whose
ctime changes when it is renamed into place), sorted by ``relpath`` (``/``-separated).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelvault import _fsutil
from modelvault._fsutil import remove_tree
from modelvault.core.hashing import ObjType, object_id
from modelvault.core.objects import KIND_EXEC, KIND_TREE
from modelvault.errors import IntegrityError, NotFound
from modelvault.odb import PackDB
from modelvault.odb.reading import read_file_object, read_tree

__all__ = ["MANIFEST_FORMAT", "MANIFEST_SUFFIX", "Cache", "tree_size"]

MANIFEST_FORMAT = 1
MANIFEST_SUFFIX = ".stat"


def _scan(root: Path) -> list[list[Any]]:
    """Every file and folder below ``root`` with what identifies its state."""
    out: list[list[Any]] = []
    todo = [("", root)]
    while todo:
        rel, folder = todo.pop()
        with os.scandir(folder) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                name = rel + e.name
                out.append(
                    [name, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
                )
                if stat.S_ISDIR(st.st_mode):
                    todo.append((name + "/", Path(e.path)))
    out.sort(key=lambda entry: str(entry[0]))
    return out


class Cache:
    """The ``cache/`` folder of one store."""

    def __init__(self, root: Path, db: PackDB, locks: Path) -> None:
        self.root = root
        self._db = db
        self._locks = locks  # locks/cache/<model id>: one writer of a folder at a time

    def folder(self, model_id: bytes) -> Path:
        return self.root / model_id.hex()

    def _manifest(self, model_id: bytes) -> Path:
        return self.root / f"{model_id.hex()}{MANIFEST_SUFFIX}"

    def unchanged(self, model_id: bytes) -> bool:
        """True if the folder exists and every entry is as it was written."""
        try:
            doc = json.loads(self._manifest(model_id).read_bytes())
            if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
                return False
            return bool(_scan(self.folder(model_id)) == doc.get("entries"))
        except (OSError, ValueError):
            return False

    @contextlib.contextmanager
    def writing(self, model_id: bytes) -> Iterator[Path | None]:
        """Hold the model's folder lock; yield a fresh in-flight temporary to write the
        folder into, or None when the folder is there unchanged (written meanwhile by
        another process). Call :meth:`publish` with the written temporary."""
        self._locks.mkdir(exist_ok=True)
        with _fsutil.file_lock(self._locks / model_id.hex(), shared=False):
            if self.unchanged(model_id):
                yield None
                return
            self.drop(model_id)
            with _fsutil.in_flight(self.root, ".cache") as tmp:
                try:
                    yield tmp
                except BaseException:
                    remove_tree(tmp)
                    raise

    def publish(self, model_id: bytes, tmp: Path) -> Path:
        """Record the stat manifest of a written folder, then rename it into place."""
        doc = {"format": MANIFEST_FORMAT, "entries": _scan(tmp)}
        _fsutil.atomic_write(self._manifest(model_id), json.dumps(doc).encode())
        final = self.folder(model_id)
        os.rename(tmp, final)
        _fsutil.fsync_dir(self.root)
        return final

    def drop(self, model_id: bytes) -> int:
        """Remove a model's folder (out of sight first) and its manifest; bytes freed."""
        freed = 0
        final = self.folder(model_id)
        gone = contextlib.suppress(FileNotFoundError)
        with _fsutil.in_flight(self.root, ".drop") as doomed, gone:
            os.rename(final, doomed)  # a crash must not leave a partial folder in place
            freed += tree_size(doomed)
            remove_tree(doomed)
        with contextlib.suppress(FileNotFoundError):
            self._manifest(model_id).unlink()
        return freed

    def ids(self) -> Iterator[str]:
        """Hex ids of the models with a folder or a manifest here."""
        seen = set()
        for p in self.root.iterdir():
            hexid = p.name.removesuffix(MANIFEST_SUFFIX)
            if not p.name.startswith(".") and hexid not in seen:
                seen.add(hexid)
                yield hexid

    def sweep(self, live: set[str]) -> int:
        """Drop the folders of models no tag reaches and dead temporaries; bytes freed."""
        freed = 0
        for hexid in list(self.ids()):
            if hexid not in live:
                with contextlib.suppress(ValueError):
                    freed += self.drop(bytes.fromhex(hexid))

        def remove(path: Path) -> None:
            nonlocal freed
            freed += tree_size(path)
            if path.is_dir():
                remove_tree(path)
            else:
                path.unlink(missing_ok=True)

        _fsutil.sweep_temps(self.root, remove)
        if self._locks.is_dir():
            for lock in self._locks.iterdir():  # of models gone
                if lock.name not in live:
                    lock.unlink(missing_ok=True)
        return freed

    def check_content(self, model_id: bytes, tree_id: bytes) -> str | None:
        """Re-hash a materialised folder against the stored model; None if it matches,
        else what differs (the folder is then dropped by the caller)."""
        folder = self.folder(model_id)
        if not folder.is_dir():
            return None
        try:
            return _compare_tree(self._db, tree_id, folder, "")
        except (NotFound, IntegrityError):
            return None  # the stored side is damaged: verify reports that itself


def _compare_tree(db: PackDB, tree_id: bytes, folder: Path, rel: str) -> str | None:
    entries = read_tree(db, tree_id).entries
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        return f"{rel or '.'}: {exc.strerror}"
    if names != sorted(e.name for e in entries):
        return f"{rel or '.'}: the files differ from the saved ones"
    for e in entries:
        path = folder / e.name
        st = path.lstat()
        if e.kind == KIND_TREE:
            if not stat.S_ISDIR(st.st_mode):
                return f"{rel}{e.name}: not a folder"
            why = _compare_tree(db, e.oid, path, f"{rel}{e.name}/")
            if why:
                return why
            continue
        if not stat.S_ISREG(st.st_mode):
            return f"{rel}{e.name}: not a regular file"
        if bool(st.st_mode & 0o100) != (e.kind == KIND_EXEC):
            return f"{rel}{e.name}: its mode changed"
        fobj = read_file_object(db, e.oid)
        if st.st_size != fobj.size or not _same_bytes(path, fobj.chunks):
            return f"{rel}{e.name}: its bytes changed"
    return None


def _same_bytes(path: Path, chunks: list[tuple[bytes, int]]) -> bool:
    with open(path, "rb") as f:
        for cid, n in chunks:
            data = f.read(n)
            if len(data) != n or object_id(ObjType.CHUNK, data) != cid:
                return False
        return f.read(1) == b""


def tree_size(path: Path) -> int:
    """Bytes of the files below ``path`` (entries vanishing meanwhile are skipped)."""
    if not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            return path.stat().st_size
        return 0
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total
