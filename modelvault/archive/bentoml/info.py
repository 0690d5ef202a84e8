"""BentoML's ``model.yaml`` <-> a modelvault model's info, and BentoML's module names.

Pure: no I/O beyond the bytes handed in. ``model.yaml`` is untrusted: it is parsed with
PyYAML's safe loader (no Python tags), after checking that its node graph does not
expand (through anchors and aliases) into more than :data:`MAX_YAML_NODES` values, and
every field is checked as a save would check it. Any problem is an ``ArchiveError``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelvault.errors import ArchiveError, InvalidInput
from modelvault.modelinfo import check_labels, check_storable, normalise_signatures
from modelvault.tags import Tag

__all__ = [
    "BENTOML_FLAVOURS",
    "CUSTOM_OBJECTS",
    "MAX_YAML_BYTES",
    "MAX_YAML_NODES",
    "MODEL_YAML",
    "BentoInfo",
    "dump_model_yaml",
    "flavour_of",
    "parse_model_yaml",
]

MODEL_YAML = "model.yaml"
CUSTOM_OBJECTS = "custom_objects.pkl"
MAX_YAML_BYTES = 1 << 20  # a real model.yaml is well under 4 KiB
MAX_YAML_NODES = 100_000  # values model.yaml may expand to (anchors and aliases included)

# BentoML's framework module names (and the modules that define them) -> the modelvault
# flavour that loads what they save.
BENTOML_FLAVOURS: dict[str, str] = {
    "bentoml.picklable_model": "modelvault.picklable_model",
    "bentoml._internal.frameworks.picklable_model": "modelvault.picklable_model",
    "bentoml.sklearn": "modelvault.sklearn",
    "_bentoml_impl.frameworks.sklearn": "modelvault.sklearn",
    "bentoml._internal.frameworks.sklearn": "modelvault.sklearn",
    "bentoml.pytorch": "modelvault.pytorch",
    "bentoml._internal.frameworks.pytorch": "modelvault.pytorch",
}


def is_bentoml_module(module: str) -> bool:
    """Whether ``module`` names one of BentoML's own modules."""
    return module.split(".")[0] in ("bentoml", "_bentoml_impl")


def flavour_of(module: str) -> str | None:
    """The modelvault flavour module that loads a model of ``module``: itself for any
    module that is not BentoML's, the matching flavour for BentoML's picklable_model,
    sklearn and pytorch, None for other BentoML modules (no modelvault flavour)."""
    if not is_bentoml_module(module):
        return module
    return BENTOML_FLAVOURS.get(module)


