"""A damaged index on a remote is one damaged file, as it is locally (harness bug B4).

The remote holds good:v1 and bad:v1 (pushed in that order); one or more of bad:v1's
indexes is then damaged. Its pack's objects are invisible: every pull that needs none
of them succeeds byte-exact, the index is named in one warning (logger
``modelvault.remote``) per operation, a pull that needs one of them raises
IntegrityError naming the index and publishes nothing, and a push still works (it sends
again what it cannot see). Against file:// and the S3 server on 127.0.0.1.
"""

from __future__ import annotations

import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault import remotes
from modelvault.errors import IntegrityError
from modelvault.testing.faults import Fault, FaultPlan, injected

LOGGER = "modelvault.remote"


def _write_model(folder: Path, seed: int) -> Path:
    rng = random.Random(seed)
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(rng.randbytes(1 << 20))
    (folder / "sub" / "config.json").write_text(f'{{"seed": {seed}}}')
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@dataclass
class Remote:
    """A remote holding good:v1 and bad:v1, with raw access to its files."""

    url: str
    options: dict[str, Any]
    root: Path | None  # file://
    fs: Any  # s3fs, for S3
    prefix: str
    good: Path  # the folders saved
    bad: Path
    good_packs: list[str]  # the packs good:v1's push sent
    bad_packs: list[str]  # the packs bad:v1's push sent, largest first

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}"

    def read(self, key: str) -> bytes:
        if self.root is not None:
            return (self.root / key).read_bytes()
        data: bytes = self.fs.cat(self._key(key))
        return data

    def write(self, key: str, data: bytes) -> None:
        if self.root is not None:
            path = self.root / key
            path.unlink()
            path.write_bytes(data)
        else:
            self.fs.pipe(self._key(key), data)

    def pack_sizes(self) -> dict[str, int]:
        if self.root is not None:
            return {p.stem: p.stat().st_size for p in (self.root / "packs").glob("*.pack")}
        self.fs.invalidate_cache()  # its listings are stale: modelvault pushed since
        found = self.fs.find(self._key("packs"), detail=True)
        return {Path(k).stem: int(v["size"]) for k, v in found.items() if k.endswith(".pack")}

    def damage(self, name: str) -> str:
        """Truncate ``packs/<name>.idx`` by one byte; returns its URL."""
        key = f"packs/{name}.idx"
        self.write(key, self.read(key)[:-1])
        return f"{self.url}/{key}"

    def store(self, path: Path) -> modelvault.Store:
        store = modelvault.Store(path)
        remotes.add("origin", self.url, store=store, **self.options)
        return store


