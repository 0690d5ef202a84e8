"""A hypothesis state machine: two stores and one file:// remote against a plain-Python
model of what each should hold.

Rules: save, delete (one version or a whole name), gc, export, import, push, pull,
verify, get + read (streamed, and through ``Model.path``), and a save or a gc killed
(SIGKILL) at a chosen moment in a child process (whole tag or none; nothing else lost).
After every step each store's ``list()`` and the remote's listing equal the model
(tag -> model id), and every read is byte-exact. Tags come from a small pool (2 names
x 3 versions) and contents share blocks, so steps collide: ``ModelExists`` for another
model under a taken tag, no-op for the same model, dedup between versions, gc of
objects other tags still reach.

Deterministic (``derandomize``, no example database) and bounded for CI.
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _figures import record
from _ops import ForkServer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import modelvault
from modelvault import Store

NAMES = ("alpha", "beta")
VERSIONS = ("v1", "v2", "v3")
STORES = ("s1", "s2")
TAGS = [f"{n}:{v}" for n in NAMES for v in VERSIONS]


def _contents() -> list[dict[str, bytes]]:
    """Five models' files: shared 96 KiB blocks, so versions dedup against each other."""
    rng = np.random.default_rng(2016)
    blocks = [rng.bytes(96 * 1024) for _ in range(6)]
    return [
        {"weights.bin": blocks[0] + blocks[1] + blocks[2], "config.json": b'{"n": 1}'},
        {"weights.bin": blocks[0] + blocks[1] + blocks[3], "config.json": b'{"n": 2}'},
        {"weights.bin": blocks[4], "sub/extra.bin": blocks[5], "empty": b""},
        {"weights.bin": blocks[2] + blocks[0], "sub/extra.bin": blocks[1][:5000]},
        {"one.txt": b"a small model\n"},
    ]


CONTENTS = _contents()
STATS: dict[str, int] = {"runs": 0, "steps": 0, "kills": 0}
_SERVER: list[ForkServer] = []  # one fork server for the whole test (started lazily)


def _server() -> ForkServer:
    if not _SERVER:
        log = Path(tempfile.mkdtemp(prefix="mv-state-server-")) / "children.log"
        _SERVER.append(ForkServer(log))
    return _SERVER[0]


RULES: Counter[str] = Counter()


