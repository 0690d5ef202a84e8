"""Every local command of the installed ``mv`` script, run in a subprocess."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from _cli import Run, console_script, no_traceback

import modelvault

TAG = re.compile(r'Model\(tag="([a-z0-9_.\-]+:[a-z0-9_.\-]+)"\)')


def saved_tag(stdout: str) -> str:
    match = TAG.search(stdout)
    assert match, stdout
    return match.group(1)


def test_version_and_help(mv: Run) -> None:
    version = mv("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"modelvault {modelvault.__version__}"
    for args in (("--help",), ("-h",), ()):
        shown = mv(*args)
        assert "Usage: mv" in shown.stdout + shown.stderr
        for command in ("list", "get", "delete", "save", "checkout", "export", "import"):
            assert command in shown.stdout + shown.stderr
    assert mv("--help").returncode == 0


def test_modelvault_script_is_the_same_cli(cli_env: dict[str, str], tmp_path: Path) -> None:
    import subprocess

    out = subprocess.run(
        [console_script("modelvault"), "--version"], env=cli_env, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("modelvault ")
    # `modelvault` never passes through: an unknown command is a usage error
    bad = subprocess.run(
        [console_script("modelvault"), "a", "b"], env=cli_env, capture_output=True, text=True
    )
    assert bad.returncode == 2


def test_save_list_get(mv: Run, model_dir: Path) -> None:
    saved = mv(
        "save",
        str(model_dir),
        "iris_clf",
        "--label",
        "owner=nlp_team",
        "-l",
        "stage=dev",
        "--metadata",
        "acc=0.93",
        "-m",
        "dataset=20210820",
        "-m",
        'note="1.10"',
        "--module",
        "modelvault.sklearn",
    )
    assert saved.returncode == 0, saved.stderr
    tag = saved_tag(saved.stdout)
    assert saved.stderr == ""  # no progress bar when stderr is not a terminal

    listed = mv("list")
    lines = listed.stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["Tag", "Module", "Size", "Creation Time"]
    assert lines[1].startswith(tag)
    assert "modelvault.sklearn" in lines[1] and "KiB" in lines[1]

    info = mv("get", tag)
    assert info.returncode == 0
    text = info.stdout
    for key in (
        "name: iris_clf",
        "module: modelvault.sklearn",
        "labels:",
        "owner: nlp_team",
        "metadata:",
        "acc: 0.93",
        "context:",
        "signatures:",
        "api_version:",
        "creation_time: '",
    ):
        assert key in text, text
    assert text.index("name:") < text.index("version:") < text.index("module:")

    model = modelvault.models.get(tag)
    assert model.info.metadata == {"acc": 0.93, "dataset": 20210820, "note": "1.10"}
    assert model.info.labels == {"owner": "nlp_team", "stage": "dev"}


def test_list_json_shape(mv: Run, model_dir: Path) -> None:
    first = saved_tag(mv("save", str(model_dir), "a", "-l", "k=v").stdout)
    second = saved_tag(mv("save", str(model_dir), "b:v1").stdout)
    docs = json.loads(mv("list", "-o", "json").stdout)
    assert [d["tag"] for d in docs] == [second, first]  # newest first
    for doc in docs:
        assert {"tag", "name", "version", "module", "size", "creation_time", "labels"} <= set(doc)
        assert isinstance(doc["size"], int) and doc["size"] > 200 * 1024
        when = dt.datetime.fromisoformat(doc["creation_time"])
        assert when.utcoffset() == dt.timedelta(0)
        assert doc["tag"] == f"{doc['name']}:{doc['version']}"
    assert docs[1]["labels"] == {"k": "v"}
    only_b = json.loads(mv("list", "b", "-o", "json").stdout)
    assert [d["tag"] for d in only_b] == ["b:v1"]
    assert json.loads(mv("list", "nothing-here", "-o", "json").stdout) == []


def test_get_json_has_every_info_field(mv: Run, model_dir: Path) -> None:
    tag = saved_tag(mv("save", str(model_dir), "m:v1", "-m", "acc=0.5").stdout)
    doc = json.loads(mv("get", "m", "-o", "json").stdout)
    for field in (
        "name",
        "version",
        "module",
        "labels",
        "metadata",
        "options",
        "context",
        "signatures",
        "api_version",
        "creation_time",
        "tag",
        "size",
        "id",
    ):
        assert field in doc
    model = modelvault.models.get(tag)
    assert doc["tag"] == tag and doc["id"] == model.id and doc["size"] == model.size
    assert doc["metadata"] == {"acc": 0.5}
    assert doc["context"]["python_version"] == model.info.context["python_version"]


def test_models_alias_group(mv: Run, model_dir: Path) -> None:
    tag = saved_tag(mv("models", "save", str(model_dir), "aliased").stdout)
    assert mv("models", "list").stdout == mv("list").stdout
    assert mv("models", "get", tag).stdout == mv("get", tag).stdout
    assert mv("models", "delete", tag, "-y").returncode == 0
    assert json.loads(mv("list", "-o", "json").stdout) == []


def test_delete_asks_unless_yes(mv: Run, model_dir: Path) -> None:
    v1 = saved_tag(mv("save", str(model_dir), "m").stdout)
    v2 = saved_tag(mv("save", str(model_dir), "m").stdout)
    refused = mv("delete", v1, input="n\n")
    assert refused.returncode == 1 and "Nothing deleted" in refused.stdout
    no_answer = mv("delete", v1)  # stdin at EOF: nothing deleted, clear line
    assert no_answer.returncode != 0 and "-y" in no_answer.stderr
    assert {d["tag"] for d in json.loads(mv("list", "-o", "json").stdout)} == {v1, v2}

    accepted = mv("delete", v1, input="y\n")
    assert accepted.returncode == 0 and f'Model(tag="{v1}") deleted' in accepted.stdout
    assert [d["tag"] for d in json.loads(mv("list", "-o", "json").stdout)] == [v2]


def test_delete_bare_name_removes_every_version(mv: Run, model_dir: Path) -> None:
    for _ in range(3):
        mv("save", str(model_dir), "many")
    keep = saved_tag(mv("save", str(model_dir), "other").stdout)
    gone = mv("delete", "many", "-y")
    assert gone.returncode == 0 and gone.stdout.count("deleted") == 3
    assert [d["tag"] for d in json.loads(mv("list", "-o", "json").stdout)] == [keep]


def test_checkout_writes_a_writable_copy(mv: Run, model_dir: Path, tmp_path: Path) -> None:
    tag = saved_tag(mv("save", str(model_dir), "co").stdout)
    dest = tmp_path / "out"
    done = mv("checkout", tag, str(dest))
    assert done.returncode == 0, done.stderr
    assert (dest / "weights.bin").read_bytes() == (model_dir / "weights.bin").read_bytes()
    assert (dest / "tokenizer" / "vocab.txt").read_text() == "a\nb\nc\n"
    (dest / "config.json").write_text("{}")  # writable
    again = mv("checkout", tag, str(dest))
    assert again.returncode == 1 and "exists already" in again.stderr


def test_gc_frees_deleted_models(mv: Run, model_dir: Path) -> None:
    tag = saved_tag(mv("save", str(model_dir), "tmp").stdout)
    assert mv("gc").stdout.strip() == "Freed 0 B"
    mv("delete", tag, "-y")
    freed = mv("gc")
    assert freed.returncode == 0
    number, unit = freed.stdout.split()[1:3]
    assert float(number) > 100 and unit == "KiB"


def test_verify_ok(mv: Run, model_dir: Path) -> None:
    mv("save", str(model_dir), "v")
    ok = mv("verify")
    assert ok.returncode == 0 and ok.stdout.startswith("ok:")
    doc = json.loads(mv("verify", "-o", "json").stdout)
    assert doc["ok"] is True and doc["corrupt"] == [] and doc["objects_checked"] > 0


def test_verify_exits_non_zero_on_corruption(
    mv: Run, model_dir: Path, _isolated_home: Path
) -> None:
    tag = saved_tag(mv("save", str(model_dir), "damaged").stdout)
    packs = sorted((_isolated_home / "objects").rglob("*.pack"), key=lambda p: p.stat().st_size)
    victim = packs[-1]
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))

    bad = mv("verify")
    assert bad.returncode == 1
    assert "DAMAGED" in bad.stdout and f"broken tag {tag}" in bad.stdout
    assert "Traceback" not in bad.stderr and bad.stderr.startswith("mv: error:")
    doc = json.loads(mv("verify", "-o", "json").stdout)
    assert doc["ok"] is False and doc["corrupt"] and doc["broken_tags"] == [tag]
    # the first verify set the damaged pack aside; its corrupt object is still reported
    assert doc["set_aside"] == [] and doc["rebuilt"] == [] and doc["dropped_caches"] == {}
    assert victim.stem not in str(doc["damaged_files"])
    assert (_isolated_home / "objects" / "quarantine" / victim.name).exists()


def test_du_shows_dedup(mv: Run, model_dir: Path) -> None:
    a = saved_tag(mv("save", str(model_dir), "dup").stdout)
    (model_dir / "extra.bin").write_bytes(b"x" * 1000)
    b = saved_tag(mv("save", str(model_dir), "dup").stdout)
    doc = json.loads(mv("du", "-o", "json").stdout)
    assert set(doc) == {"models", "total"}
    total = doc["total"]
    assert {"logical_bytes", "stored_bytes", "dedup_ratio"} <= set(total)
    assert total["models"] == 2
    assert total["dedup_ratio"] > 1.5  # two near-identical models stored about once
    rows = {r["tag"]: r for r in doc["models"]}
    assert set(rows) == {a, b}
    for row in rows.values():
        assert row["logical_bytes"] >= 200 * 1024
        assert 0 <= row["unique_bytes"] < row["stored_bytes"]
    assert sum(r["logical_bytes"] for r in rows.values()) == total["logical_bytes"]

    table = mv("du").stdout.splitlines()
    assert re.split(r"\s{2,}", table[0]) == ["Tag", "Size", "Stored", "Unique"]
    assert table[-1].startswith("Total: 2 models") and "dedup ratio" in table[-1]


def test_remote_add_list_remove(mv: Run, tmp_path: Path) -> None:
    url = (tmp_path / "remote").as_uri()
    added = mv("remote", "add", "origin", url, "--option", "anon=true", "-O", "max_paths=3")
    assert added.returncode == 0, added.stderr
    mv("remote", "add", "backup", "s3://bucket/prefix", "-O", "endpoint_url=http://127.0.0.1:9")
    docs = json.loads(mv("remote", "list", "-o", "json").stdout)
    assert docs == [
        {
            "name": "backup",
            "url": "s3://bucket/prefix",
            "options": {"endpoint_url": "http://127.0.0.1:9"},
        },
        {"name": "origin", "url": url, "options": {"anon": True, "max_paths": 3}},
    ]
    table = mv("remote", "list").stdout.splitlines()
    assert re.split(r"\s{2,}", table[0]) == ["Name", "URL", "Options"]
    assert table[2].split() == ["origin", url, "anon=True,", "max_paths=3"]
    assert mv("remote", "remove", "backup").returncode == 0
    assert [d["name"] for d in json.loads(mv("remote", "list", "-o", "json").stdout)] == ["origin"]
    again = mv("remote", "remove", "backup")
    assert again.returncode == 1 and "no remote named 'backup'" in again.stderr


def test_remote_add_refuses_credentials(mv: Run) -> None:
    out = mv("remote", "add", "origin", "s3://b/p", "-O", "secret_access_key=abc")
    assert out.returncode != 0
    no_traceback(out)
    assert "abc" not in out.stderr
    assert json.loads(mv("remote", "list", "-o", "json").stdout) == []


def test_store_option_and_env(mv: Run, model_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-store"
    tag = saved_tag(mv("--store", str(other), "save", str(model_dir), "elsewhere").stdout)
    assert [m.tag for m in modelvault.Store(other).list()] == [modelvault.Tag.from_str(tag)]
    assert json.loads(mv("list", "-o", "json").stdout) == []
    assert json.loads(mv(f"--store={other}", "list", "-o", "json").stdout)[0]["tag"] == tag


@pytest.mark.parametrize("args", [("list",), ("get", "x"), ("du",), ("remote", "list")])
def test_colour_only_on_a_terminal(mv: Run, args: tuple[str, ...]) -> None:
    out = mv(*args)
    assert "\x1b[" not in out.stdout + out.stderr


def _on_a_terminal(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    """Run ``mv`` with its stderr on a pseudo-terminal; its exit code and what it drew."""
    import os
    import pty
    import subprocess
    import threading

    master, slave = pty.openpty()
    drawn = bytearray()

    def drain() -> None:  # read as it is written, so a full terminal never blocks mv
        while True:
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # the last writer closed
                return
            if not data:
                return
            drawn.extend(data)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        done = subprocess.run(
            [console_script("mv"), *args],
            env={**env, "COLUMNS": "160"},
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=slave,
            timeout=120,
        )
    finally:
        os.close(slave)
        reader.join(timeout=30)
        os.close(master)
    return done.returncode, drawn.decode(errors="replace")


def test_export_and_import_draw_progress_bars_on_a_terminal(
    mv: Run, model_dir: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Long work shows a progress bar: export and import draw one (bytes, speed) on a
    terminal, and none with ``-q``."""
    assert mv("save", str(model_dir), "clf:v1").returncode == 0
    code, drawn = _on_a_terminal(cli_env, tmp_path, "export", "clf:v1", "a.bentomodel")
    assert code == 0 and "exporting clf:v1" in drawn and "KiB" in drawn, drawn
    assert mv("delete", "clf:v1", "-y").returncode == 0
    code, drawn = _on_a_terminal(cli_env, tmp_path, "import", "a.bentomodel")
    assert code == 0 and "importing a.bentomodel" in drawn and "KiB" in drawn, drawn
    assert mv("get", "clf:v1").returncode == 0
    code, drawn = _on_a_terminal(cli_env, tmp_path, "export", "clf:v1", "b.bentomodel", "-q")
    assert code == 0 and "exporting" not in drawn, drawn
