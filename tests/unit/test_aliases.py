"""Local aliases (API.md "Aliases"): set / list / remove, ``name@alias`` wherever a tag is
read, delete refusing aliased versions, gc keeping what an alias reaches, atomic moves,
damaged alias files, and an older modelvault refusing a store with aliases."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from pathlib import Path

import pytest
from _helpers import save_one_file

import modelvault
from modelvault import IntegrityError, InvalidInput, InvalidTag, ModelExists, NotFound, Tag
from modelvault.repo import config as config_mod


@pytest.fixture
def two(store: modelvault.Store, tmp_path: Path) -> tuple[modelvault.Model, modelvault.Model]:
    return (
        save_one_file(store, tmp_path, "iris:v1", b"one" * 1000),
        save_one_file(store, tmp_path, "iris:v2", b"two" * 1000),
    )


def test_set_get_move_list_remove(store: modelvault.Store, two: tuple) -> None:
    v1, v2 = two
    assert store.aliases() == {}
    assert store.set_alias("iris:v1", "prod") == Tag("iris", "v1")
    assert store.get("iris@prod").id == v1.id
    assert store.get("iris@prod").tag == Tag("iris", "v1")
    assert store.set_alias("iris:v2", "prod") == Tag("iris", "v2")  # a move
    assert store.get("iris@prod").id == v2.id
    assert store.set_alias("iris", "latest-good") == Tag("iris", "v2")  # pins the newest now
    assert store.set_alias("iris@prod", "staging") == Tag("iris", "v2")  # an alias as source
    assert store.aliases() == {
        "iris@latest-good": Tag("iris", "v2"),
        "iris@prod": Tag("iris", "v2"),
        "iris@staging": Tag("iris", "v2"),
    }
    assert list(store.aliases("iris")) == ["iris@latest-good", "iris@prod", "iris@staging"]
    assert store.aliases("other") == {}
    store.remove_alias("iris@staging")
    assert "iris@staging" not in store.aliases()
    with pytest.raises(NotFound, match="iris@staging"):
        store.get("iris@staging")
    with pytest.raises(NotFound, match="iris@staging"):
        store.remove_alias("iris@staging")


def test_alias_file_bytes(store: modelvault.Store, two: tuple) -> None:
    v1, _ = two
    store.set_alias("iris:v1", "Prod")  # folded to lowercase like versions
    doc = json.loads((store.path / "aliases" / "iris" / "prod").read_bytes())
    assert doc == {"version": "v1", "model": v1.id}
    assert store.get("IRIS@PROD").id == v1.id


def test_version_prefix_as_target(store: modelvault.Store, tmp_path: Path) -> None:
    m = save_one_file(store, tmp_path, "iris:2uo5fkgxj27exuqj", b"a")
    assert store.set_alias("iris:2uo5f", "prod") == m.tag


@pytest.mark.parametrize("bad", ["", "-x", "a b", "x/y", "x:y", "a" * 64, "latest", "p@q"])
def test_alias_grammar(store: modelvault.Store, two: tuple, bad: str) -> None:
    with pytest.raises(InvalidTag):
        store.set_alias("iris:v1", bad)
    assert store.aliases() == {}


@pytest.mark.parametrize("text", ["name@alias", "na@me"])
def test_a_tag_never_holds_an_alias(text: str) -> None:
    with pytest.raises(InvalidTag):
        Tag.from_str(text)
    with pytest.raises(InvalidTag):
        Tag("na@me", "v1")


def test_bad_alias_in_a_tag_is_invalid_tag(store: modelvault.Store, two: tuple) -> None:
    for text in ["iris@", "@prod", "iris@prod:v1", "iris@a@b", "iris@latest"]:
        with pytest.raises(InvalidTag):
            store.get(text)


def test_unknown_alias_and_unknown_version(store: modelvault.Store, two: tuple) -> None:
    with pytest.raises(NotFound, match="iris@nope"):
        store.get("iris@nope")
    with pytest.raises(NotFound):
        store.set_alias("iris:v9", "prod")
    with pytest.raises(NotFound):
        store.set_alias("other", "prod")
    with pytest.raises(InvalidTag):
        store.remove_alias("iris")  # not an alias
    assert store.aliases() == {}


def test_delete_refuses_aliased_versions(store: modelvault.Store, two: tuple) -> None:
    store.set_alias("iris:v1", "prod")
    with pytest.raises(ModelExists, match="iris@prod"):
        store.delete("iris:v1")
    with pytest.raises(ModelExists, match="iris@prod"):
        store.delete("iris")  # any aliased version: nothing deleted
    assert [str(m.tag) for m in store.list("iris")] == ["iris:v2", "iris:v1"]
    store.set_alias("iris:v2", "prod")
    with pytest.raises(ModelExists, match="iris@prod"):
        store.delete("iris:latest")
    store.delete("iris:v1")  # no longer aliased
    with pytest.raises(InvalidInput, match="remove_alias"):
        store.delete("iris@prod")
    store.remove_alias("iris@prod")
    store.delete("iris")
    assert store.list() == []


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[]", b'{"version": "v1"}', b'{"version": "v1", "model": "xyz"}',
     b'{"version": "../x", "model": "' + b"0" * 64 + b'"}', b"x" * 10000],
)  # fmt: skip
def test_damaged_alias_file_is_one_damaged_alias(
    store: modelvault.Store, two: tuple, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    store.set_alias("iris:v1", "prod")
    store.set_alias("iris:v2", "staging")
    (store.path / "aliases" / "iris" / "prod").write_bytes(content)
    with pytest.raises(IntegrityError, match=r"aliases/iris/prod"):
        store.get("iris@prod")
    assert store.get("iris@staging").tag == Tag("iris", "v2")
    assert store.aliases() == {"iris@staging": Tag("iris", "v2")}
    assert "iris@prod" in caplog.text
    store.gc()  # goes on
    store.set_alias("iris:v2", "prod")  # setting it again repairs it
    assert store.get("iris@prod").tag == Tag("iris", "v2")


def test_alias_pointing_at_another_model_is_integrity_error(
    store: modelvault.Store, tmp_path: Path, two: tuple
) -> None:
    store.set_alias("iris:v1", "prod")
    doc = json.loads((store.path / "aliases" / "iris" / "prod").read_bytes())
    doc["model"] = "ab" * 32
    (store.path / "aliases" / "iris" / "prod").write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="iris@prod"):
        store.get("iris@prod")


def test_every_reader_accepts_name_at_alias(store: modelvault.Store, tmp_path: Path) -> None:
    import modelvault.picklable_model as pm

    model = pm.save_model("clf", {"w": [1, 2, 3]}, store=store)
    store.set_alias(str(model.tag), "prod")
    assert pm.get("clf@prod", store=store).id == model.id
    assert pm.load_model("clf@prod", store=store) == {"w": [1, 2, 3]}
    out = store.checkout("clf@prod", tmp_path / "co")
    assert (out / "saved_model.pkl").is_file()
    where = store.export_model("clf@prod", str(tmp_path / "ex") + "/")
    assert where.endswith(f"clf-{model.tag.version}.bentomodel")
    thin = store.export_model("clf@prod", str(tmp_path / "thin.bentomodel"), base="clf@prod")
    assert Path(thin).is_file()


def test_default_store_functions_and_runner(tmp_path: Path) -> None:
    import modelvault.picklable_model as pm
    from modelvault import models

    m1 = pm.save_model("fn", _Double(), signatures={"__call__": {"batchable": False}})
    m2 = pm.save_model("fn", _Triple(), signatures={"__call__": {"batchable": False}})
    assert models.set_alias(m1.tag, "prod") == m1.tag
    assert models.aliases() == {"fn@prod": m1.tag}
    assert models.get("fn@prod").id == m1.id
    runner = models.get("fn@prod").to_runner()
    direct = modelvault.Runner("fn@prod")
    models.set_alias(m2.tag, "prod")  # moving the alias later moves no runner
    assert runner.tag == m1.tag and direct.tag == m1.tag
    runner.init_local()
    assert runner.run(2) == 4
    models.remove_alias("fn@prod")
    assert models.aliases("fn") == {}


class _Double:
    def __call__(self, x: int) -> int:
        return 2 * x


class _Triple:
    def __call__(self, x: int) -> int:
        return 3 * x


def test_a_move_is_atomic_for_readers(store: modelvault.Store, two: tuple) -> None:
    """A reader looping while another thread moves the alias always sees v1 or v2."""
    v1, v2 = two
    store.set_alias("iris:v1", "prod")
    stop = threading.Event()
    seen: set[str] = set()
    errors: list[BaseException] = []

    def read() -> None:
        reader = modelvault.Store(store.path)
        while not stop.is_set():
            try:
                seen.add(reader.get("iris@prod").id)
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(300):
        store.set_alias("iris:v2" if i % 2 == 0 else "iris:v1", "prod")
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert seen <= {v1.id, v2.id} and seen


def _mover(path: str, version: str, rounds: int) -> None:
    s = modelvault.Store(path)
    for _ in range(rounds):
        s.set_alias(f"iris:{version}", "prod")


def test_two_processes_moving_one_alias(store: modelvault.Store, two: tuple) -> None:
    v1, v2 = two
    store.set_alias("iris:v1", "prod")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_mover, args=(str(store.path), v, 50)) for v in ("v1", "v2")]
    for p in procs:
        p.start()
    seen = set()
    while any(p.is_alive() for p in procs):
        seen.add(store.get("iris@prod").id)  # never a moment without the alias
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert store.get("iris@prod").id in {v1.id, v2.id}
    assert seen <= {v1.id, v2.id}
    assert [p.name for p in (store.path / "aliases" / "iris").iterdir()] == ["prod"]


def test_an_older_modelvault_refuses_a_store_with_aliases(
    store: modelvault.Store, two: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Setting an alias marks the store with the current format, so a modelvault that
    reads only older formats (and knows no aliases) refuses it instead of deleting or
    collecting an aliased version."""
    doc = json.loads(store.repo.layout.config.read_bytes())
    doc["format"] = 1
    store.repo.layout.config.write_text(json.dumps(doc))
    fresh = modelvault.Store(store.path)
    fresh.set_alias("iris:v1", "prod")
    assert json.loads(fresh.repo.layout.config.read_bytes())["format"] == (
        config_mod.FORMAT_VERSION
    )
    older = frozenset(range(1, config_mod.FORMAT_VERSION))
    monkeypatch.setattr(config_mod, "READABLE", older)
    with pytest.raises(modelvault.errors.UnsupportedFormat):
        modelvault.Store(store.path)


