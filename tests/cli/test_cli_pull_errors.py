"""`mv pull` failures: a tag the remote does not hold, a damaged index on the remote.

A miss says the tag is not on that remote and names `mv list --remote REMOTE`, not the
local store's hint ("`mv list` shows the models in the store"). A damaged remote index
is a warning for pulls that do not need its pack, and the error of one that does.
"""

from __future__ import annotations

from pathlib import Path

from _cli import Run, no_traceback


def _miss(mv: Run, *args: str) -> str:
    out = mv(*args)
    assert out.returncode == 1, (out.stdout, out.stderr)
    no_traceback(out)
    assert "in the store" not in out.stderr, out.stderr
    return out.stderr


def test_a_pull_miss_names_the_remote_listing(mv: Run, model_dir: Path, tmp_path: Path) -> None:
    url = (tmp_path / "remote").as_uri()
    assert mv("remote", "add", "origin", url).returncode == 0
    assert mv("save", str(model_dir), "clf:v1").returncode == 0
    assert mv("push", "clf:v1").returncode == 0
    other = ("--store", str(tmp_path / "other"))

    for tag in ("clf:v9", "nope:v1"):  # a version, a name the remote lacks
        err = _miss(mv, *other, "pull", tag, url)
        assert f"model {tag} is not on the remote {url}" in err, err
        assert f"`mv list --remote {url}`" in err, err
    err = _miss(mv, *other, "pull", "nope", url)  # the newest version of a name
    assert f"no model named 'nope' is on the remote {url}" in err, err
    assert f"`mv list --remote {url}`" in err, err

    # through the default remote: the advice names it as the user knows it
    err = _miss(mv, "pull", "clf:v9")
    assert "`mv list --remote origin`" in err, err
    listed = mv("list", "--remote", "origin")  # ... and the advised command works
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1:] == ["clf:v1"]

    empty = (tmp_path / "empty").as_uri()  # no modelvault remote there at all
    err = _miss(mv, "pull", "clf:v1", empty)
    assert f"model clf:v1 is not on the remote {empty} (no modelvault remote there)" in err
    assert f"`mv list --remote {empty}`" in err, err


def test_a_damaged_remote_index_warns_and_fails_only_the_pull_needing_it(
    mv: Run, model_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "remote"
    assert mv("remote", "add", "origin", root.as_uri()).returncode == 0
    assert mv("save", str(model_dir), "good:v1").returncode == 0
    assert mv("push", "good:v1").returncode == 0
    before = set((root / "packs").glob("*.idx"))
    (model_dir / "weights.bin").write_bytes(b"other weights" * 20000)
    assert mv("save", str(model_dir), "bad:v1").returncode == 0
    assert mv("push", "bad:v1").returncode == 0
    (idx,) = set((root / "packs").glob("*.idx")) - before
    data = idx.read_bytes()
    idx.unlink()
    idx.write_bytes(data[:-1])
    key = f"packs/{idx.name}"

    other = ("--store", str(tmp_path / "other"))
    good = mv(*other, "pull", "good:v1", root.as_uri())
    assert good.returncode == 0, good.stderr
    (warning,) = good.stderr.splitlines()
    assert warning.startswith("mv: warning: ") and key in warning, good.stderr

    bad = mv(*other, "pull", "bad:v1", root.as_uri())
    assert bad.returncode == 1, bad.stdout
    assert "Traceback" not in bad.stderr
    warning, error = bad.stderr.splitlines()
    assert key in warning
    assert error.startswith("mv: error: cannot pull bad:v1: ") and key in error, error
