"""modelvault.remote works on a Repository and a remote's (url, options): no Store, no
remote names (the façade resolves those through modelvault.remotes.resolve)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import modelvault
from modelvault import remotes
from modelvault.remote import list_remote, pull, push
from modelvault.repo.repository import open_repository


def _model(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(random.Random(seed).randbytes(300_000))
    (folder / "config.json").write_text(f'{{"seed": {seed}}}')
    return folder


def test_push_pull_and_list_on_repositories(tmp_path: Path) -> None:
    url = (tmp_path / "remote").as_uri()
    a = modelvault.Store(tmp_path / "a")
    a.save(_model(tmp_path / "m", 1), "clf:v1")
    sent = push(a.repo, "clf", url)  # a bare name: the newest local version
    assert sent.objects > 0
    assert push(a.repo, "clf:v1", url).objects == 0
    b = open_repository(tmp_path / "b")
    assert list_remote(b, url) == [modelvault.Tag("clf", "v1")]
    assert list_remote(b, url, name="other") == []
    got = pull(b, "clf", url)
    assert got.objects == sent.objects
    ref = b.refs.read(modelvault.Tag("clf", "v1"))
    assert ref.model_id.hex() == a.get("clf:v1").id
    assert modelvault.Store(tmp_path / "b").verify().ok


def test_advice_names_the_remote_as_the_user_named_it(tmp_path: Path) -> None:
    url = (tmp_path / "remote").as_uri()
    a = modelvault.Store(tmp_path / "a")
    a.save(_model(tmp_path / "m", 2), "clf:v1")
    push(a.repo, "clf:v1", url)
    with pytest.raises(modelvault.NotFound, match="mv list --remote team"):
        pull(a.repo, "nope:v1", url, spec="team")
    with pytest.raises(modelvault.NotFound, match=f"mv list --remote {url}"):
        pull(a.repo, "nope:v1", url)  # no name given: the URL
    remotes.add("team", url, store=a)
    with pytest.raises(modelvault.NotFound, match="mv list --remote team"):
        a.pull("nope:v1", "team")


def test_the_facade_takes_a_model_and_resolves_the_remote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = (tmp_path / "remote").as_uri()
    a = modelvault.Store(tmp_path / "a")
    model = a.save(_model(tmp_path / "m", 3), "clf:v1")
    monkeypatch.setenv("MODELVAULT_REMOTE", url)
    assert remotes.resolve(store=a) == (url, {})
    assert remotes.chosen() == url
    assert a.push(model).objects > 0  # a Model, as Store.get gives it
    assert a.list_remote() == [model.tag]
    assert a.list_remote(url, "clf") == [model.tag]
