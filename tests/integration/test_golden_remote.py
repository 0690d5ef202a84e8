"""A remote written with layout format 1 stays readable by every later version."""

from __future__ import annotations

import shutil
from pathlib import Path

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
