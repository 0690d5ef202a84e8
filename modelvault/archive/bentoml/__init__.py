"""BentoML interoperability: read the archives and model stores BentoML writes, and write
archives BentoML reads (docs/bentoml.md; the layout in docs/format.md, section 12).

::

    info.py      model.yaml <-> a model's info (safe YAML, checked), BentoML module names
    reader.py    import of tar (+ xz, gz, bz2), zip and folder exports, told apart by
                 their content (``sniff``), streamed into the normal ingest path
    writer.py    export as a tar + xz ``.bentomodel`` BentoML's ``models import`` reads
    migrate.py   import of every model of a BentoML model store
"""

from modelvault.archive.bentoml.info import BENTOML_FLAVOURS, flavour_of, is_bentoml_module
from modelvault.archive.bentoml.reader import import_bentoml, import_bentoml_folder, sniff

__all__ = [
    "BENTOML_FLAVOURS",
    "flavour_of",
    "import_bentoml",
    "import_bentoml_folder",
    "is_bentoml_module",
    "sniff",
]