@pytest.fixture(params=["file", "s3"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        url, options = bucket["url"] + "/models", bucket["options"]
        root, fs, prefix = None, bucket["fs"], url.removeprefix("s3://")
    else:
        root = tmp_path / "remote"
        url, options, fs, prefix = root.as_uri(), {}, None, ""
    r = Remote(url, options, root, fs, prefix, Path(), Path(), [], [])
    a = r.store(tmp_path / "a")
    r.good = _write_model(tmp_path / "good", seed=1)
    r.bad = _write_model(tmp_path / "bad", seed=2)
    a.save(r.good, "good:v1")
    a.push("good:v1")
    before = r.pack_sizes()
    r.good_packs = list(before)
    a.save(r.bad, "bad:v1")
    a.push("bad:v1")
    after = r.pack_sizes()
    r.bad_packs = sorted(set(after) - set(before), key=lambda n: after[n], reverse=True)
    assert r.bad_packs, "bad:v1 sent no pack of its own"
    return r


def _warnings(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    warned = [r for r in caplog.records if (r.name, r.levelno) == (LOGGER, logging.WARNING)]
    said = [r.getMessage() for r in warned]
    return [m for m in said if f"packs/{name}.idx" in m]


def test_sound_tags_pull_past_a_damaged_index(
    remote: Remote, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    chunks = remote.bad_packs[0]
    where = remote.damage(chunks)
    b = remote.store(tmp_path / "b")
    assert {str(t) for t in b.list_remote()} == {"good:v1", "bad:v1"}

    b.pull("good:v1")
    assert _files(Path(b.get("good:v1").path)) == _files(remote.good)
    assert len(_warnings(caplog, chunks)) == 1, caplog.text
    assert where in _warnings(caplog, chunks)[0]

    for tag in ("bad:v1", "bad"):
        caplog.clear()
        with pytest.raises(IntegrityError) as caught:
            b.pull(tag)
        assert where in str(caught.value), caught.value
        assert "bad:v1" in str(caught.value), caught.value
        assert len(_warnings(caplog, chunks)) == 1, caplog.text
    assert [str(m.tag) for m in b.list()] == ["good:v1"]  # nothing published
    assert b.verify().ok

    # the advice works: the pushing store's copy of the index, put back, repairs it
    (copy,) = (tmp_path / "a").glob(f"remotes/*/packs/{chunks}.idx")
    remote.write(f"packs/{chunks}.idx", copy.read_bytes())
    b.pull("bad:v1")
    assert _files(Path(b.get("bad:v1").path)) == _files(remote.bad)
    assert b.verify().ok


def test_an_unreadable_model_object_names_the_damaged_index(
    remote: Remote, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every index bad:v1's push sent is damaged, its model object's too."""
    caplog.set_level(logging.WARNING, LOGGER)
    where = [remote.damage(name) for name in remote.bad_packs]
    b = remote.store(tmp_path / "b")
    for tag in ("bad:v1", "bad"):
        with pytest.raises(IntegrityError) as caught:
            b.pull(tag)
        assert "bad" in str(caught.value)
        assert any(w in str(caught.value) for w in where), caught.value
    b.pull("good:v1")
    assert _files(Path(b.get("good:v1").path)) == _files(remote.good)
    assert [str(m.tag) for m in b.list()] == ["good:v1"]
    assert b.verify().ok
    for name in remote.bad_packs:
        assert _warnings(caplog, name), caplog.text


def test_unreadable_chunks_name_the_damaged_index(
    remote: Remote, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The model object is in a sound pack, its chunks only in the damaged one."""
    caplog.set_level(logging.WARNING, LOGGER)
    a = remote.store(tmp_path / "a2")
    weights = _write_model(tmp_path / "w", seed=3)
    a.save(weights, "w:v1")
    a.push("w:v1")
    before = remote.pack_sizes()
    more = tmp_path / "w2"
    shutil.copytree(weights, more)
    (more / "extra.txt").write_text("more")
    a.save(more, "w2:v1")  # its chunks are w:v1's, stored (and pushed) already
    a.push("w2:v1")
    (meta,) = set(remote.pack_sizes()) - set(before)
    (chunks,) = set(before) - {*remote.good_packs, *remote.bad_packs}
    where = remote.damage(chunks)

    b = remote.store(tmp_path / "b")
    for tag in ("w2:v1", "w2"):
        caplog.clear()
        with pytest.raises(IntegrityError) as caught:
            b.pull(tag)
        assert where in str(caught.value), caught.value
        assert "cannot pull w2:v1: object" in str(caught.value), caught.value
        assert len(_warnings(caplog, chunks)) == 1, caplog.text
        assert not _warnings(caplog, meta), caplog.text
    b.pull("good:v1")
    assert [str(m.tag) for m in b.list()] == ["good:v1"]
    assert b.verify().ok


def test_a_push_sends_again_what_a_damaged_index_hides(
    remote: Remote, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    chunks = remote.bad_packs[0]
    remote.damage(chunks)
    c = remote.store(tmp_path / "c")  # another machine: no cached copy of that index
    c.save(remote.bad, "copy:v1")  # the very chunks the damaged index lists
    sent = c.push("copy:v1")
    assert sent.objects > 0 and sent.sent >= 1 << 20  # the weights went again
    assert len(_warnings(caplog, chunks)) == 1, caplog.text

    d = remote.store(tmp_path / "d")
    d.pull("copy:v1")
    assert _files(Path(d.get("copy:v1").path)) == _files(remote.bad)
    d.pull("good:v1")
    assert d.verify().ok


def test_a_damaged_cached_index_is_read_from_the_remote_again(
    remote: Remote, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    chunks = remote.bad_packs[0]
    stores = {k: remote.store(tmp_path / k) for k in "bce"}
    for s in stores.values():
        s.pull("good:v1")  # caches every index, sound
    sound = remote.read(f"packs/{chunks}.idx")

    def cached(s: modelvault.Store) -> Path:
        (path,) = s.path.glob(f"remotes/*/packs/{chunks}.idx")
        return path

    # a damaged cached copy, the remote's sound: read from the remote once, and kept
    b, c, e = stores["b"], stores["c"], stores["e"]
    cached(b).write_bytes(sound[:-1])
    got_b = b.pull("bad:v1")
    got_c = c.pull("bad:v1")
    assert got_b.requests == got_c.requests + 1
    assert got_b.received == got_c.received + len(sound)
    assert cached(b).read_bytes() == sound
    for s in (b, c):
        assert _files(Path(s.get("bad:v1").path)) == _files(remote.bad)
    assert not _warnings(caplog, chunks), caplog.text

    # the remote's copy damaged too: the store's sound copy serves; a damaged one cannot
    where = remote.damage(chunks)
    f = remote.store(tmp_path / "f")  # a store with c's cache, without bad:v1's objects
    shutil.copytree(c.path / "remotes", f.path / "remotes", dirs_exist_ok=True)
    f.pull("bad:v1")
    assert _files(Path(f.get("bad:v1").path)) == _files(remote.bad)
    assert not _warnings(caplog, chunks), caplog.text
    cached(e).write_bytes(sound[:-1])
    with pytest.raises(IntegrityError, match="bad:v1") as caught:
        e.pull("bad:v1")
    assert where in str(caught.value)
    assert len(_warnings(caplog, chunks)) == 1, caplog.text
    assert [str(m.tag) for m in e.list()] == ["good:v1"]


class _CutFirstIndexReads(FaultPlan):
    """Cuts short the first read of every index (as a connection dropped mid-body)."""

    def decide(self, verb: str, key: str) -> Fault | None:
        with self._lock:
            n = self.calls[(verb, key)]
            self.calls[(verb, key)] += 1
        if verb == "get" and key.endswith(".idx") and n == 0:
            self.injected.append((verb, key, "truncate"))
            return Fault("truncate", cut=0.5)
        return None


def test_an_index_cut_short_in_flight_is_not_damage(
    remote: Remote, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sound index whose body arrives short is read again, not skipped as damaged."""
    caplog.set_level(logging.WARNING, LOGGER)
    b = remote.store(tmp_path / "b")
    with injected(_CutFirstIndexReads(seed=0)) as plan:
        b.pull("bad:v1")
    assert plan.summary() == {"truncate": len(remote.good_packs) + len(remote.bad_packs)}
    assert _files(Path(b.get("bad:v1").path)) == _files(remote.bad)
    assert not [r for r in caplog.records if r.name == LOGGER], caplog.text
