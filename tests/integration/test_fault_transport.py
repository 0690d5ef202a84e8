"""Push and pull through a fault-injecting transport (modelvault.testing.faults), against
``file://`` and the S3 server on 127.0.0.1 (issue 16, harness: "a fault-injecting
transport wrapper").

For each seed, on a fresh remote: push two versions (the second sharing most bytes with
the first), list the remote, and pull both into a fresh store, all with faults injected
(errors before and after the call, truncated and stalled reads, slow writes). Checked
after each step:

- every failure is RemoteError or IntegrityError (never a raw exception);
- the local stores verify ok, and every tag they hold has exactly the saved bytes;
- every tag the remote publishes pulls whole and verified (no tag with missing objects);
- the same push or pull run again without faults succeeds.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault import remotes
from modelvault.remote.transport import Retrying, open_transport
from modelvault.testing.faults import KINDS, FaultPlan, FaultyTransport, injected

TAGS = ("m:v1", "m:v2")
FILE_SEEDS = 24
S3_SEEDS = 8
TOTALS: Counter[str] = Counter()  # fault cases injected, by kind (printed with -s)
OUTCOMES: Counter[str] = Counter()  # faulty steps: ok, RemoteError, IntegrityError


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two model folders: v2 keeps most of v1's weights and changes a few stretches."""
    root = tmp_path_factory.mktemp("fault-sources")
    rng = random.Random(16)
    weights = bytearray(rng.randbytes(1_500_000))
    out = {}
    for tag in TAGS:
        folder = root / tag.replace(":", "-")
        (folder / "sub").mkdir(parents=True)
        (folder / "weights.bin").write_bytes(bytes(weights))
        (folder / "sub" / "config.json").write_text(f'{{"tag": "{tag}"}}')
        (folder / "small.txt").write_bytes(rng.randbytes(300))
        out[tag] = folder
        for _ in range(3):  # the next version: a few changed stretches
            at = rng.randrange(len(weights) - 5000)
            weights[at : at + 5000] = rng.randbytes(5000)
    return out


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry backoff of 5 ms instead of 200 ms: the faults, not the waiting, are tested."""
    monkeypatch.setattr(Retrying, "DELAY", 0.005)


@pytest.fixture
def source(tmp_path: Path, sources: dict[str, Path]) -> modelvault.Store:
    store = modelvault.Store(tmp_path / "src")
    for tag, folder in sources.items():
        store.save(folder, tag)
    return store


class World:
    """One remote (fresh per seed) and the checks run after each faulty step."""

    def __init__(
        self, tmp: Path, sources: dict[str, Path], url: str, options: dict[str, Any]
    ) -> None:
        self.tmp, self.sources, self.url, self.options = tmp, sources, url, options

    def store(self, name: str) -> modelvault.Store:
        store = modelvault.Store(self.tmp / name)
        remotes.add("origin", self.url, store=store, replace=True, **self.options)
        return store

    def attempt(self, plan: FaultPlan, fn: Callable[[], object]) -> BaseException | None:
        """Run ``fn`` with faults; only RemoteError or IntegrityError may come out."""
        try:
            with injected(plan):
                fn()
        except (modelvault.RemoteError, modelvault.IntegrityError) as exc:
            assert str(exc).strip() and "\n" not in str(exc)
            OUTCOMES[type(exc).__name__] += 1
            return exc
        except BaseException as exc:  # pragma: no cover - the failure this test is for
            raise AssertionError(
                f"seed {plan.seed}: raw {type(exc).__name__}: {exc}; injected {plan.injected}"
            ) from exc
        OUTCOMES["ok"] += 1
        return None

    def check_store(self, store: modelvault.Store) -> None:
        """verify ok, and every tag holds exactly the saved bytes."""
        report = store.verify()
        assert report.ok, report
        for model in store.list():
            assert _files(Path(model.path)) == _files(self.sources[str(model.tag)]), model.tag

    def check_remote(self, name: str) -> list[str]:
        """Every tag on the remote pulls whole and verified (no faults); returns them."""
        checker = self.store(name)
        tags = [str(t) for t in checker.list_remote()]
        for tag in tags:
            checker.pull(tag)
        self.check_store(checker)
        return tags


def _run_seed(world: World, source: modelvault.Store, seed: int) -> Counter[str]:
    def plan(step: int) -> FaultPlan:
        # vary how often faults come and how many of the errors no retry can fix, so
        # that failures hit every phase (early reads, uploads, publishing the tag)
        rng = random.Random(seed * 10 + step)
        rate = rng.choice([0.1, 0.3, 0.5])
        permanent = rng.choice([0.0, 0.3, 1.0])
        return FaultPlan(seed * 10 + step, rate, permanent=permanent, stall=0.02, slow=0.01)

    remotes.add("origin", world.url, store=source, replace=True, **world.options)
    plans = []
    for i, tag in enumerate(TAGS):
        p = plan(i)
        plans.append(p)
        world.attempt(p, lambda tag=tag: source.push(tag))
        world.check_store(source)
        published = world.check_remote(f"check-push-{seed}-{i}")
        assert set(published) <= set(TAGS[: i + 1])
        source.push(tag)  # again, without faults
        assert tag in [str(t) for t in source.list_remote()]

    dst = world.store(f"dst-{seed}")
    listing = plan(4)
    plans.append(listing)
    world.attempt(listing, lambda: dst.list_remote())
    for i, tag in enumerate(TAGS):
        p = plan(5 + i)
        plans.append(p)
        world.attempt(p, lambda tag=tag: dst.pull(tag))
        world.check_store(dst)
        dst.pull(tag)  # again, without faults
        world.check_store(dst)
    assert sorted(str(m.tag) for m in dst.list()) == sorted(TAGS)
    return sum((Counter(p.summary()) for p in plans), Counter())


@pytest.mark.slow
def test_file_remote_under_faults(
    tmp_path: Path, sources: dict[str, Path], source: modelvault.Store
) -> None:
    got: Counter[str] = Counter()
    for seed in range(FILE_SEEDS):
        world = World(tmp_path, sources, (tmp_path / f"remote-{seed}").as_uri(), {})
        got += _run_seed(world, source, seed)
    TOTALS.update(got)
    print(f"fault transport, file://: {FILE_SEEDS} seeds, {sum(got.values())} faults {dict(got)}")
    print(f"outcomes of the faulty steps: {dict(OUTCOMES)}")
    assert set(got) == set(KINDS)  # every kind was exercised
    assert sum(got.values()) >= 100


@pytest.mark.slow
def test_s3_remote_under_faults(
    tmp_path: Path,
    sources: dict[str, Path],
    source: modelvault.Store,
    s3_bucket: dict[str, Any],
) -> None:
    got: Counter[str] = Counter()
    for seed in range(S3_SEEDS):
        url = f"{s3_bucket['url']}/seed-{seed}-{uuid.uuid4().hex[:6]}"
        got += _run_seed(World(tmp_path, sources, url, s3_bucket["options"]), source, seed)
    TOTALS.update(got)
    print(f"fault transport, s3://: {S3_SEEDS} seeds, {sum(got.values())} faults {dict(got)}")
    assert set(got) == set(KINDS)
    assert sum(got.values()) >= 30


# -- the wrapper itself ------------------------------------------------------------------


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Any]:
    t = open_transport((tmp_path / "r").as_uri())
    t.put("k", b"0123456789")
    yield t


def test_same_seed_same_faults(bare: Any) -> None:
    def run(seed: int) -> list[tuple[str, str, str]]:
        plan = FaultPlan(seed, rate=0.5, stall=0)
        t = FaultyTransport(bare, plan)
        for i in range(40):
            with contextlib.suppress(Exception):
                t.get("k") if i % 2 else t.put(f"w{i % 5}", b"x")
        return plan.injected

    assert run(3) == run(3) and run(3) != run(4)


def test_each_kind_does_what_it_says(bare: Any) -> None:
    def only(kind: str) -> FaultyTransport:
        return FaultyTransport(bare, FaultPlan(1, rate=1.0, kinds=[kind], stall=0.05, slow=0.05))

    assert len(only("truncate").get("k")) < 10
    assert all(len(b) < 3 for b in only("truncate").get_ranges("k", [(0, 3), (5, 3)]))
    with pytest.raises(TimeoutError):
        only("stall").get("k")
    with pytest.raises(ConnectionResetError):
        only("error-after").put("after", b"landed")
    assert bare.get("after") == b"landed"  # the write happened, the client never heard
    only("slow").put("slow", b"s")
    assert bare.get("slow") == b"s"
    with pytest.raises(Exception) as info:
        only("error").get("k")
    assert getattr(info.value, "modelvault_injected", False)
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultPlan(1, kinds=["flood"])
