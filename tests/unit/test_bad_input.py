"""Bad input gets the error API.md names, with a message that says what to do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import modelvault
from modelvault import (
    InvalidTag,
    ModelExists,
    ModelVaultError,
    NotFound,
    PathNotFound,
    Store,
)

BAD_TAGS = [
    "",
    ":v1",
    "name:",
    "has space",
    "_leading-underscore",
    "-leading-dash",
    ".dot",
    "a/b",
    "../escape",
    "name:ver:extra",
    "name:ver/sion",
    "x" * 64,
    "name:" + "v" * 64,
    "ünïcode",
    "tab\tname",
]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    (root / "model.bin").write_bytes(b"\x00weights\x01" * 100)
    return root


def _unchanged(store: Store) -> tuple[int, int, list[str]]:
    files = sorted(str(p.relative_to(store.path)) for p in store.path.rglob("*"))
    return store.stats().stored_bytes, store.stats().models, files


@pytest.mark.parametrize("tag", BAD_TAGS)
def test_invalid_tags_raise_invalid_tag_everywhere(store: Store, src: Path, tag: str) -> None:
    before = _unchanged(store)
    calls: list[Callable[[], object]] = [
        lambda: store.save(src, tag),
        lambda: store.get(tag),
        lambda: store.delete(tag),
        lambda: store.list(tag),
        lambda: modelvault.models.get(tag),
    ]
    for call in calls:
        with pytest.raises(InvalidTag) as exc:
            call()
        assert isinstance(exc.value, ValueError) and isinstance(exc.value, ModelVaultError)
        message = str(exc.value)
        assert "a-z 0-9 _ - ." in message or "'name:version'" in message or "empty" in message
    with pytest.raises(InvalidTag), store.create(tag):
        pytest.fail("create() must refuse the tag before yielding")
    assert _unchanged(store) == before  # nothing was written


def test_uppercase_is_folded_not_refused(store: Store, src: Path) -> None:
    model = store.save(src, "MyModel:V1")
    assert str(model.tag) == "mymodel:v1"
    assert store.get("MYMODEL:v1") == model


@pytest.mark.parametrize("tag", ["nosuch", "nosuch:latest", "nosuch:v1", "known:v2"])
def test_unknown_model_raises_not_found_naming_it(store: Store, src: Path, tag: str) -> None:
    store.save(src, "known:v1")
    for call in (lambda: store.get(tag), lambda: store.delete(tag)):
        with pytest.raises(NotFound) as exc:
            call()
        message = str(exc.value)
        assert tag.split(":")[0] in message
        assert "mv list" in message  # what to do: look at what the store holds
    with pytest.raises(NotFound):
        modelvault.models.get(tag)
    assert [str(m.tag) for m in store.list()] == ["known:v1"]
    assert store.list("nosuch") == []


def test_unknown_file_in_a_model_raises_not_found(store: Store, src: Path) -> None:
    model = store.save(src, "m:v1")
    for rel in ("missing.bin", "model.bin/inner", "nodir/model.bin"):
        with pytest.raises(NotFound, match=r"missing\.bin|model\.bin|nodir"):
            model.open(rel)


def test_saving_into_an_existing_version_raises_model_exists(
    store: Store, src: Path, tmp_path: Path
) -> None:
    first = store.save(src, "m:v1")
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.bin").write_bytes(b"different")
    before = _unchanged(store)
    calls: list[Callable[[], object]] = [
        lambda: store.save(other, "m:v1"),
        lambda: store.save(src, "M:V1"),
    ]
    for call in calls:
        with pytest.raises(ModelExists, match="m:v1") as exc:
            call()
        assert "without a version" in str(exc.value)  # what to do
    with pytest.raises(ModelExists), store.create("m:v1"):
        pytest.fail("create() must refuse an existing version before yielding")
    assert _unchanged(store) == before
    assert store.get("m:v1").id == first.id
    with store.get("m:v1").open("model.bin") as f:
        assert f.read() == (src / "model.bin").read_bytes()
    assert store.save(other, "m").tag.version != "v1"  # the way out the message names


def test_a_path_that_does_not_exist_raises_path_not_found(store: Store, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    before = _unchanged(store)
    with pytest.raises(PathNotFound, match=str(missing)) as exc:
        store.save(missing, "m")
    assert isinstance(exc.value, FileNotFoundError) and isinstance(exc.value, NotFound)
    assert "existing" in str(exc.value)
    with pytest.raises(PathNotFound):
        modelvault.models.save(missing, "m")
    assert _unchanged(store) == before


def test_error_inside_create_commits_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.create("m:v1") as ref:
        (Path(ref.path) / "half.bin").write_bytes(b"half")
        raise RuntimeError("training crashed")
    with pytest.raises(NotFound):
        store.get("m:v1")
    assert list((store.path / "tmp").iterdir()) == []
    with store.create("m:v1") as ref:  # the version is still free
        (Path(ref.path) / "whole.bin").write_bytes(b"whole")
    assert ref.model is not None
    with ref.model.open("whole.bin") as f:
        assert f.read() == b"whole"


# -- issue 16.8: arguments that are not what they should be --------------------------


@pytest.mark.parametrize("path", ["", 123, None, b"/tmp/x"])
def test_save_of_an_empty_or_wrong_path_raises_invalid_input(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: object
) -> None:
    """``save("", tag)`` used to store the current folder (Path("") is ".")."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not-meant.bin").write_bytes(b"x")
    with pytest.raises(modelvault.InvalidInput, match="path"):
        store.save(path, "m")  # type: ignore[arg-type]
    assert store.list() == []


@pytest.mark.parametrize("path", ["", 123, b"/tmp/x"])
def test_store_of_an_empty_or_wrong_path_raises_invalid_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: object
) -> None:
    """``Store("")`` used to turn the current folder into a store."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(modelvault.InvalidInput, match="path"):
        Store(path)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("relpath", [None, 123, ""])
def test_model_open_of_a_wrong_path_raises_invalid_input(
    store: Store, src: Path, relpath: object
) -> None:
    model = store.save(src, "m")
    with pytest.raises(modelvault.InvalidInput, match="relative path"):
        model.open(relpath)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", [None, 123, object()])
def test_runner_of_something_that_is_no_model_raises_invalid_input(model: object) -> None:
    with pytest.raises(modelvault.InvalidInput, match="tag"):
        modelvault.Runner(model)  # type: ignore[arg-type]


def _nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize("what", ["metadata", "options", "labels_ok_metadata_list"])
def test_deeply_nested_metadata_raises_invalid_input(store: Store, src: Path, what: str) -> None:
    deep: object = _nested(2000)
    if what == "labels_ok_metadata_list":
        lst: list[object] = [1]
        for _ in range(2000):
            lst = [lst]
        deep, what = {"l": lst}, "metadata"
    with pytest.raises(modelvault.InvalidInput, match="nested deeper"):
        store.save(src, "m", **{what: deep})  # type: ignore[arg-type]
    store.save(src, "m", metadata=_nested(90))  # deep, but within the limit
    assert store.get("m").info.metadata == _nested(90)


@pytest.mark.parametrize("value", [[1, 2], "text", 5])
def test_metadata_that_is_not_a_dict_raises_invalid_input(
    store: Store, src: Path, value: object
) -> None:
    with pytest.raises(modelvault.InvalidInput, match="must be a dict"):
        store.save(src, "m", metadata=value)  # type: ignore[arg-type]
