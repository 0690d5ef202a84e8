"""Links inside a saved folder are stored as what they point to; broken links are errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelvault import InvalidInput, Model, PathNotFound, Store


def _tree(model: Model) -> dict[str, bytes]:
    """Every file of the materialised model, which must hold no links."""
    root = Path(model.path)
    out = {}
    for p in sorted(root.rglob("*")):
        assert not p.is_symlink(), f"{p} is a link in the stored model"
        if p.is_file():
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def _hf_cache(root: Path) -> Path:
    """A Hugging Face hub cache entry; returns its snapshot folder.

    ``snapshots/<rev>/<file>`` are relative links into ``blobs/<sha>``, as
    ``huggingface_hub`` makes them (nested files link with more ``../``).
    """
    repo = root / "models--org--tiny-bert"
    blobs = repo / "blobs"
    blobs.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    snap = repo / "snapshots" / "0123abcd"
    (snap / "tokenizer").mkdir(parents=True)
    files = {
        "config.json": b'{"hidden_size": 32}',
        "model.safetensors": os.urandom(300_000),
        "tokenizer/vocab.txt": b"[PAD]\n[UNK]\nhello\n",
        "tokenizer/tokenizer_config.json": b'{"lower": true}',
    }
    for i, (rel, data) in enumerate(files.items()):
        blob = blobs / f"{i:040x}"
        blob.write_bytes(data)
        depth = rel.count("/")
        os.symlink("../" * (depth + 2) + f"blobs/{blob.name}", snap / rel)
    return snap


def test_hugging_face_snapshot_saves_whole(store: Store, tmp_path: Path) -> None:
    snap = _hf_cache(tmp_path / "hub")
    assert (snap / "config.json").is_symlink()
    model = store.save(snap, "tiny-bert")
    expected = {
        p.relative_to(snap).as_posix(): p.read_bytes() for p in snap.rglob("*") if p.is_file()
    }
    assert len(expected) == 4
    assert _tree(model) == expected
    assert model.size == sum(len(v) for v in expected.values())
    with model.open("tokenizer/vocab.txt") as f:
        assert f.read() == expected["tokenizer/vocab.txt"]
    assert store.verify().ok


def test_links_to_files_and_folders_are_followed(store: Store, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "shared").mkdir(parents=True)
    (outside / "weights.bin").write_bytes(b"w" * 5000)
    (outside / "shared" / "labels.txt").write_bytes(b"cat\ndog\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "own.txt").write_bytes(b"own")
    os.symlink(outside / "weights.bin", src / "weights.bin")  # absolute link to a file
    os.symlink("../outside/shared", src / "shared")  # relative link to a folder
    os.symlink("own.txt", src / "alias.txt")  # two names, one file
    model = store.save(src, "m")
    assert _tree(model) == {
        "alias.txt": b"own",
        "own.txt": b"own",
        "shared/labels.txt": b"cat\ndog\n",
        "weights.bin": b"w" * 5000,
    }
    linked_root = tmp_path / "link-to-src"
    os.symlink(src, linked_root)  # the saved path itself is a link
    assert store.save(linked_root, "m2").object.tree == model.object.tree  # same files


def test_a_single_linked_file_is_saved(store: Store, tmp_path: Path) -> None:
    real = tmp_path / "real.onnx"
    real.write_bytes(b"onnx" * 100)
    link = tmp_path / "model.onnx"
    os.symlink(real, link)
    model = store.save(link, "single")
    with model.open("model.onnx") as f:
        assert f.read() == b"onnx" * 100


def _assert_nothing_saved(store: Store) -> None:
    assert store.list() == []
    assert store.verify().ok
    store.gc()
    assert store.stats().stored_bytes == 0


def test_dangling_link_is_an_error_naming_the_path(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"a" * 1000)
    dangling = src / "sub" / "gone.bin"
    os.symlink(tmp_path / "deleted-blob", dangling)
    with pytest.raises(PathNotFound, match=str(dangling)) as exc:
        store.save(src, "m")
    assert "dangling" in str(exc.value)
    _assert_nothing_saved(store)
    with pytest.raises(PathNotFound, match="dangling"):
        store.save(dangling, "m")


@pytest.mark.parametrize("shape", ["self", "pair", "ancestor"])
def test_link_loop_is_an_error_naming_the_path(store: Store, tmp_path: Path, shape: str) -> None:
    src = tmp_path / "src"
    (src / "deep").mkdir(parents=True)
    (src / "weights.bin").write_bytes(b"w" * 1000)
    if shape == "self":
        bad = src / "loop"
        os.symlink("loop", bad)
    elif shape == "pair":
        bad = src / "ping"
        os.symlink("pong", bad)
        os.symlink("ping", src / "pong")
    else:
        bad = src / "deep" / "up"
        os.symlink("../..", bad)  # a folder that contains itself
    with pytest.raises(InvalidInput) as exc:
        store.save(src, "m")
    message = str(exc.value)
    assert str(bad) in message
    assert "loop" in message or "levels of symbolic links" in message
    _assert_nothing_saved(store)
