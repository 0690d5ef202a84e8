"""Sizes, tables, YAML-like details and colour rules of the CLI output."""

from __future__ import annotations

import datetime as dt
import io

import pytest

from modelvault.cli import render


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (5949, "5.81 KiB"),
        (5 * 1024**2 + 1, "5.00 MiB"),
        (3 * 1024**3, "3.00 GiB"),
        (2 * 1024**5, "2.00 PiB"),
    ],
)
def test_human_size(n: int, text: str) -> None:
    assert render.human_size(n) == text


def test_table_aligns_columns() -> None:
    text = render.table(
        ("Tag", "Size"), [("a:1", "1 B"), ("long:name", "10.00 KiB")], io.StringIO()
    )
    assert text.splitlines() == ["Tag        Size", "a:1        1 B", "long:name  10.00 KiB"]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_terminals_and_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert render.use_colour(_Tty())
    assert not render.use_colour(io.StringIO())
    assert "\x1b[1m" in render.table(("A",), [("x",)], _Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not render.use_colour(_Tty())
    monkeypatch.setenv("NO_COLOR", "")  # empty: colour allowed (no-color.org)
    assert render.use_colour(_Tty())


def test_yaml_like_details() -> None:
    doc = {
        "name": "iris_clf",
        "version": "2uo5fkgxj27exuqj",
        "labels": {},
        "context": {"framework_versions": {"scikit-learn": "1.1.0"}, "python_version": "3.8.12"},
        "signatures": {"predict": {"batchable": False, "batch_dim": (0, 1)}},
        "api_version": "v1",
        "creation_time": "2022-05-19T08:36:52.456990+00:00",
        "odd": ["yes", "1.5", "a: b", "", "it's", "line\nbreak"],
        "num": 0.93,
        "none": None,
    }
    assert render.to_yaml(doc).splitlines() == [
        "name: iris_clf",
        "version: 2uo5fkgxj27exuqj",
        "labels: {}",
        "context:",
        "  framework_versions:",
        "    scikit-learn: 1.1.0",
        "  python_version: 3.8.12",
        "signatures:",
        "  predict:",
        "    batchable: false",
        "    batch_dim:",
        "    - 0",
        "    - 1",
        "api_version: v1",
        "creation_time: '2022-05-19T08:36:52.456990+00:00'",
        "odd:",
        "- 'yes'",
        "- '1.5'",
        "- 'a: b'",
        "- ''",
        "- 'it''s'",
        '- "line\\nbreak"',
        "num: 0.93",
        "none: null",
    ]


def test_yaml_reads_back_when_pyyaml_is_there() -> None:
    yaml = pytest.importorskip("yaml")
    doc = {"a": {"b": ["x", "2", "true", "no", "0x1f", "1e5", "2024-01-01"]}, "c": "d:e", "f": 1}
    assert yaml.safe_load(render.to_yaml(doc)) == doc


def test_jsonable() -> None:
    when = dt.datetime(2022, 5, 19, 8, 36, 52, tzinfo=dt.timezone.utc)
    assert render.jsonable({"t": when, "d": (0, 1), 1: {2}}) == {
        "t": "2022-05-19T08:36:52+00:00",
        "d": [0, 1],
        "1": [2],
    }