def test_aliases_folder_appears_only_with_aliases(store: modelvault.Store, two: tuple) -> None:
    assert not (store.path / "aliases").exists()
    with pytest.raises(ModelExists):
        store.set_alias("iris:v1", "prod")
        store.delete("iris:v1")
    assert os.listdir(store.path / "aliases" / "iris") == ["prod"]


def test_set_alias_racing_delete_never_names_a_missing_version(
    store: modelvault.Store, tmp_path: Path
) -> None:
    """One thread moves the alias around while another deletes every version it can:
    the alias lock makes each delete see the alias, so the alias always resolves."""
    versions = [f"v{i}" for i in range(12)]
    for v in versions:
        save_one_file(store, tmp_path, f"iris:{v}", v.encode() * 100)
    store.set_alias("iris:v0", "prod")
    stop = threading.Event()
    errors: list[BaseException] = []

    def mover() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                store.set_alias(f"iris:{versions[i % len(versions)]}", "prod")
            except NotFound:  # deleted already: the alias stays where it was
                pass
            except BaseException as exc:
                errors.append(exc)
                return

    thread = threading.Thread(target=mover)
    thread.start()
    deleted = 0
    for _ in range(200):  # until one version is left (the one the alias names)
        if len(store.list("iris")) == 1:
            break
        for v in versions:
            try:
                store.delete(f"iris:{v}")
                deleted += 1
            except (ModelExists, NotFound):
                pass
    stop.set()
    thread.join()
    assert errors == []
    assert deleted == len(versions) - 1  # all but the one the alias names at the end
    remaining = store.list("iris")
    assert [m.tag for m in remaining] == [store.get("iris@prod").tag]
