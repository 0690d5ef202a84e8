"""Tag parsing, validation and generated versions."""

from __future__ import annotations

import re

import pytest

from modelvault import InvalidTag, Tag
from modelvault.tags import new_version


def test_parse_and_str_round_trip() -> None:
    tag = Tag.from_str("iris_clf:2uo5fkgxj27exuqj")
    assert (tag.name, tag.version) == ("iris_clf", "2uo5fkgxj27exuqj")
    assert str(tag) == "iris_clf:2uo5fkgxj27exuqj"
    assert Tag.from_str("iris_clf").version is None
    assert Tag.from_str("iris_clf:latest").is_latest


def test_uppercase_is_folded() -> None:
    assert Tag.from_str("Iris-CLF.v2:ABC") == Tag("iris-clf.v2", "abc")


@pytest.mark.parametrize(
    "text", ["", ":v1", "a:", "-abc", "_abc", "a b", "a/b", "a:b:c", "x" * 64, "a:" + "v" * 64, "é"]
)
def test_invalid_tags_raise_invalid_tag_which_is_a_value_error(text: str) -> None:
    with pytest.raises(InvalidTag) as info:
        Tag.from_str(text)
    assert isinstance(info.value, ValueError)


def test_boundary_lengths_are_valid() -> None:
    assert Tag("a" * 63, "b" * 63).name == "a" * 63
    assert Tag("0", "9").version == "9"


def test_tag_is_frozen_and_hashable() -> None:
    tag = Tag("a", "b")
    with pytest.raises(AttributeError):
        tag.name = "c"  # type: ignore[misc]
    assert {tag: 1}[Tag.from_str("a:b")] == 1
    assert tag == "a:b"  # a tag equals its own string form


def test_generated_versions_are_base32_and_sort_in_creation_order() -> None:
    versions = [new_version() for _ in range(2000)]
    assert all(re.fullmatch(r"[a-z2-7]{16}", v) for v in versions)
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
