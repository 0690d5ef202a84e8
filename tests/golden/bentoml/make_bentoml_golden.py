"""Write tests/golden/bentoml/: models, archives and a model store made by REAL BentoML.

Run with BentoML's own virtualenv (never modelvault's), once, from the repository root::

    make .venv-bentoml/.installed
    .venv-bentoml/bin/python tests/golden/bentoml/make_bentoml_golden.py

It refuses to replace files that exist (delete the folder's generated files first). What
it writes, all small:

- ``home/models/``: a BentoML model store (``$BENTOML_HOME/models``) holding
  ``bento_pick`` (two versions, ``bentoml.picklable_model``), ``bento_sk``
  (``bentoml.sklearn``), ``bento_torch`` (``bentoml.pytorch``) and ``bento_plain``
  (``bentoml.models.create`` with no framework module) and ``bento_onnx`` (module
  ``bentoml.onnx``, which modelvault has no flavour for; made with ``models.create`` so
  that onnx need not be installed);
- ``bento_pick.<fmt>``: ``bentoml models export`` of the newest ``bento_pick`` in every
  output format (``bentomodel`` = tar + xz, ``gz``, ``xz``, ``tar``, ``zip``) and
  ``bento_pick.folder/`` (the ``folder`` format);
- ``bento_sk.bentomodel``, ``bento_torch.bentomodel``, ``bento_plain.bentomodel``,
  ``bento_onnx.bentomodel``;
- ``expected.json``: each model's tag, module, labels, metadata, options, signatures,
  context, creation time, files, and what calling it on a fixed input returns.

torch is NOT installed into .venv-bentoml (a large download CI should not make): when
``TORCH_SITE`` names a site-packages folder holding torch (modelvault's .venv has it), it
is appended to ``sys.path`` AFTER BentoML's own packages, so only torch comes from there.
Without it, ``bento_torch`` is not made.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOME = HERE / "home"
FORMATS = ["bentomodel", "gz", "xz", "tar", "zip", "folder"]

os.environ["BENTOML_HOME"] = str(HOME)
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
if os.environ.get("TORCH_SITE"):
    sys.path.append(os.environ["TORCH_SITE"])

import bentoml  # noqa: E402
import numpy as np  # noqa: E402


class Scaler:
    """A picklable model (pickled by value: this script is ``__main__``)."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.table = np.arange(16, dtype=np.float32)

    def __call__(self, xs: list[float]) -> list[float]:
        return [x * self.factor for x in xs]


def _files(path: Path) -> dict[str, int]:
    return {
        str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()
    }


def _describe(model: bentoml.Model, call: object) -> dict[str, object]:
    info = model.info
    d = info.to_dict()
    return {
        "tag": str(model.tag),
        "module": info.module,
        "labels": dict(info.labels),
        "metadata": d.get("metadata", {}),
        "options": d.get("options", {}),
        "signatures": d.get("signatures", {}),
        "context": d.get("context", {}),
        "api_version": info.api_version,
        "creation_time": info.creation_time.isoformat(),
        "files": _files(Path(model.path)),
        "custom_objects": sorted(model.custom_objects),
        "call": call,
    }


def main() -> None:
    generated = [HOME, HERE / "expected.json"] + [HERE / f"bento_pick.{f}" for f in FORMATS]
    if any(p.exists() for p in generated):
        sys.exit(f"{HERE}: generated files exist already; remove them to regenerate")
    expected: dict[str, object] = {"bentoml_version": bentoml.__version__, "models": {}}
    models = expected["models"]
    assert isinstance(models, dict)

    old = bentoml.picklable_model.save_model(
        "bento_pick", Scaler(1.5), labels={"stage": "old"}, metadata={"acc": 0.5}
    )
    models[str(old.tag)] = _describe(old, [1.5, 3.0])
    pick = bentoml.picklable_model.save_model(
        "bento_pick",
        Scaler(2.0),
        signatures={"__call__": {"batchable": True, "batch_dim": 0}},
        labels={"owner": "nlp_team", "stage": "dev"},
        metadata={"acc": 0.93, "epochs": 3, "nested": {"lr": 0.01, "layers": [1, 2]}},
        custom_objects={"vocab": {"a": 1, "b": 2}, "scale": Scaler(3.0)},
    )
    models[str(pick.tag)] = _describe(pick, [2.0, 4.0])

    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    x = rng.normal(size=(40, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    clf = LogisticRegression().fit(x, y)
    sk = bentoml.sklearn.save_model(
        "bento_sk", clf, labels={"kind": "clf"}, metadata={"score": float(clf.score(x, y))}
    )
    probe = [[1.0, 1.0, 0.0, 0.0], [-1.0, -1.0, 0.0, 0.0]]
    models[str(sk.tag)] = _describe(sk, clf.predict(np.array(probe)).tolist())

    try:
        import torch
    except ImportError:
        print("torch not importable (set TORCH_SITE): bento_torch not made")
    else:
        torch.manual_seed(0)
        net = torch.nn.Linear(4, 2)
        pt = bentoml.pytorch.save_model("bento_torch", net, labels={"kind": "net"})
        with torch.no_grad():
            out = net(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).tolist()
        models[str(pt.tag)] = _describe(pt, out)

    with bentoml.models.create(
        "bento_plain", labels={"kind": "files"}, metadata={"note": "no framework"}
    ) as plain:
        Path(plain.path, "weights.bin").write_bytes(bytes(range(256)) * 8)
        Path(plain.path, "config").mkdir()
        Path(plain.path, "config", "settings.json").write_text('{"k": 1}\n')
    plain_model = bentoml.models.get(plain.tag)
    models[str(plain_model.tag)] = _describe(plain_model, None)

    with bentoml.models.create(  # a framework modelvault has no flavour for
        "bento_onnx",
        module="bentoml.onnx",
        signatures={"run": {"batchable": True, "batch_dim": [0, 1]}},
        context=bentoml.models.ModelContext("onnx", {"onnx": "1.16.0"}),
    ) as other:
        Path(other.path, "saved_model.onnx").write_bytes(b"\x08\x07" + bytes(64))
    onnx_model = bentoml.models.get(other.tag)
    models[str(onnx_model.tag)] = _describe(onnx_model, None)

    for fmt in FORMATS:
        dest = HERE / f"bento_pick.{fmt}"
        with tempfile.TemporaryDirectory() as tmp:
            out = bentoml.models.export_model(pick.tag, tmp + "/", output_format=fmt)
            if fmt == "folder":  # fsspec's put copies the model folder into the one named
                (yaml,) = Path(tmp).rglob("model.yaml")
                out = str(yaml.parent)
            shutil.move(out, dest)
    for name in ["bento_sk", "bento_torch", "bento_plain", "bento_onnx"]:
        try:
            m = bentoml.models.get(name)
        except bentoml.exceptions.NotFound:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = bentoml.models.export_model(m.tag, tmp + "/", output_format="bentomodel")
            shutil.move(out, HERE / f"{name}.bentomodel")
    for extra in HOME.iterdir():  # keep the model store only
        if extra.name != "models":
            shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
    (HERE / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    print(f"wrote {HERE}")


if __name__ == "__main__":
    main()
