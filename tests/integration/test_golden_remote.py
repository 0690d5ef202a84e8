"""A remote written with layout format 1 stays readable by every later version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import modelvault

GOLDEN = Path(__file__).parent.parent / "golden"
V1_MODEL_ID = "4e5b4120da187fa57223a0b74e26dac3a78de256190e7f07bdaa7398aa5a5817"


def test_pull_from_golden_remote_v1(tmp_path: Path) -> None:
    remote = shutil.copytree(GOLDEN / "remote-v1", tmp_path / "remote")
    url = Path(remote).as_uri()
    store = modelvault.Store(tmp_path / "store")
    assert modelvault.Tag("golden", "v1") in store_list_remote(store, url)
    result = store.pull("golden", url)
    assert result.objects > 0
    model = store.get("golden:v1")
    assert model.id == V1_MODEL_ID
    golden = modelvault.Store(shutil.copytree(GOLDEN / "store-v1", tmp_path / "golden"))
    expected = golden.get("golden:v1")
    for rel in ("config.json", "weights.bin", "tokenizer/vocab.txt", "run.sh"):
        with model.open(rel) as got, expected.open(rel) as want:
            assert got.read() == want.read()
    assert store.verify().ok


def store_list_remote(store: modelvault.Store, url: str) -> list[modelvault.Tag]:
    return store.list_remote(url)


def _marker(remote: Path) -> int:
    return int(json.loads((remote / "modelvault.json").read_bytes())["format"])


def test_a_format_1_remote_is_read_as_it_is_and_a_push_makes_it_current(tmp_path: Path) -> None:
    """Format 2 packs may hold float-codec chunks, format 3 writers hold locks (remote gc),
    format 4 packs float chunks of sub-format 2: an older modelvault must refuse such a
    remote ("upgrade"), not misread or race it."""
    remote = Path(shutil.copytree(GOLDEN / "remote-v1", tmp_path / "remote"))
    url = remote.as_uri()
    store = modelvault.Store(tmp_path / "store")
    store.pull("golden:v1", url)
    assert _marker(remote) == 1  # reads change nothing
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"pushed" * 5000)
    store.save(src, "other:v1")
    store.push("other:v1", url)
    assert _marker(remote) == 4
    fresh = modelvault.Store(tmp_path / "fresh")
    fresh.pull("golden:v1", url)
    assert fresh.get("golden:v1").id == V1_MODEL_ID


def test_a_remote_of_a_newer_format_says_upgrade(tmp_path: Path) -> None:
    remote = Path(shutil.copytree(GOLDEN / "remote-v1", tmp_path / "remote"))
    (remote / "modelvault.json").chmod(0o644)
    (remote / "modelvault.json").write_text('{"format": 5}')
    store = modelvault.Store(tmp_path / "store")
    for call in (lambda: store.pull("golden:v1", remote.as_uri()),
                 lambda: store.list_remote(remote.as_uri())):  # fmt: skip
        with pytest.raises(modelvault.UnsupportedFormat, match="upgrade modelvault") as exc:
            call()
        assert isinstance(exc.value, modelvault.RemoteError) and exc.value.found == 5


def test_golden_remote_v3_reads_pulls_verifies_and_collects_nothing(tmp_path: Path) -> None:
    """Format 3 (writers lock; refs may be deleted; remote aliases): golden:v1 and the
    alias golden@prod naming it; a version deleted there and collected before."""
    remote = Path(shutil.copytree(GOLDEN / "remote-v3", tmp_path / "remote"))
    url = remote.as_uri()
    store = modelvault.Store(tmp_path / "store")
    assert store.list_remote(url) == [modelvault.Tag("golden", "v1")]
    assert store.aliases_remote(url) == {"golden@prod": modelvault.Tag("golden", "v1")}
    report = store.verify_remote(url)
    assert report.ok and report.objects_checked > 0, report
    store.pull("golden@prod", url)
    assert store.get("golden:v1").id == V1_MODEL_ID
    assert store.aliases() == {"golden@prod": modelvault.Tag("golden", "v1")}
    assert store.gc_remote(url) == 0
    with pytest.raises(modelvault.ModelExists, match="golden@prod"):
        store.delete_remote("golden:v1", url)
    assert _marker(remote) == 4  # a gc (a writer) marked it current
