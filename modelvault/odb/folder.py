"""Changes to the pack folder: publishing packs, removing them, publishing a merged
index. Each holds ``objects/packs.lock`` and keeps the record of the folder
(``objects/packs.state``, :mod:`modelvault.odb.state`) true: :class:`FolderChanges` is
a part of :class:`~modelvault.odb.PackDB`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from modelvault import _fsutil
from modelvault.core.packfmt import Entry
from modelvault.odb.midx import MultiIndex, is_midx_name, publish_midx
from modelvault.odb.state import STATE_NAME, DirKey, DirState, dir_key, hold

__all__ = ["FolderChanges"]


class FolderChanges:
    """Mixed into :class:`~modelvault.odb.PackDB`, which supplies what is declared here."""

    root: Path
    pack_dir: Path
    tmp_dir: Path
    _lock: threading.Lock
    _key: DirKey | None

    def _add_entries(self, name: str, entries: dict[bytes, Entry]) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def publishing(self, packs: dict[str, dict[bytes, Entry]]) -> Iterator[None]:
        """Around the renames that put ``packs`` (name -> entries) into view: holds
        ``objects/packs.lock``, then adds them to this process's index and to the record
        of the folder (when it was of the folder just before: :mod:`modelvault.odb.state`)."""
        with hold(self.root, self.tmp_dir) as held:
            before = dir_key(self.pack_dir)
            old = held.state() if held is not None else None
            yield
            for name, entries in packs.items():
                self._add_entries(name, entries)
            if held is None:
                return
            after = dir_key(self.pack_dir)
            if old is None or old.key != before:
                held.drop()
                return
            held.write(DirState(after, old.midx, tuple(sorted({*old.loose, *packs}))))
            with self._lock:
                if self._key == before:  # this view was of the folder: it still is
                    self._key = after

    def removing(self) -> contextlib.AbstractContextManager[None]:
        """Around removing packs from view: holds ``objects/packs.lock``, drops the
        record of the folder and counts a removal (so no record made from a listing
        before it is written: :mod:`modelvault.odb.state`)."""
        return self._removing()

    @contextlib.contextmanager
    def _removing(self) -> Iterator[None]:
        with hold(self.root, self.tmp_dir) as held:
            if held is not None:
                held.removing()
            else:
                with contextlib.suppress(OSError):
                    (self.root / STATE_NAME).unlink()
            yield

    def delete_pack(self, name: str) -> int:
        """Remove a pack and its index (index first); returns the bytes freed.

        Objects it held must be copied elsewhere first if still needed. The loaded
        index still lists them until :meth:`refresh` (gc deletes several packs, then
        refreshes once).
        """
        freed = 0
        with self.removing():
            for ext in (".idx", ".pack"):
                path = self.pack_dir / f"{name}{ext}"
                with contextlib.suppress(FileNotFoundError):
                    freed += path.stat().st_size
                    path.unlink()
        _fsutil.fsync_dir(self.pack_dir)
        return freed

    def _publish_merge(
        self, new: MultiIndex | None, merged: list[MultiIndex], *, every: bool
    ) -> None:
        """Rename a merge's index into view and remove the index files it supersedes:
        the ``merged`` ones, or with ``every`` every other one (gc, repair), holding
        ``objects/packs.lock``, and update the record of the folder
        (:mod:`modelvault.odb.state`)."""
        with hold(self.root, self.tmp_dir) as held:
            before = dir_key(self.pack_dir)
            old = held.state() if held is not None else None
            if new is not None:
                publish_midx(new, self.pack_dir)
            if every:
                gone = {n for n in os.listdir(self.pack_dir) if is_midx_name(n)}
            else:
                gone = {layer.name for layer in merged}
            gone.discard(new.name if new is not None else "")
            for name in gone:
                (self.pack_dir / name).unlink(missing_ok=True)
            _fsutil.fsync_dir(self.pack_dir)
            if held is None:
                return
            if old is None or old.key != before or every:
                held.drop()
                return
            midx = [n for n in old.midx if n not in gone]
            loose = list(old.loose)
            if new is not None:
                midx.append(new.name)
                loose = [p for p in loose if not new.covers(p)]
            held.write(DirState(dir_key(self.pack_dir), tuple(sorted(midx)), tuple(loose)))
