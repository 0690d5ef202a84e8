"""The public names of modelvault are a contract: pinned here."""

from __future__ import annotations

import subprocess
import sys

import modelvault

PUBLIC = {
    "ArchiveError",
    "IntegrityError",
    "InvalidInput",
    "InvalidTag",
    "Model",
    "ModelExists",
    "ModelInfo",
    "ModelVaultError",
    "NotFound",
    "PathNotFound",
    "RemoteError",
    "Runner",
    "Store",
    "Tag",
    "__version__",
    "models",
    "picklable_model",
    "pytorch",
    "remotes",
    "sklearn",
}
MODELS = {
    "create",
    "save",
    "get",
    "list",
    "delete",
    "export_model",
    "import_model",
    "import_bentoml_store",
    "push",
    "pull",
    "list_remote",
    "set_alias",
    "aliases",
    "remove_alias",
    "aliases_remote",
    "delete_remote",
    "gc_remote",
    "verify_remote",
}
STORE_ALIASES = {"set_alias", "aliases", "remove_alias", "aliases_remote"}
STORE_REMOTE_MAINTENANCE = {"delete_remote", "gc_remote", "verify_remote", "unlock_remote"}


def test_all_is_pinned_and_importable() -> None:
    assert set(modelvault.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(modelvault, name) is not None


def test_models_functions() -> None:
    assert all(callable(getattr(modelvault.models, n)) for n in MODELS)
    assert all(callable(getattr(modelvault.Store, n)) for n in STORE_ALIASES)
    assert all(callable(getattr(modelvault.Store, n)) for n in STORE_REMOTE_MAINTENANCE)


def test_errors_derive_from_the_root() -> None:
    for name in [
        "ArchiveError",
        "IntegrityError",
        "InvalidTag",
        "ModelExists",
        "NotFound",
        "RemoteError",
        "InvalidInput",
        "PathNotFound",
    ]:
        assert issubclass(getattr(modelvault, name), modelvault.ModelVaultError)
    assert issubclass(modelvault.InvalidTag, ValueError)


def test_import_does_not_pull_in_heavy_frameworks() -> None:
    code = (
        "import sys, modelvault; "
        "print(sorted(m for m in ('torch', 'sklearn', 'fsspec', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
