"""Shared save/load logic of the framework flavours.

A flavour saves through :meth:`Store.create` with its own ``module`` name, so
``get`` can refuse models saved by another flavour. The pickle-based flavours
write ``saved_model.pkl`` (cloudpickle, protocol 5) and every large contiguous
buffer (numpy arrays) out-of-band as ``buffers/NNNNNN.bin``: raw bytes that
content-defined chunking deduplicates across models sharing weights.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from modelvault.archive.bentoml.info import flavour_of, is_bentoml_module
from modelvault.errors import NotFound
from modelvault.model import Model
from modelvault.modelinfo import build_context
from modelvault.store import Store
from modelvault.tags import Tag

__all__ = [
    "BUFFER_DIR",
    "PICKLE_FILE",
    "from_bentoml",
    "get_flavoured",
    "read_pickled",
    "save_with",
    "write_pickled",
]

PICKLE_FILE = "saved_model.pkl"
BUFFER_DIR = "buffers"


def _store(store: Store | None) -> Store:
    if store is not None:
        return store
    from modelvault.models import default_store

    return default_store()


def save_with(
    module: str,
    name: str | Tag,
    write: Callable[[Path], None],
    *,
    default_signatures: Mapping[str, Mapping[str, Any]],
    framework_name: str,
    framework_versions: Mapping[str, str],
    signatures: Mapping[str, Mapping[str, Any]] | None,
    labels: Mapping[str, str] | None,
    metadata: Mapping[str, Any] | None,
    custom_objects: Mapping[str, Any] | None,
    store: Store | None,
) -> Model:
    """Save a model whose files ``write(folder)`` produces, under flavour ``module``."""
    with _store(store).create(
        name,
        labels=labels,
        metadata=metadata,
        custom_objects=custom_objects,
        signatures=signatures,
        module=module,
        context=build_context(framework_name, framework_versions),
        _default_signatures=default_signatures,
    ) as ref:
        write(Path(ref.path))
    assert ref.model is not None
    return ref.model


def get_flavoured(module: str, tag: str | Tag | Model, store: Store | None = None) -> Model:
    """The model ``tag`` names, checked to have been saved by flavour ``module`` (or by
    the BentoML module whose files it reads: ``archive.bentoml.BENTOML_FLAVOURS``).

    Raises:
        NotFound: no such model, or it was saved by another flavour.
    """
    model = tag if isinstance(tag, Model) else _store(store).get(tag)
    if model.info.module != module and flavour_of(model.info.module) != module:
        saved_by = model.info.module or "models.save/create"
        loader = flavour_of(model.info.module) if model.info.module else None
        advice = (
            f"load it with {loader}"
            if loader and loader != model.info.module
            else "load it with that flavour"
        )
        raise NotFound(f"model {model.tag} was saved by {saved_by}, not {module}: {advice}")
    return model


def from_bentoml(model: Model) -> bool:
    """Whether ``model`` was saved by BentoML (and imported): its files are laid out as
    BentoML's framework module wrote them."""
    return is_bentoml_module(model.info.module)


def write_pickled(obj: Any, folder: Path) -> None:
    """Pickle ``obj`` into ``folder``, large buffers out-of-band as separate files."""
    import cloudpickle

    buffers: list[pickle.PickleBuffer] = []
    data = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    (folder / PICKLE_FILE).write_bytes(data)
    if buffers:
        (folder / BUFFER_DIR).mkdir()
    for i, buf in enumerate(buffers):
        with open(folder / BUFFER_DIR / f"{i:06d}.bin", "wb") as f:
            f.write(buf.raw())


def read_pickled(model: Model) -> Any:
    """Inverse of :func:`write_pickled`, streaming from the store (no materialised folder).

    Out-of-band buffers are read into writable bytearrays, so loaded arrays are writable.
    """
    buffers: list[bytearray] = []
    i = 0
    while True:
        try:
            f = model.open(f"{BUFFER_DIR}/{i:06d}.bin")
        except NotFound:
            break
        with f:
            buf = bytearray(f.seek(0, 2))
            f.seek(0)
            view = memoryview(buf)
            while view:
                view = view[f.readinto(view) :]
        buffers.append(buf)
        i += 1
    with model.open(PICKLE_FILE) as f:
        return pickle.loads(f.read(), buffers=buffers)
