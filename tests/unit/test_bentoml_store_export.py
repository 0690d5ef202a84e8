"""Migrating a BentoML model store (the golden one REAL BentoML wrote) and exporting for
BentoML (read back here; tests/integration/test_bentoml_real.py has BentoML read it)."""

from __future__ import annotations

import datetime as dt
import json
import lzma
import shutil
import tarfile
from pathlib import Path

import pytest

import modelvault
from modelvault.archive.bentoml import writer
from modelvault.errors import InvalidInput, PathNotFound

GOLDEN = Path(__file__).parent.parent / "golden" / "bentoml"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())["models"]


@pytest.fixture
def bentoml_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the golden BentoML home, named by $BENTOML_HOME."""
    home = tmp_path / "bentoml"
    shutil.copytree(GOLDEN / "home", home)
    monkeypatch.setenv("BENTOML_HOME", str(home))
    return home


def test_a_bentoml_store_comes_across_whole_and_only_once(bentoml_home: Path) -> None:
    imported = modelvault.models.import_bentoml_store()
    assert sorted(str(m.tag) for m in imported) == sorted(EXPECTED)
    for model in imported:
        want = EXPECTED[str(model.tag)]
        assert model.info.creation_time == dt.datetime.fromisoformat(want["creation_time"])
        assert model.info.labels == want["labels"]
        assert model.info.module == want["module"]
    for name in {t.split(":")[0] for t in EXPECTED}:  # latest agrees with BentoML's
        latest = (bentoml_home / "models" / name / "latest").read_text().strip()
        assert modelvault.models.get(name).tag.version == latest
    store = modelvault.models.default_store()
    before = store.stats().stored_bytes
    assert modelvault.models.import_bentoml_store() == []  # a second run imports nothing
    assert modelvault.models.import_bentoml_store(bentoml_home / "models") == []
    assert store.stats().stored_bytes == before
    assert store.verify().ok


def test_new_versions_are_picked_up_and_the_default_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BENTOML_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    models = tmp_path / "bentoml" / "models"
    shutil.copytree(GOLDEN / "home" / "models" / "bento_sk", models / "bento_sk")
    store = modelvault.Store(tmp_path / "store")
    assert [m.tag.name for m in store.import_bentoml_store()] == ["bento_sk"]
    shutil.copytree(GOLDEN / "home" / "models" / "bento_pick", models / "bento_pick")
    steps = []
    got = store.import_bentoml_store(step=steps.append)
    assert sorted(str(m.tag) for m in got) == sorted(t for t in EXPECTED if "pick" in t)
    created = {t: dt.datetime.fromisoformat(EXPECTED[t]["creation_time"]) for t in EXPECTED}
    picks = sorted((t for t in EXPECTED if "pick" in t), key=created.__getitem__)
    assert [(s.index, s.total, s.tag, s.imported) for s in steps] == [
        (1, 3, picks[0], True),  # the versions of a name oldest first
        (2, 3, picks[1], True),
        (3, 3, f"bento_sk:{got_sk_version(models)}", False),
    ]


def got_sk_version(models: Path) -> str:
    (folder,) = (models / "bento_sk").glob("*/")
    return folder.name


def test_no_bentoml_store_there(tmp_path: Path) -> None:
    with pytest.raises(PathNotFound, match="no BentoML model store"):
        modelvault.Store(tmp_path / "s").import_bentoml_store(tmp_path / "nothing")


def _members(path: str) -> dict[str, bytes | None]:
    with lzma.open(path) as f, tarfile.open(fileobj=f, mode="r|") as tar:
        out: dict[str, bytes | None] = {}
        for m in tar:
            data = tar.extractfile(m)
            out[m.name] = data.read() if data else None
    return out


def test_export_is_tar_xz_with_bentomls_layout_and_reads_back(
    store: modelvault.Store, tmp_path: Path
) -> None:
    model = store.import_model(str(GOLDEN / "bento_pick.bentomodel"))
    path = store.export_model(model.tag, str(tmp_path) + "/", output_format="bentoml")
    assert path == str(tmp_path / f"bento_pick-{model.tag.version}.bentomodel")
    assert Path(path).read_bytes()[:6] == b"\xfd7zXZ\x00"
    members = _members(path)
    assert list(members) == [".", "./model.yaml", "./custom_objects.pkl", "./saved_model.pkl"]
    folder = GOLDEN / "bento_pick.folder"
    assert members["./custom_objects.pkl"] == (folder / "custom_objects.pkl").read_bytes()
    assert members["./saved_model.pkl"] == (folder / "saved_model.pkl").read_bytes()
    other = modelvault.Store(tmp_path / "other")
    assert other.import_model(path).id == model.id  # the same info, files, custom objects


def test_a_native_model_exports_in_several_xz_streams(
    store: modelvault.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "XZ_BLOCK", 4096)  # many concatenated xz streams
    src = tmp_path / "m"
    (src / "sub").mkdir(parents=True)
    (src / "w.bin").write_bytes(bytes(range(256)) * 200)
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (src / "sub" / "a.txt").write_text("a\n")
    model = store.save(
        src,
        "native:v1",
        labels={"team": "nlp"},
        metadata={"acc": 0.9, "when": [1, 2]},
        custom_objects={"k": 1},
        signatures={"predict": {"batchable": True, "batch_dim": (1, 0)}},
    )
    done: list[int] = []
    path = store.export_model("native:v1", str(tmp_path / "n.bentomodel"), output_format="bentoml")
    store.export_model(
        "native", str(tmp_path / "p.bentomodel"), output_format="bentoml", progress=done.append
    )
    assert sum(done) == model.size
    data = Path(path).read_bytes()
    assert data.count(b"\xfd7zXZ\x00") > 5
    members = _members(path)
    assert members["./w.bin"] == (src / "w.bin").read_bytes()
    assert members["./sub/a.txt"] == b"a\n"
    assert members["./sub"] is None
    import yaml

    info = yaml.safe_load(members["./model.yaml"])
    assert info["name"] == "native" and info["version"] == "v1"
    assert info["labels"] == {"team": "nlp"}
    assert info["metadata"] == {"acc": 0.9, "when": [1, 2]}
    assert info["signatures"] == {"predict": {"batchable": True, "batch_dim": [1, 0]}}
    with lzma.open(path) as f, tarfile.open(fileobj=f) as tar:
        assert tar.getmember("./run.sh").mode == 0o755
    back = modelvault.Store(tmp_path / "back").import_model(path)
    assert back.info.creation_time == model.info.creation_time
    assert back.custom_objects == {"k": 1}
    assert back.info.signatures == model.info.signatures


def test_export_refusals(store: modelvault.Store, tmp_path: Path) -> None:
    store.save(GOLDEN / "bento_pick.folder", "has_yaml:v1")  # model.yaml among its files
    with pytest.raises(InvalidInput, match=r"'model\.yaml' at its top"):
        store.export_model("has_yaml", str(tmp_path), output_format="bentoml")
    assert list(tmp_path.glob("*.bentomodel")) == []
    with pytest.raises(InvalidInput, match="unknown"):
        store.export_model("has_yaml", str(tmp_path), output_format="zip")
    with pytest.raises(InvalidInput, match="without base"):
        store.export_model("has_yaml", str(tmp_path), output_format="bentoml", base="has_yaml")


def test_cli_migrates_a_store_and_exports_for_bentoml(
    bentoml_home: Path, tmp_path: Path, _isolated_home: Path
) -> None:
    import subprocess
    import sys

    mv = str(Path(sys.executable).with_name("mv"))
    env = {
        "MODELVAULT_HOME": str(_isolated_home),
        "BENTOML_HOME": str(bentoml_home),
        "PATH": str(Path(sys.executable).parent),
        "NO_COLOR": "1",
    }
    first = subprocess.run(
        [mv, "import", "--bentoml-store"], env=env, capture_output=True, text=True, check=True
    )
    assert f"Imported {len(EXPECTED)} models from the BentoML store" in first.stdout
    again = subprocess.run(
        [mv, "import", "--bentoml-store", str(bentoml_home / "models")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Imported 0 models" in again.stdout and f"({len(EXPECTED)} already" in again.stdout
    out = subprocess.run(
        [mv, "export", "bento_sk", str(tmp_path) + "/", "--format", "bentoml"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "exported to" in out.stdout
    (exported,) = tmp_path.glob("bento_sk-*.bentomodel")
    assert _members(str(exported))["./saved_model.pkl"] is not None
    bad = subprocess.run([mv, "import"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "needs SRC" in bad.stderr


def test_versions_are_imported_oldest_first_whatever_their_names(
    tmp_path: Path, bentoml_home: Path
) -> None:
    """A version whose name sorts first but which BentoML made later comes second, so
    each version is saved beside the one before it."""
    (real,) = (bentoml_home / "models" / "bento_sk").glob("*/")
    later = real.parent / "0000000000000000"
    shutil.copytree(real, later)
    text = (later / "model.yaml").read_text()
    text = text.replace(f"version: {real.name}", "version: '0000000000000000'")
    text = text.replace("creation_time: '2", "creation_time: '3")  # a thousand years on
    (later / "model.yaml").write_text(text)
    steps = []
    store = modelvault.Store(tmp_path / "s")
    store.import_bentoml_store(bentoml_home / "models", step=steps.append)
    sk = [s.tag for s in steps if s.tag.startswith("bento_sk:")]
    assert sk == [f"bento_sk:{real.name}", "bento_sk:0000000000000000"]
    assert store.get("bento_sk").tag.version == "0000000000000000"  # latest: the newest


def test_export_to_a_url_and_back(store: modelvault.Store, tmp_path: Path) -> None:
    model = store.import_model(str(GOLDEN / "bento_sk.bentomodel"))
    url = store.export_model(model.tag, "memory://bento-out/", output_format="bentoml")
    assert url.endswith(f"bento-out/bento_sk-{model.tag.version}.bentomodel")
    assert modelvault.Store(tmp_path / "other").import_model(url).id == model.id
