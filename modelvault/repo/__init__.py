"""The repository layer: a local store's parts (objects, refs, config, cache, locks), its
layout, and its maintenance. It imports nothing above ``odb/`` and ``refs``."""

from modelvault.repo.repository import Repository, open_repository

__all__ = ["Repository", "open_repository"]
