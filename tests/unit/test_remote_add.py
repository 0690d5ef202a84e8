"""`remotes.add` refuses to replace a remote silently and refuses unknown protocols."""

from __future__ import annotations

from pathlib import Path

import pytest

import modelvault
from modelvault import InvalidInput, remotes


def test_adding_a_name_again_with_another_url_is_refused(store: modelvault.Store) -> None:
    remotes.add("origin", "file:///srv/a", store=store)
    with pytest.raises(InvalidInput, match=r"already exists.*--replace"):
        remotes.add("origin", "file:///srv/b", store=store)
    assert [r.url for r in remotes.list(store=store)] == ["file:///srv/a"]
    with pytest.raises(InvalidInput, match="already exists"):
        remotes.add("origin", "file:///srv/a", store=store, anon=True)  # other options


def test_adding_the_same_remote_again_changes_nothing(store: modelvault.Store) -> None:
    remotes.add("origin", "file:///srv/a", store=store)
    again = remotes.add("origin", "file:///srv/a", store=store)
    assert again.url == "file:///srv/a"
    assert len(remotes.list(store=store)) == 1


def test_replace_points_an_existing_remote_elsewhere(store: modelvault.Store) -> None:
    remotes.add("origin", "file:///srv/a", store=store)
    remotes.add("origin", "file:///srv/b", store=store, replace=True)
    assert [r.url for r in remotes.list(store=store)] == ["file:///srv/b"]


@pytest.mark.parametrize(
    "url", ["nosuchproto://x", "s4://bucket/p", "simplecache::nope://x", "nope::s3://b"]
)
def test_an_unknown_protocol_is_refused(store: modelvault.Store, url: str) -> None:
    with pytest.raises(InvalidInput, match="unknown protocol"):
        remotes.add("bad", url, store=store)
    assert remotes.list(store=store) == []


@pytest.mark.parametrize(
    "url",
    [
        "s3://bucket/prefix",
        "gs://b/p",
        "memory://x",
        "file:///srv/m",
        "/srv/m",
        "rel/dir",
        "simplecache::s3://b/p",
    ],
)
def test_known_protocols_and_paths_are_accepted(store: modelvault.Store, url: str) -> None:
    assert remotes.add("ok", url, store=store).url == url


def test_cli_remote_add_twice_and_replace(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from modelvault.cli.app import app

    run = CliRunner()
    store = ["--store", str(tmp_path / "s")]
    assert run.invoke(app, [*store, "remote", "add", "origin", "file:///srv/a"]).exit_code == 0
    twice = run.invoke(app, [*store, "remote", "add", "origin", "file:///srv/b"])
    assert twice.exit_code == 1
    assert "--replace" in twice.output
    moved = run.invoke(app, [*store, "remote", "add", "origin", "file:///srv/b", "--replace"])
    assert moved.exit_code == 0, moved.output
    listed = run.invoke(app, [*store, "remote", "list", "-o", "json"])
    assert "file:///srv/b" in listed.output and "file:///srv/a" not in listed.output
