"""REAL BentoML (its own virtualenv, .venv-bentoml, made by `make test`) reads what
modelvault exports with output_format="bentoml", and what it exports again comes back.

BentoML's dependencies never enter modelvault's environment: BentoML runs in a
subprocess of .venv-bentoml/bin/python with BENTOML_HOME in the test's folder.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import modelvault
from modelvault.archive.bentoml import writer

ROOT = Path(__file__).resolve().parents[2]
BENTOML_PYTHON = ROOT / ".venv-bentoml" / "bin" / "python"
GOLDEN = ROOT / "tests" / "golden" / "bentoml"

# Run by BentoML's Python: import each archive with `bentoml models import` (the CLI) or
# bentoml.models.import_model, describe what BentoML sees, load it with its framework
# module, and export it again (BentoML's default format) for modelvault to read back.
SCRIPT = r"""
import json, os, subprocess, sys, hashlib
import bentoml

out = {}
bentoml_cli = os.path.join(os.path.dirname(sys.executable), "bentoml")
for i, path in enumerate(sys.argv[2:]):
    if i == 0:
        subprocess.run([bentoml_cli, "models", "import", path], check=True, capture_output=True)
        tag = open(path + ".tag").read()
        model = bentoml.models.get(tag)
    else:
        model = bentoml.models.import_model(path)
    files = {}
    for dirpath, _, names in os.walk(model.path):
        for n in names:
            full = os.path.join(dirpath, n)
            rel = os.path.relpath(full, model.path)
            files[rel] = hashlib.sha256(open(full, "rb").read()).hexdigest()
    info = model.info
    loaded = None
    if info.module == "bentoml.picklable_model":
        loaded = bentoml.picklable_model.load_model(model)([1.0, 2.0])
    elif info.module == "bentoml.sklearn":
        loaded = bentoml.sklearn.load_model(model).predict(
            [[1.0, 1.0, 0.0, 0.0], [-1.0, -1.0, 0.0, 0.0]]).tolist()
    again = bentoml.models.export_model(model.tag, sys.argv[1] + "/")
    out[str(model.tag)] = {
        "module": info.module,
        "labels": dict(info.labels),
        "metadata": info.metadata,
        "signatures": {k: [v.batchable, list(v.batch_dim)] for k, v in info.signatures.items()},
        "creation_time": info.creation_time.isoformat(),
        "files": files,
        "custom_objects": {k: repr(v) for k, v in model.custom_objects.items()
                           if isinstance(v, (int, str, dict))},
        "loaded": loaded,
        "exported": again,
    }
print(json.dumps(out))
"""


def _bentoml(tmp_path: Path, archives: list[str]) -> dict[str, dict[str, object]]:
    assert BENTOML_PYTHON.exists(), "run `make .venv-bentoml/.installed` (make test does)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["BENTOML_HOME"] = str(tmp_path / "bentoml-home")
    env["BENTOML_DO_NOT_TRACK"] = "True"
    again = tmp_path / "again"
    again.mkdir()
    done = subprocess.run(
        [str(BENTOML_PYTHON), "-W", "ignore", "-c", SCRIPT, str(again), *archives],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, dict[str, object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_bentoml_imports_our_export_and_we_import_its_export_back(
    store: modelvault.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = json.loads((GOLDEN / "expected.json").read_text())["models"]
    pick = store.import_model(str(GOLDEN / "bento_pick.bentomodel"))
    sk = store.import_model(str(GOLDEN / "bento_sk.bentomodel"))
    src = tmp_path / "native"
    (src / "sub").mkdir(parents=True)
    weights = os.urandom(300_000)
    (src / "weights.bin").write_bytes(weights)
    (src / "sub" / "vocab.txt").write_text("a\nb\n")
    native = store.save(
        src,
        "native:v1",
        labels={"owner": "nlp_team"},
        metadata={"acc": 0.93, "layers": [1, 2]},
        custom_objects={"threshold": 7},
        signatures={"predict": {"batchable": True, "batch_dim": (1, 0)}},
    )
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(writer, "XZ_BLOCK", 64 * 1024)  # several concatenated xz streams
    paths = [
        store.export_model(m.tag, str(out) + "/", output_format="bentoml")
        for m in (native, pick, sk)
    ]
    Path(paths[0] + ".tag").write_text(str(native.tag))  # the first goes through the CLI
    seen = _bentoml(tmp_path, paths)

    assert set(seen) == {str(native.tag), str(pick.tag), str(sk.tag)}
    got = seen[str(native.tag)]
    assert got["labels"] == {"owner": "nlp_team"}
    assert got["metadata"] == {"acc": 0.93, "layers": [1, 2]}
    assert got["signatures"] == {"predict": [True, [1, 0]]}
    assert got["custom_objects"] == {"threshold": "7"}
    assert got["creation_time"] == native.info.creation_time.isoformat()
    assert got["files"] == {
        "model.yaml": got["files"]["model.yaml"],  # BentoML keeps model.yaml with the files
        "custom_objects.pkl": got["files"]["custom_objects.pkl"],
        "weights.bin": _sha(weights),
        "sub/vocab.txt": _sha(b"a\nb\n"),
    }
    assert seen[str(pick.tag)]["loaded"] == expected[str(pick.tag)]["call"]
    assert seen[str(sk.tag)]["loaded"] == expected[str(sk.tag)]["call"]
    assert seen[str(pick.tag)]["labels"] == expected[str(pick.tag)]["labels"]

    # BentoML's own export of what it imported from us comes back as the same model
    back = modelvault.Store(tmp_path / "back")
    for model in (pick, sk):
        again = back.import_model(str(seen[str(model.tag)]["exported"]))
        assert again.id == model.id
    again = back.import_model(str(seen[str(native.tag)]["exported"]))
    assert again.tag == native.tag
    assert again.info.labels == native.info.labels
    assert again.info.signatures == native.info.signatures
    assert again.info.creation_time == native.info.creation_time
    assert again.custom_objects == {"threshold": 7}
    assert (Path(again.path) / "weights.bin").read_bytes() == weights
