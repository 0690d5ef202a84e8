"""The live set of a gc, kept over the index rather than as a set of ids.

One byte per entry of each multi-pack index in force (a numpy array, 16 MiB for 16M
objects) and a Python set only for live ids found in the few packs no multi-pack index
covers. An id is looked up the same way when marked and when tested (the first index in
force that holds it, else the uncovered packs' entries), so the two always agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from modelvault.odb.midx import id_list

if TYPE_CHECKING:
    from modelvault.odb.packs import PackDB

__all__ = ["LiveSet"]


class LiveSet:
    """Marks over the index of ``db`` as it stands now (gc holds its lock: nothing else
    writes meanwhile)."""

    def __init__(self, db: PackDB) -> None:
        db.refresh(full=True)
        self._db = db
        self._layers = db.layers()
        self._marks = [np.zeros(layer.count, bool) for layer in self._layers]
        self._rest: set[bytes] = set()
        self._claimed = [np.zeros(layer.count, bool) for layer in self._layers]
        self._claimed_rest: set[bytes] = set()
        self.marked = 0  # add() calls' ids found (with repeats)

    def add(self, oids: Sequence[bytes]) -> list[bytes]:
        """Mark ``oids`` live; returns those the store does not hold."""
        if not oids:
            return []
        needles = np.array(oids, "S32")
        rest = np.arange(len(oids))
        for layer, marks in zip(self._layers, self._marks, strict=True):
            pos = layer.positions(needles[rest])
            hit = pos >= 0
            marks[pos[hit]] = True
            rest = rest[~hit]
            if not len(rest):
                break
        missing = []
        for j in rest.tolist():
            oid = oids[j]
            if self._db._loose.get(oid) is not None:
                self._rest.add(oid)
            else:
                missing.append(oid)
        self.marked += len(oids) - len(missing)
        return missing

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """One bool per id of ``ids`` (an ``S32`` array): is it live?"""
        out = np.zeros(len(ids), bool)
        rest = np.arange(len(ids))
        for layer, marks in zip(self._layers, self._marks, strict=True):
            pos = layer.positions(ids[rest])
            hit = pos >= 0
            out[rest[hit]] = marks[pos[hit]]
            rest = rest[~hit]
            if not len(rest):
                return out
        if self._rest and len(rest):
            found = id_list(ids[rest])
            out[rest] = [oid in self._rest for oid in found]
        return out

    def claim(self, ids: np.ndarray) -> np.ndarray:
        """One bool per id of ``ids`` (``S32``, each once): live and not claimed by an
        earlier call. gc claims the ids of the packs it keeps, then copies out of the
        packs it repacks only what is still unclaimed (an object kept twice, say by a
        repack that was killed before deleting the old packs, is not copied a third time)."""
        out = np.zeros(len(ids), bool)
        rest = np.arange(len(ids))
        for layer, marks, claimed in zip(self._layers, self._marks, self._claimed, strict=True):
            pos = layer.positions(ids[rest])
            hit = pos >= 0
            at = pos[hit]
            out[rest[hit]] = marks[at] & ~claimed[at]
            claimed[at] |= marks[at]
            rest = rest[~hit]
            if not len(rest):
                return out
        for j, oid in zip(rest.tolist(), id_list(ids[rest]), strict=True):
            if oid in self._rest and oid not in self._claimed_rest:
                self._claimed_rest.add(oid)
                out[j] = True
        return out
