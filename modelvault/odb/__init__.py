"""Object database: content-addressed objects in append-only pack files with indexes."""

from modelvault.odb.packs import PackDB, PackWriter

__all__ = ["PackDB", "PackWriter"]