class TwoStores(RuleBasedStateMachine):
    """Model: ``stores[s][tag] = (content index, model id)``, ``remote[tag]`` likewise."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="mv-state-"))
        self.sources = []
        for i, files in enumerate(CONTENTS):
            src = self.root / f"src{i}"
            for rel, data in files.items():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_bytes(data)
            self.sources.append(src)
        self.stores = {s: Store(self.root / s) for s in STORES}
        self.remote = f"file://{self.root / 'remote'}"
        self.model: dict[str, dict[str, tuple[int, str]]] = {s: {} for s in STORES}
        self.on_remote: dict[str, tuple[int, str]] = {}
        self.archives: list[tuple[str, str, int, str]] = []  # path, tag, content, id
        STATS["runs"] += 1

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _step(self) -> None:
        STATS["steps"] += 1
        RULES[sys._getframe(1).f_code.co_name] += 1

    def _read(self, s: str, tag: str, through_path: bool = False) -> None:
        content, oid = self.model[s][tag]
        model = self.stores[s].get(tag)
        assert model.id == oid
        for rel, data in CONTENTS[content].items():
            if through_path:
                assert (Path(model.path) / rel).read_bytes() == data, (s, tag, rel)
            else:
                with model.open(rel) as f:
                    assert f.read() == data, (s, tag, rel)

    # -- rules -----------------------------------------------------------------------
    @initialize()
    def two_models(self) -> None:
        """Each run starts with a model in each store and one on the remote."""
        self.save("s1", "alpha:v1", 0)
        self.save("s2", "beta:v1", 1)
        self.stores["s1"].push("alpha:v1", self.remote)
        self.on_remote["alpha:v1"] = self.model["s1"]["alpha:v1"]

    @rule(s=st.sampled_from(STORES), tag=st.sampled_from(TAGS), content=st.integers(0, 4))
    def save(self, s: str, tag: str, content: int) -> None:
        self._step()
        if tag in self.model[s]:
            with pytest.raises(modelvault.ModelExists):
                self.stores[s].save(self.sources[content], tag)
            return
        model = self.stores[s].save(self.sources[content], tag)
        self.model[s][tag] = (content, model.id)

    @rule(
        s=st.sampled_from(STORES),
        what=st.sampled_from(["save", "gc"]),
        tag=st.sampled_from(TAGS),
        content=st.integers(0, 4),
        moment=st.integers(0, 9),
    )
    def killed(self, s: str, what: str, tag: str, content: int, moment: int) -> None:
        """A save (of ``content`` as ``tag``) or a gc in a child, killed ``moment`` x 3 ms
        after it starts: the tag is whole or absent, nothing else changes."""
        self._step()
        if what == "save" and tag in self.model[s]:
            return
        args = {"src": str(self.sources[content]), "tag": tag} if what == "save" else {}
        code, sig, _ = _server().run(what, self.root / s, args, kill_after=moment * 0.003)
        assert sig == signal.SIGKILL or code == 0, (code, sig, _server().errors()[-2000:])
        STATS["kills"] += sig == signal.SIGKILL
        listed = {str(m.tag): m.id for m in self.stores[s].list()}
        if what == "save" and tag in listed:  # whole: check it, then drop it again, so
            self.model[s][tag] = (content, listed[tag])  # that what the model holds (and
            self._read(s, tag)  # so what hypothesis draws next) does not hang on timing
            self.stores[s].delete(tag)
            del self.model[s][tag]
        for t in sorted(self.model[s]):
            self._read(s, t)

    @rule(s=st.sampled_from(STORES), tag=st.sampled_from(TAGS), whole_name=st.booleans())
    def delete(self, s: str, tag: str, whole_name: bool) -> None:
        self._step()
        name = tag.split(":")[0]
        target = name if whole_name else tag
        gone = [t for t in self.model[s] if t.split(":")[0] == name] if whole_name else [tag]
        if not any(t in self.model[s] for t in gone):
            with pytest.raises(modelvault.NotFound):
                self.stores[s].delete(target)
            return
        self.stores[s].delete(target)
        for t in gone:
            self.model[s].pop(t, None)

    @rule(s=st.sampled_from(STORES), what=st.sampled_from(["gc", "verify"]))
    def maintain(self, s: str, what: str) -> None:
        """gc (then every tag still reads) or verify (ok)."""
        self._step()
        RULES[what] += 1
        if what == "gc":
            self.stores[s].gc()
            for tag in sorted(self.model[s]):
                self._read(s, tag)
        else:
            report = self.stores[s].verify()
            assert report.ok, report

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data(), through_path=st.booleans())
    def read(self, data: st.DataObject, through_path: bool) -> None:
        self._step()
        s = data.draw(st.sampled_from([s for s in STORES if self.model[s]]))
        tag = data.draw(st.sampled_from(sorted(self.model[s])))
        self._read(s, tag, through_path)

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data())
    def export(self, data: st.DataObject) -> None:
        self._step()
        s = data.draw(st.sampled_from([s for s in STORES if self.model[s]]))
        tag = data.draw(st.sampled_from(sorted(self.model[s])))
        dest = self.root / "archives" / f"{len(self.archives)}.bentomodel"
        dest.parent.mkdir(exist_ok=True)
        path = self.stores[s].export_model(tag, str(dest))
        self.archives.append((path, tag, *self.model[s][tag]))

    @precondition(lambda self: bool(self.archives))
    @rule(s=st.sampled_from(STORES), data=st.data())
    def import_(self, s: str, data: st.DataObject) -> None:
        self._step()
        path, tag, content, oid = data.draw(st.sampled_from(self.archives))
        self._arrive(s, tag, content, oid, lambda: self.stores[s].import_model(path))

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data())
    def push(self, data: st.DataObject) -> None:
        self._step()
        s = data.draw(st.sampled_from([s for s in STORES if self.model[s]]))
        tag = data.draw(st.sampled_from(sorted(self.model[s])))
        content, oid = self.model[s][tag]
        there = self.on_remote.get(tag)
        if there is not None and there[1] != oid:
            with pytest.raises(modelvault.ModelExists):
                self.stores[s].push(tag, self.remote)
            return
        self.stores[s].push(tag, self.remote)
        self.on_remote[tag] = (content, oid)

    @precondition(lambda self: bool(self.on_remote))
    @rule(s=st.sampled_from(STORES), data=st.data())
    def pull(self, s: str, data: st.DataObject) -> None:
        self._step()
        tag = data.draw(st.sampled_from(sorted(self.on_remote)))
        content, oid = self.on_remote[tag]
        self._arrive(s, tag, content, oid, lambda: self.stores[s].pull(tag, self.remote))

    def _arrive(self, s: str, tag: str, content: int, oid: str, fetch: object) -> None:
        """Import or pull: a no-op for the same model, ModelExists for another one."""
        assert callable(fetch)
        here = self.model[s].get(tag)
        if here is not None and here[1] != oid:
            with pytest.raises(modelvault.ModelExists):
                fetch()
            return
        fetch()
        self.model[s][tag] = (content, oid)

    # -- invariants ------------------------------------------------------------------
    @invariant()
    def listings_match_the_model(self) -> None:
        for s in STORES:
            listed = {str(m.tag): m.id for m in self.stores[s].list()}
            assert listed == {t: oid for t, (_, oid) in self.model[s].items()}, s
        remote = {str(t) for t in self.stores["s1"].list_remote(self.remote)}
        assert remote == set(self.on_remote)


TwoStores.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=50,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.slow
def test_two_stores_and_a_remote_match_the_model() -> None:
    STATS.update(runs=0, steps=0, kills=0)
    RULES.clear()
    try:
        TwoStores.TestCase("runTest").runTest()
    finally:
        while _SERVER:
            _SERVER.pop().close()
    record(
        f"state machine: {STATS['runs']} runs, {STATS['steps']} steps ({STATS['kills']} "
        "kill -9 landing mid-save or mid-gc) over two stores and "
        f"a file:// remote ({dict(sorted(RULES.items() - {('maintain', RULES['maintain'])}))}); "
        "every listing equal to the "
        "model, every read byte-exact"
    )