@dataclass(frozen=True)
class BentoInfo:
    """What ``model.yaml`` says, checked: ready for a ModelObject."""

    tag: Tag
    module: str
    labels: dict[str, str]
    metadata: dict[str, Any]
    options: dict[str, Any]
    signatures: dict[str, dict[str, Any]]
    context: dict[str, Any]
    api_version: str
    creation_time: int  # microseconds since the epoch, UTC


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is expanded (memoised)."""
    import yaml

    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_YAML_NODES + 1  # a cycle (recursive alias) counts as too many
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[key] = min(total, MAX_YAML_NODES + 1)
    return memo[key]


def _load_yaml(data: bytes) -> Any:
    import yaml

    if len(data) > MAX_YAML_BYTES:
        raise ArchiveError(f"{MODEL_YAML} is {len(data)} bytes, more than {MAX_YAML_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ArchiveError(f"{MODEL_YAML} is not UTF-8 text") from None
    try:
        loader = yaml.SafeLoader(text)  # (it checks the characters at once)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArchiveError(f"{MODEL_YAML} is not safe, valid YAML: {first}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise ArchiveError(f"{MODEL_YAML} is empty")
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise ArchiveError(
                f"{MODEL_YAML} expands to more than {MAX_YAML_NODES} values (an alias bomb?)"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArchiveError(f"{MODEL_YAML} is not safe, valid YAML: {first}") from None
    except RecursionError:
        raise ArchiveError(f"{MODEL_YAML} is nested too deeply") from None
    finally:
        loader.dispose()


def _plain_times(value: Any) -> Any:
    """Dates and times (which YAML may carry in metadata) as ISO 8601 strings."""
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: _plain_times(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_times(v) for v in value]
    return value


def _creation_time(value: Any) -> int:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ArchiveError(f"{MODEL_YAML}: creation_time {value!r} is not ISO 8601") from None
    if not isinstance(value, dt.datetime):
        raise ArchiveError(f"{MODEL_YAML}: creation_time is missing or not a time")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    micros = (value - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(
        microseconds=1
    )
    if micros < 0:
        raise ArchiveError(f"{MODEL_YAML}: creation_time {value.isoformat()} is before 1970")
    return int(micros)


def _mapping(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ArchiveError(f"{MODEL_YAML}: {key} must be a mapping, not {type(value).__name__}")
    return dict(value)


def _text(doc: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if value is None:
        value = ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ArchiveError(f"{MODEL_YAML}: {key} must be text")
    return str(value)


def parse_model_yaml(data: bytes) -> BentoInfo:
    """Check and map BentoML's ``model.yaml`` onto a model's info.

    Raises:
        ArchiveError: not safe YAML, not a mapping, a field missing or of a wrong shape.
    """
    doc = _load_yaml(data)
    if not isinstance(doc, Mapping):
        raise ArchiveError(f"{MODEL_YAML} is not a mapping of fields")
    for key in ("name", "version"):
        if key not in doc:
            raise ArchiveError(f"{MODEL_YAML} has no {key}")
    try:
        tag = Tag(_text(doc, "name"), _text(doc, "version"))
        signatures = {
            str(k): {kk: (list(vv) if isinstance(vv, tuple) else vv) for kk, vv in v.items()}
            if isinstance(v, Mapping)
            else v
            for k, v in _mapping(doc, "signatures").items()
        }
        return BentoInfo(
            tag=tag,
            module=_text(doc, "module", ""),
            labels=check_labels(
                {
                    str(k): (v if isinstance(v, str) else str(v))
                    for k, v in _mapping(doc, "labels").items()
                }
            ),
            metadata=check_storable("metadata", _plain_times(_mapping(doc, "metadata"))),
            options=check_storable("options", _plain_times(_mapping(doc, "options"))),
            signatures=normalise_signatures(signatures, {}),
            context=check_storable("context", _plain_times(_mapping(doc, "context"))),
            api_version=_text(doc, "api_version", "v1"),
            creation_time=_creation_time(doc.get("creation_time")),
        )
    except (InvalidInput, ValueError) as exc:  # InvalidTag is a ValueError
        raise ArchiveError(f"{MODEL_YAML}: {exc}") from None


def _bentoml_signature(sig: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"batchable": bool(sig.get("batchable", False))}
    if out["batchable"]:
        dim = sig.get("batch_dim", 0)
        out["batch_dim"] = list(dim) if isinstance(dim, tuple | list) else [dim, dim]
    for key in ("input_spec", "output_spec"):
        if sig.get(key) is not None:
            out[key] = sig[key]
    return out


def dump_model_yaml(
    *,
    tag: Tag,
    module: str,
    labels: Mapping[str, str],
    options: Mapping[str, Any],
    metadata: Mapping[str, Any],
    context: Mapping[str, Any],
    signatures: Mapping[str, Mapping[str, Any]],
    api_version: str,
    creation_time: dt.datetime,
) -> bytes:
    """``model.yaml`` as BentoML writes it (same fields, same order), for ``tag``.

    ``context`` keeps BentoML's four fields: ``framework_name``, ``framework_versions``,
    ``bentoml_version`` (when the model came from BentoML) and ``python_version``.
    """
    import yaml

    ctx: dict[str, Any] = {
        "framework_name": str(context.get("framework_name", "")),
        "framework_versions": dict(context.get("framework_versions") or {}),
    }
    if context.get("bentoml_version"):
        ctx["bentoml_version"] = str(context["bentoml_version"])
    if context.get("python_version"):
        ctx["python_version"] = str(context["python_version"])
    doc = {
        "name": tag.name,
        "version": str(tag.version),
        "module": module,
        "labels": dict(labels),
        "options": dict(options),
        "metadata": dict(metadata),
        "context": ctx,
        "signatures": {k: _bentoml_signature(v) for k, v in signatures.items()},
        "api_version": api_version,
        "creation_time": creation_time.astimezone(dt.timezone.utc).isoformat(),
    }
    text: str = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    return text.encode("utf-8")
