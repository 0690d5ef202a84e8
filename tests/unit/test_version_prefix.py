"""A version may be abbreviated to a unique prefix, as BentoML allows (API.md, Reading)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _helpers import save_one_file

import modelvault
from modelvault import NotFound


def test_unique_prefix_resolves_to_its_version(store: modelvault.Store, tmp_path: Path) -> None:
    a = save_one_file(store, tmp_path, "iris:2uo5fkgxj27exuqj", b"a")
    save_one_file(store, tmp_path, "iris:7abcdefghijklmno", b"b")
    got = store.get("iris:2uo5f")
    assert got.tag == a.tag
    assert got.id == a.id
    assert store.get("iris:2").tag.version == "2uo5fkgxj27exuqj"


def test_exact_version_wins_over_a_longer_one_it_prefixes(
    store: modelvault.Store, tmp_path: Path
) -> None:
    short = save_one_file(store, tmp_path, "iris:v1", b"a")
    save_one_file(store, tmp_path, "iris:v10", b"b")
    assert store.get("iris:v1").id == short.id


def test_ambiguous_prefix_names_the_candidates(store: modelvault.Store, tmp_path: Path) -> None:
    save_one_file(store, tmp_path, "iris:abc1", b"a")
    save_one_file(store, tmp_path, "iris:abc2", b"b")
    with pytest.raises(NotFound) as err:
        store.get("iris:abc")
    assert "abc1" in str(err.value) and "abc2" in str(err.value)
    assert "ambiguous" in str(err.value)


def test_no_match_is_not_found(store: modelvault.Store, tmp_path: Path) -> None:
    save_one_file(store, tmp_path, "iris:abc1", b"a")
    with pytest.raises(NotFound, match="not found"):
        store.get("iris:zz")
    with pytest.raises(NotFound):
        store.get("other:abc")


def test_models_get_and_cli_accept_a_prefix(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from modelvault.cli.app import app

    src = tmp_path / "m"
    src.mkdir()
    (src / "w.bin").write_bytes(b"x")
    m = modelvault.models.save(src, "iris:2uo5fkgxj27exuqj")
    assert modelvault.models.get("iris:2uo5").id == m.id
    out = CliRunner().invoke(app, ["get", "iris:2uo5", "-o", "json"])
    assert out.exit_code == 0, out.output
    assert "2uo5fkgxj27exuqj" in out.output
