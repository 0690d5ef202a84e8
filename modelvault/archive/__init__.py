"""``.bentomodel`` archives: one model in one self-describing file (docs/format.md
section 10).

::

    format.py     the byte layout, pure: magic, versions, header, manifest, record
                  bounds, index entries, footer, checksums (no I/O)
    pipeline.py   what export and import share: batch sizes and windows, progress,
                  the repository as a source of object info for the walker
    writer.py     ArchiveWriter (one streaming pass, index last) and export_model
    reader.py     ArchiveReader (large blocks or mapped windows, running checksum),
                  records, their verification, the index and trailer checks
    importer.py   import_model: staging into hidden packs, the closure check, publishing

Files and URLs are opened through ``modelvault.remote.transport`` (``open_input``,
``open_output``, from ``modelvault.remote.files``), never fsspec itself. Both functions work on a
:class:`~modelvault.repo.Repository`; ``Store.export_model`` / ``Store.import_model``
resolve tags and wrap the result into a :class:`~modelvault.model.Model`.

Errors::

    InvalidInput    import: the source is neither a path, a URL nor a file object
    NotFound        export: unknown tag or base
    PathNotFound    import: the local source file does not exist
    IntegrityError  export: the store's own bytes are damaged (nothing is written)
    ArchiveError    import: truncated, corrupt, unknown version, hostile, or incomplete
    ModelExists     import: the tag holds a different model already
    RemoteError     export or import: the URL's backend failed (unreachable, denied, ...)
"""

from modelvault.archive.format import (
    MAX_MANIFEST,
    MAX_METADATA,
    MAX_RAW,
    READABLE,
    SUFFIX,
    VERSION,
    Manifest,
    checksum,
)
from modelvault.archive.importer import ArchiveSource, import_model
from modelvault.archive.writer import ArchiveWriter, export_model

__all__ = [
    "MAX_MANIFEST",
    "MAX_METADATA",
    "MAX_RAW",
    "READABLE",
    "SUFFIX",
    "VERSION",
    "ArchiveSource",
    "ArchiveWriter",
    "Manifest",
    "checksum",
    "export_model",
    "import_model",
]
