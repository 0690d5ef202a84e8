"""The models API on a real store: save, create, get, list, delete, read back, dedup."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import modelvault
from modelvault import ModelExists, NotFound, Store, Tag
from modelvault.repo import maintenance


def make_folder(root: Path, seed: int = 0, size: int = 2_000_000) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "weights.bin").write_bytes(rng.standard_normal(size // 4, dtype=np.float32).tobytes())
    (root / "config.json").write_text('{"hidden": 64}')
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "vocab.txt").write_text("a\nb\nc\n" * 1000)
    (root / "empty.txt").write_bytes(b"")
    return root


def read_all(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_save_get_read_back_exactly(store: Store, tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    model = store.save(src, "bert", labels={"owner": "nlp"}, metadata={"acc": 0.93})
    got = store.get("bert")
    assert got == model and got.tag == model.tag
    assert read_all(Path(got.path)) == read_all(src)
    assert got.size == sum(len(b) for b in read_all(src).values())
    assert got.info.labels == {"owner": "nlp"} and got.info.metadata == {"acc": 0.93}
    assert got.info.creation_time.tzinfo == dt.timezone.utc
    assert got.info.api_version == "v1"
    assert set(got.info.context) >= {"framework_name", "modelvault_version", "python_version"}
    with got.open("sub/vocab.txt") as f:
        assert f.read() == (src / "sub" / "vocab.txt").read_bytes()


def test_model_path_is_read_only_and_reused(store: Store, tmp_path: Path) -> None:
    model = store.save(make_folder(tmp_path / "src"), "m")
    first = model.path
    assert store.get("m").path == first
    mode = os.stat(Path(first) / "weights.bin").st_mode
    assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_open_streams_with_seek(store: Store, tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    model = store.save(src, "m")
    data = (src / "weights.bin").read_bytes()
    with model.open("weights.bin") as f:
        f.seek(1_000_003)
        assert f.read(100_000) == data[1_000_003:1_100_003]
    with pytest.raises(NotFound):
        model.open("nope.bin")
    assert not (store.path / "cache" / model.id).exists()  # open() did not materialise


def test_open_reads_fill_across_chunks_like_a_file(store: Store, tmp_path: Path) -> None:
    """read(n) returns n bytes unless the file ends first, whatever the chunk sizes."""
    src = make_folder(tmp_path / "src")
    model = store.save(src, "m")
    data = (src / "weights.bin").read_bytes()
    with model.open("weights.bin") as f:
        assert f.read(1 << 20) == data[: 1 << 20]  # spans many chunks (~64 KiB each)
        buf = bytearray(600_000)
        assert f.readinto(buf) == len(buf) and bytes(buf) == data[1 << 20 : (1 << 20) + 600_000]
        f.seek(len(data) - 10)
        assert f.read(1000) == data[-10:]  # short only at the end
        assert f.read(1000) == b""


def test_save_single_file(store: Store, tmp_path: Path) -> None:
    f = tmp_path / "model.onnx"
    f.write_bytes(b"onnx" * 1000)
    model = store.save(f, "onnx")
    assert (Path(model.path) / "model.onnx").read_bytes() == b"onnx" * 1000


def test_create_commits_on_exit_and_discards_on_error(store: Store) -> None:
    with store.create("m", metadata={"k": 1}) as ref:
        assert os.listdir(ref.path) == []
        (Path(ref.path) / "w.txt").write_text("hi")
    assert ref.model is not None
    assert (Path(store.get("m").path) / "w.txt").read_text() == "hi"
    staging = None
    with pytest.raises(RuntimeError), store.create("broken") as ref2:
        staging = ref2.path
        (Path(ref2.path) / "x").write_text("x")
        raise RuntimeError("boom")
    assert staging and not os.path.exists(staging)
    with pytest.raises(NotFound):
        store.get("broken")


def test_versions_are_immutable(store: Store, tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    store.save(src, "m:v1")
    with pytest.raises(ModelExists, match="immutable"):
        store.save(src, "m:v1")


def test_latest_list_order_and_delete(store: Store, tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    tags = [store.save(src, "m").tag for _ in range(3)]
    store.save(src, "other")
    assert [m.tag for m in store.list("m")] == tags[::-1]
    assert store.get("m").tag == tags[-1] == store.get("m:latest").tag
    assert len(store.list()) == 4
    store.delete(tags[-1])
    assert store.get("m").tag == tags[-2]
    store.delete("m")
    assert store.list("m") == []
    with pytest.raises(NotFound):
        store.get("m")
    with pytest.raises(NotFound):
        store.delete("m")


def test_identical_content_is_stored_once(store: Store, tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    store.save(src, "a")
    one = store.stats().stored_bytes
    store.save(src, "b")
    two = store.stats()
    assert two.models == 2
    assert two.logical_bytes == 2 * store.get("a").size
    assert two.stored_bytes - one < 10_000  # only the new model object and its tiny pack


def test_shifted_content_dedups(store: Store, tmp_path: Path) -> None:
    """An insertion at the front shifts every offset; CDC still finds the shared chunks."""
    rng = np.random.default_rng(1)
    payload = rng.standard_normal(2_000_000, dtype=np.float32).tobytes()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "w").write_bytes(payload)
    (tmp_path / "b" / "w").write_bytes(b"new header!" + payload)
    store.save(tmp_path / "a", "a")
    base = store.stats().stored_bytes
    store.save(tmp_path / "b", "b")
    grown = store.stats().stored_bytes - base
    assert grown < 0.05 * len(payload)


def test_custom_objects_are_loaded_lazily(store: Store, tmp_path: Path) -> None:
    model = store.save(make_folder(tmp_path / "src"), "m", custom_objects={"tok": {"a": 1}})
    fresh = store.get(model.tag)
    assert "custom_objects" not in fresh.__dict__  # nothing unpickled by get
    assert fresh.custom_objects == {"tok": {"a": 1}}


def test_signatures_are_normalised(store: Store, tmp_path: Path) -> None:
    sigs = {"predict": {"batchable": True}, "encode": {"batchable": True, "batch_dim": (1, 0)}}
    model = store.save(make_folder(tmp_path / "src"), "m", signatures=sigs)
    got = store.get(model.tag).info.signatures
    assert got == {
        "predict": {"batchable": True, "batch_dim": 0},
        "encode": {"batchable": True, "batch_dim": (1, 0)},
    }


def test_default_store_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELVAULT_HOME", str(tmp_path / "h1"))
    with modelvault.models.create("x") as ref:
        (Path(ref.path) / "f").write_text("1")
    assert [m.tag.name for m in modelvault.models.list()] == ["x"]
    monkeypatch.setenv("MODELVAULT_HOME", str(tmp_path / "h2"))
    assert modelvault.models.list() == []
    assert (tmp_path / "h1" / "refs" / "x").is_dir()


def test_gc_frees_deleted_models_only(store: Store, tmp_path: Path) -> None:
    a = store.save(make_folder(tmp_path / "a", seed=1), "a")
    b = store.save(make_folder(tmp_path / "b", seed=2), "b")
    _ = a.path
    before = store.stats().stored_bytes
    rows = {f["tag"]: f for f in maintenance.footprints(store.repo, [a.ref, b.ref])}
    only_a = rows[str(a.tag)]["unique_bytes"]  # (float chunks may be stored compressed)
    assert only_a > 0.5 * a.size
    store.delete("a")
    freed = store.gc()
    assert freed >= only_a + a.size  # its objects, and its materialised folder
    assert store.stats().stored_bytes <= before - only_a
    assert read_all(Path(store.get("b").path)) == read_all(tmp_path / "b")
    assert store.verify().ok
    assert store.get(b.tag).size == b.size


def test_tag_objects_and_strings_both_work(store: Store, tmp_path: Path) -> None:
    model = store.save(make_folder(tmp_path / "src"), Tag("m", "v1"))
    assert store.get("m:v1") == store.get(Tag("m", "v1")) == model
