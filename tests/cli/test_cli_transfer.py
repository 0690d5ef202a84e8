"""export / import / push / pull / list --remote through the installed ``mv``.

These drive modelvault.archive (issue 3) and modelvault.remote (issue 4): they pass once
those land, and fail (with the one-line "not implemented yet" error) until then.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from _cli import Run, no_traceback

import modelvault

TAG = re.compile(r'Model\(tag="([a-z0-9_.\-]+:[a-z0-9_.\-]+)"\)')


def _save(mv: Run, folder: Path, tag: str, store: Path | None = None) -> str:
    args = ("--store", str(store)) if store else ()
    out = mv(*args, "save", str(folder), tag)
    assert out.returncode == 0, out.stderr
    match = TAG.search(out.stdout)
    assert match
    return match.group(1)


def test_export_then_import(mv: Run, model_dir: Path, tmp_path: Path) -> None:
    tag = _save(mv, model_dir, "iris_clf")
    name, version = tag.split(":")
    out_dir = tmp_path / "archives"
    out_dir.mkdir()
    exported = mv("export", tag, str(out_dir))
    assert exported.returncode == 0, exported.stderr
    archive = out_dir / f"{name}-{version}.bentomodel"
    assert archive.is_file()
    assert f"exported to {archive}" in exported.stdout

    other = tmp_path / "other-store"
    imported = mv("--store", str(other), "import", str(archive))
    assert imported.returncode == 0, imported.stderr
    assert f'Model(tag="{tag}") imported' in imported.stdout
    assert modelvault.Store(other).get(tag).id == modelvault.models.get(tag).id
    again = mv("--store", str(other), "import", str(archive))  # identical: a no-op
    assert again.returncode == 0, again.stderr


def test_export_without_dest_writes_into_the_current_folder(
    mv: Run, model_dir: Path, tmp_path: Path
) -> None:
    tag = _save(mv, model_dir, "here")
    work = tmp_path / "cwd"
    work.mkdir()
    out = mv("export", tag, cwd=work)
    assert out.returncode == 0, out.stderr
    assert [p.name for p in work.iterdir()] == [f"{tag.replace(':', '-')}.bentomodel"]


def test_thin_export_with_base(mv: Run, model_dir: Path, tmp_path: Path) -> None:
    base = _save(mv, model_dir, "fam")
    (model_dir / "more.bin").write_bytes(b"m" * 5000)
    newer = _save(mv, model_dir, "fam")
    full = Path(mv("export", newer, str(tmp_path / "full.bentomodel")).stdout.split()[-1])
    thin = mv("export", newer, str(tmp_path / "thin.bentomodel"), "--base", base)
    assert thin.returncode == 0, thin.stderr
    thin_path = tmp_path / "thin.bentomodel"
    assert thin_path.stat().st_size < full.stat().st_size / 2

    other = tmp_path / "holder"
    mv("export", base, str(tmp_path / "base.bentomodel"))
    assert mv("--store", str(other), "import", str(tmp_path / "base.bentomodel")).returncode == 0
    assert mv("--store", str(other), "import", str(thin_path)).returncode == 0
    assert modelvault.Store(other).get(newer).id == modelvault.models.get(newer).id


def test_import_of_a_damaged_archive_is_one_line(mv: Run, model_dir: Path, tmp_path: Path) -> None:
    tag = _save(mv, model_dir, "broken")
    archive = tmp_path / "a.bentomodel"
    assert mv("export", tag, str(archive)).returncode == 0
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    other = tmp_path / "clean"
    out = mv("--store", str(other), "import", str(archive))
    assert out.returncode == 1
    no_traceback(out)
    assert json.loads(mv("--store", str(other), "list", "-o", "json").stdout) == []


def test_push_pull_through_a_configured_remote(mv: Run, model_dir: Path, tmp_path: Path) -> None:
    url = (tmp_path / "remote").as_uri()
    assert mv("remote", "add", "origin", url).returncode == 0
    tag = _save(mv, model_dir, "shared")
    pushed = mv("push", tag)
    assert pushed.returncode == 0, pushed.stderr
    assert f'Successfully pushed model "{tag}" to origin' in pushed.stdout

    remote_tags = json.loads(mv("list", "--remote", "origin", "-o", "json").stdout)
    assert [d["tag"] for d in remote_tags] == [tag]
    assert mv("list", "--remote", "origin").stdout.splitlines()[1:] == [tag]

    other = tmp_path / "laptop"
    pulled = mv("--store", str(other), "pull", "shared", url)  # REMOTE as a URL
    assert pulled.returncode == 0, pulled.stderr
    assert "Successfully pulled model" in pulled.stdout
    assert modelvault.Store(other).get(tag).id == modelvault.models.get(tag).id


def test_push_to_s3(mv: Run, model_dir: Path, s3_bucket: dict[str, Any], tmp_path: Path) -> None:
    url = f"{s3_bucket['url']}/models"
    added = mv("remote", "add", "s3", url, "-O", f"endpoint_url={s3_bucket['endpoint_url']}")
    assert added.returncode == 0, added.stderr
    tag = _save(mv, model_dir, "cloud")
    assert mv("push", tag, "s3").returncode == 0
    second = mv("push", tag, "s3")  # nothing new crosses the wire
    assert second.returncode == 0 and "(0 objects," in second.stdout

    other = tmp_path / "other"
    assert (
        mv(
            "--store",
            str(other),
            "remote",
            "add",
            "s3",
            url,
            "-O",
            f"endpoint_url={s3_bucket['endpoint_url']}",
        ).returncode
        == 0
    )
    assert mv("--store", str(other), "pull", tag, "s3").returncode == 0
    assert modelvault.Store(other).get(tag).id == modelvault.models.get(tag).id


def test_unknown_remote_is_one_line(mv: Run, model_dir: Path) -> None:
    tag = _save(mv, model_dir, "lonely")
    out = mv("push", tag, "nowhere")
    assert out.returncode != 0
    no_traceback(out)


def test_pull_of_a_name_says_which_version_it_fetched(
    mv: Run, model_dir: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    remote = (tmp_path / "named-remote").as_uri()
    assert mv("save", str(model_dir), "nm:v3", "-q").returncode == 0
    assert mv("push", "nm:v3", remote, "-q").returncode == 0
    other = {**cli_env, "MODELVAULT_HOME": str(tmp_path / "other-store")}
    out = mv("pull", "nm", remote, env=other)
    assert out.returncode == 0, out.stderr
    assert 'Successfully pulled model "nm:v3"' in out.stdout
