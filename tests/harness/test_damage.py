"""Damaged files of every shape: refs, pack indexes, packs and config.json.

A store holds ``good:v1`` and ``bad:v1`` (no object in common, each in packs of its
own). One file is damaged; then:

- ``Store(path)`` opens, ``verify()`` reports the damage without raising (``ok`` False,
  ``broken_tags`` exactly the tags the damage breaks, ``damaged_files`` naming the file
  where the damage is to a whole file rather than to an object's bytes);
- ``list()`` does not raise and lists ``good:v1``;
- ``good:v1`` reads back byte-exact (streamed and through ``Model.path``);
- reading ``bad:v1`` raises a modelvault error or gives the exact bytes, never wrong
  bytes, never a raw Python exception;
- ``gc()`` either succeeds or raises a modelvault error, and ``good:v1`` still reads.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from _world import folder_matches, make_source
from test_crash import Source

import modelvault
from modelvault import Store

MIB = 1024 * 1024


@dataclass
class Damaged:
    """The template: its sources, bad:v1's model id, and which packs each tag wrote."""

    template: Path
    good: Source
    bad: Source
    bad_id: str
    bad_packs: list[str]  # pack names, largest first
    packs: str = "objects/packs"  # where packs are, relative to the template


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> Damaged:
    root = tmp_path_factory.mktemp("damage-world")
    rng = np.random.default_rng(404)
    good = make_source(root / "src-good", rng.bytes(MIB), rng, own=MIB // 2)
    bad = make_source(root / "src-bad", rng.bytes(MIB), rng, own=MIB // 2)
    store = Store(root / "template")
    store.save(good.root, "good:v1")
    packs = root / "template" / "objects" / "packs"
    before = {p.stem for p in packs.glob("*.pack")}
    model = store.save(bad.root, "bad:v1")
    new = sorted({p.stem for p in packs.glob("*.pack")} - before)
    new.sort(key=lambda name: (packs / f"{name}.pack").stat().st_size, reverse=True)
    assert new, "bad:v1 wrote no pack of its own"
    return Damaged(root / "template", good, bad, model.id, new)


Damage = Callable[[Path, Damaged], None]


def _write(rel: str, data: bytes | Callable[[bytes, Damaged], bytes]) -> Damage:
    def damage(store: Path, d: Damaged) -> None:
        path = store / rel.format(packs=d.packs, pack=d.bad_packs[0], meta=d.bad_packs[-1])
        new = data(path.read_bytes(), d) if callable(data) else data
        path.chmod(0o644)
        path.write_bytes(new)

    return damage


def _flip(at: Callable[[int], int]) -> Callable[[bytes, Damaged], bytes]:
    def flip(old: bytes, d: Damaged) -> bytes:
        i = at(len(old))
        return old[:i] + bytes([old[i] ^ 0x40]) + old[i + 1 :]

    return flip


JUNK = bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8))


def _same_size_junk(old: bytes, d: Damaged) -> bytes:
    return bytes(np.random.default_rng(2).integers(0, 256, len(old), dtype=np.uint8))


def _ref(doc: Callable[[Damaged], object]) -> Callable[[bytes, Damaged], bytes]:
    return lambda old, d: json.dumps(doc(d)).encode()


def _ref_text(text: Callable[[Damaged], str]) -> Callable[[bytes, Damaged], bytes]:
    return lambda old, d: text(d).encode()


REF = "refs/bad/v1"
REF_CASES: dict[str, Damage] = {
    "truncated": _write(REF, lambda old, d: old[: len(old) // 2]),
    "empty": _write(REF, b""),
    "binary-junk": _write(REF, JUNK),
    "list": _write(REF, _ref(lambda d: [1, 2])),
    "null": _write(REF, _ref(lambda d: None)),
    "string": _write(REF, _ref(lambda d: "model")),
    "model-is-a-number": _write(REF, _ref(lambda d: {"model": 5})),
    "created-1e400": _write(
        REF, _ref_text(lambda d: f'{{"model": "{d.bad_id}", "created": 1e400}}')
    ),
    "created-nan": _write(REF, _ref_text(lambda d: f'{{"model": "{d.bad_id}", "created": NaN}}')),
    "created-string": _write(REF, _ref(lambda d: {"model": d.bad_id, "created": "yesterday"})),
    "created-bool": _write(REF, _ref(lambda d: {"model": d.bad_id, "created": True})),
    "created-missing": _write(REF, _ref(lambda d: {"model": d.bad_id})),
    "model-not-hex": _write(REF, _ref(lambda d: {"model": "z" * 64, "created": 1})),
    "model-short": _write(REF, _ref(lambda d: {"model": d.bad_id[:10], "created": 1})),
    "size-negative": _write(REF, _ref(lambda d: {"model": d.bad_id, "created": 1, "size": -5})),
    "module-number": _write(REF, _ref(lambda d: {"model": d.bad_id, "created": 1, "module": 7})),
    "deep-nesting": _write(REF, b"[" * 100_000 + b"]" * 100_000),
    "not-utf8": _write(REF, b'{"model": "\xff\xfe", "created": 1}'),
}

IDX = "{packs}/{pack}.idx"
IDX_CASES: dict[str, Damage] = {
    "truncated": _write(IDX, lambda old, d: old[: len(old) // 2]),
    "truncated-by-one": _write(IDX, lambda old, d: old[:-1]),
    "flipped-entry-byte": _write(IDX, _flip(lambda n: n // 2)),
    "flipped-checksum-byte": _write(IDX, _flip(lambda n: n - 1)),
    "flipped-magic": _write(IDX, _flip(lambda n: 0)),
    "zero-length": _write(IDX, b""),
    "junk": _write(IDX, _same_size_junk),
    "extended": _write(IDX, lambda old, d: old + b"\0" * 52),
}

PACK = "{packs}/{pack}.pack"
META = "{packs}/{meta}.pack"
PACK_CASES: dict[str, Damage] = {
    "flipped-payload-byte": _write(PACK, _flip(lambda n: n // 2)),
    "flipped-last-byte": _write(PACK, _flip(lambda n: n - 1)),
    "flipped-record-header": _write(PACK, _flip(lambda n: 8 + 12)),  # first record's id
    "flipped-length-field": _write(PACK, _flip(lambda n: 8 + 8)),  # its stored length
    "flipped-file-header": _write(PACK, _flip(lambda n: 1)),
    "truncated": _write(PACK, lambda old, d: old[: len(old) // 2]),
    "truncated-by-one": _write(PACK, lambda old, d: old[:-1]),
    "zero-length": _write(PACK, b""),
    "extended": _write(PACK, lambda old, d: old + JUNK),
    "junk": _write(PACK, _same_size_junk),
    "metadata-pack-flipped": _write(META, _flip(lambda n: n - 1)),
    "metadata-pack-truncated": _write(META, lambda old, d: old[: len(old) // 2]),
}


def _check_reads(store: Store, d: Damaged) -> None:
    listed = [str(m.tag) for m in store.list()]
    assert "good:v1" in listed
    good = store.get("good:v1")
    assert d.good.matches(good), "an undamaged tag must read back byte-exact"
    assert folder_matches(Path(good.path), d.good)
    try:
        bad = store.get("bad:v1")
        same = d.bad.matches(bad) and folder_matches(Path(bad.path), d.bad)
    except modelvault.ModelVaultError:
        return
    assert same, "a damaged tag must raise, never read back other bytes"


def _check_gc(store: Store, d: Damaged) -> None:
    with contextlib.suppress(modelvault.ModelVaultError):
        store.gc()
    assert d.good.matches(store.get("good:v1")), "gc must keep an undamaged tag"


def _damage(tmp_path: Path, d: Damaged, damage: Damage) -> Path:
    path = tmp_path / "store"
    shutil.copytree(d.template, path)
    damage(path, d)
    return path


@pytest.mark.parametrize("case", sorted(REF_CASES))
def test_damaged_ref(case: str, damaged: Damaged, tmp_path: Path) -> None:
    path = _damage(tmp_path, damaged, REF_CASES[case])
    store = Store(path)
    report = store.verify()
    assert not report.ok
    assert [str(t) for t in report.broken_tags] == ["bad:v1"], report
    assert REF in report.damaged_files, report
    _check_reads(store, damaged)
    _check_gc(store, damaged)


def _ref_is_a_folder(store: Path, d: Damaged) -> None:
    (store / REF).unlink()
    (store / REF).mkdir()
    (store / REF / "junk").write_bytes(JUNK)


def _ref_to_a_missing_model(store: Path, d: Damaged) -> None:
    other = "ab" * 32
    (store / REF).chmod(0o644)
    (store / REF).write_text(json.dumps({"model": other, "created": 1, "size": 1}))


def test_ref_that_is_a_folder(damaged: Damaged, tmp_path: Path) -> None:
    store = Store(_damage(tmp_path, damaged, _ref_is_a_folder))
    report = store.verify()
    assert not report.ok
    assert [str(t) for t in report.broken_tags] == ["bad:v1"], report
    assert REF in report.damaged_files, report
    _check_reads(store, damaged)
    _check_gc(store, damaged)


def test_ref_to_a_missing_model(damaged: Damaged, tmp_path: Path) -> None:
    """A well-formed ref naming an object the store lacks: the tag is broken (missing
    object), the ref file itself is sound."""
    store = Store(_damage(tmp_path, damaged, _ref_to_a_missing_model))
    report = store.verify()
    assert not report.ok
    assert [str(t) for t in report.broken_tags] == ["bad:v1"], report
    assert report.missing == ["ab" * 32], report
    _check_reads(store, damaged)
    _check_gc(store, damaged)


@pytest.mark.parametrize("case", sorted(IDX_CASES))
def test_damaged_index(case: str, damaged: Damaged, tmp_path: Path) -> None:
    path = _damage(tmp_path, damaged, IDX_CASES[case])
    store = Store(path)
    report = store.verify()
    assert not report.ok
    assert [str(t) for t in report.broken_tags] == ["bad:v1"], report
    assert f"objects/packs/{damaged.bad_packs[0]}.idx" in report.damaged_files, report
    _check_reads(store, damaged)
    _check_gc(store, damaged)


# the damage leaves every object of the pack readable through its index (which gives
# each payload's offset and length): no tag is broken, the pack file is reported
HARMLESS_TO_OBJECTS = {
    "extended",
    "flipped-file-header",
    "flipped-length-field",
    "flipped-record-header",
}
# damage to a payload: the object is corrupt (verify names its id), the file is not
PAYLOAD_ONLY = {"flipped-payload-byte", "flipped-last-byte", "metadata-pack-flipped"}


@pytest.mark.parametrize("case", sorted(PACK_CASES))
def test_damaged_pack(case: str, damaged: Damaged, tmp_path: Path) -> None:
    path = _damage(tmp_path, damaged, PACK_CASES[case])
    store = Store(path)
    report = store.verify()
    assert not report.ok
    broken = [] if case in HARMLESS_TO_OBJECTS else ["bad:v1"]
    assert [str(t) for t in report.broken_tags] == broken, report
    pack = damaged.bad_packs[-1 if case.startswith("metadata") else 0]
    if case in PAYLOAD_ONLY:
        assert report.corrupt, report
    else:
        assert f"objects/packs/{pack}.pack" in report.damaged_files, report
    _check_reads(store, damaged)
    _check_gc(store, damaged)


CONFIG_CASES: dict[str, bytes] = {
    "binary-junk": JUNK,
    "empty": b"",
    "truncated": b'{"format": 1, "remo',
    "list": b"[]",
    "null": b"null",
    "no-format": b"{}",
    "remotes-list": b'{"format": 1, "remotes": [1, 2]}',
    "remotes-null": b'{"format": 1, "remotes": null}',
    "remotes-string": b'{"format": 1, "remotes": "origin"}',
    "remote-number": b'{"format": 1, "remotes": {"origin": 5}}',
    "remote-empty": b'{"format": 1, "remotes": {"origin": {}}}',
    "remote-url-number": b'{"format": 1, "remotes": {"origin": {"url": 5}}}',
    "remote-options-list": (
        b'{"format": 1, "remotes": {"origin": {"url": "file:///tmp/x", "options": [1]}}}'
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_damaged_config(case: str, damaged: Damaged, tmp_path: Path) -> None:
    """Never a raw exception: the store refuses to open with a modelvault error naming
    config.json, or it opens, reads every tag, and using the remote config fails with a
    modelvault error."""
    path = _damage(tmp_path, damaged, _write("config.json", CONFIG_CASES[case]))
    try:
        store = Store(path)
    except modelvault.ModelVaultError as exc:
        assert "config.json" in str(exc), exc
        return
    report = store.verify()
    assert report.broken_tags == [], report
    _check_reads(store, damaged)
    with contextlib.suppress(modelvault.ModelVaultError):
        modelvault.remotes.list(store=store)
    with pytest.raises(modelvault.ModelVaultError):
        store.push("good:v1", "origin")
    _check_gc(store, damaged)


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_verify_reports_a_damaged_config(case: str, damaged: Damaged, tmp_path: Path) -> None:
    """The store opens (junk, empty, truncated, [] and null made it unopenable: harness
    bug B2), verify reports config.json (remotes: null too) and every tag reads."""
    path = _damage(tmp_path, damaged, _write("config.json", CONFIG_CASES[case]))
    store = Store(path)
    report = store.verify()
    assert not report.ok, report
    assert report.broken_tags == [], report
    assert "config.json" in report.damaged_files, report
    _check_reads(store, damaged)


# the config itself is damaged (in the other cases only its remotes are)
NO_FORMAT = ["binary-junk", "empty", "list", "no-format", "null", "truncated"]


@pytest.mark.parametrize("case", NO_FORMAT)
def test_a_damaged_config_refuses_writes_saying_how_to_repair_it(
    case: str, damaged: Damaged, tmp_path: Path
) -> None:
    """Not "upgrade modelvault": the config is damaged; the error names the file and the
    repair."""
    path = _damage(tmp_path, damaged, _write("config.json", CONFIG_CASES[case]))
    with pytest.raises(modelvault.IntegrityError) as caught:
        Store(path).save(damaged.good.root, "new:v1")
    assert f"{path / 'config.json'} is damaged" in str(caught.value)
    assert '{"format": 4}' in str(caught.value)
    assert "upgrade" not in str(caught.value)


# -- the same damage on a file:// remote ----------------------------------------------


@pytest.fixture(scope="module")
def remote(damaged: Damaged, tmp_path_factory: pytest.TempPathFactory) -> Damaged:
    """A file:// remote holding good:v1 and bad:v1 (pushed in that order)."""
    root = tmp_path_factory.mktemp("damage-remote") / "remote"
    store = Store(damaged.template)
    store.push("good:v1", f"file://{root}")
    before = {p.stem for p in (root / "packs").glob("*.pack")}
    store.push("bad:v1", f"file://{root}")
    new = sorted({p.stem for p in (root / "packs").glob("*.pack")} - before)
    new.sort(key=lambda name: (root / "packs" / f"{name}.pack").stat().st_size, reverse=True)
    assert new, "bad:v1 sent no pack of its own"
    shutil.rmtree(damaged.template / "remotes")  # the copies made from it start afresh
    return Damaged(root, damaged.good, damaged.bad, damaged.bad_id, new, packs="packs")


REMOTE_CASES = {
    **{f"ref-{k}": v for k, v in REF_CASES.items()},
    **{f"idx-{k}": v for k, v in IDX_CASES.items()},
    **{f"pack-{k}": v for k, v in PACK_CASES.items()},
}


@pytest.mark.parametrize("case", sorted(REMOTE_CASES))
def test_damaged_remote(case: str, remote: Damaged, tmp_path: Path) -> None:
    """list_remote does not raise and lists good:v1; good:v1 pulls byte-exact; pulling
    bad:v1 raises a modelvault error and publishes nothing (or pulls the exact bytes);
    the local store stays sound."""
    check_damaged_remote(REMOTE_CASES[case], remote, tmp_path)


def check_damaged_remote(damage: Damage, remote: Damaged, tmp_path: Path) -> None:
    path = _damage(tmp_path, remote, damage)
    url = f"file://{path}"
    local = Store(tmp_path / "local")
    assert "good:v1" in [str(t) for t in local.list_remote(url)]
    local.pull("good:v1", url)
    assert remote.good.matches(local.get("good:v1"))
    for tag in ("bad:v1", "bad"):
        try:
            local.pull(tag, url)
        except modelvault.ModelVaultError:
            continue
        assert remote.bad.matches(local.get("bad:v1")), "a pull must never publish other bytes"
    listed = {str(m.tag) for m in local.list()}
    assert listed <= {"good:v1", "bad:v1"}
    report = local.verify()
    assert report.ok, report


# -- repair: a healthy copy heals what verify reported ----------------------------------


@pytest.fixture(scope="module")
def healthy_archive(damaged: Damaged, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("damage-archive") / "bad-v1.bentomodel"
    archive = Store(damaged.template).export_model("bad:v1", str(out))
    shutil.rmtree(damaged.template / "remotes", ignore_errors=True)
    return archive


OBJECT_CASES = {
    **{f"idx-{k}": v for k, v in IDX_CASES.items()},
    **{f"pack-{k}": v for k, v in PACK_CASES.items() if k not in HARMLESS_TO_OBJECTS},
}


def _check_repaired(store: Store, d: Damaged) -> None:
    report = store.verify()
    assert report.ok, report
    assert d.bad.matches(store.get("bad:v1"))
    assert folder_matches(Path(store.get("bad:v1").path), d.bad)
    assert d.good.matches(store.get("good:v1"))


@pytest.mark.parametrize("case", sorted(OBJECT_CASES))
@pytest.mark.parametrize("how", ["import", "pull"])
def test_repair_from_a_healthy_copy(
    case: str,
    how: str,
    damaged: Damaged,
    remote: Damaged,
    healthy_archive: str,
    tmp_path: Path,
) -> None:
    """API.md, Reading: once verify has reported damaged objects, importing or pulling a
    healthy copy of each broken tag repairs the store."""
    store = Store(_damage(tmp_path, damaged, OBJECT_CASES[case]))
    assert not store.verify().ok
    if how == "import":
        store.import_model(healthy_archive)
    else:
        store.pull("bad:v1", f"file://{remote.template}")
    _check_repaired(store, damaged)


@pytest.mark.parametrize("case", sorted(REF_CASES))
def test_repair_of_a_damaged_ref(
    case: str, damaged: Damaged, healthy_archive: str, tmp_path: Path
) -> None:
    """The advised repair of a damaged ref: delete the tag, import it again."""
    store = Store(_damage(tmp_path, damaged, REF_CASES[case]))
    assert not store.verify().ok
    store.delete("bad:v1")
    store.import_model(healthy_archive)
    _check_repaired(store, damaged)


# -- the CLI on a damaged store ---------------------------------------------------------

LOCAL_CASES = {
    **{f"ref-{k}": v for k, v in REF_CASES.items()},
    **{f"idx-{k}": v for k, v in IDX_CASES.items()},
    **{f"pack-{k}": v for k, v in PACK_CASES.items()},
}


def _mv(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from modelvault.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    assert "internal error" not in err and "Traceback" not in err, (args, err)
    return code, out, err


@pytest.mark.parametrize("case", sorted(LOCAL_CASES))
def test_cli_on_a_damaged_store(
    case: str,
    damaged: Damaged,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`mv list`, `mv du` and `mv get good:v1` work; `mv verify` fails naming what is
    broken; `mv get bad:v1` fails with one clear line or shows the model; never an
    internal error."""
    path = _damage(tmp_path, damaged, LOCAL_CASES[case])
    monkeypatch.setenv("MODELVAULT_HOME", str(path))
    code, out, _ = _mv(capsys, "list")
    assert code == 0 and "good" in out
    assert _mv(capsys, "du")[0] == 0
    assert _mv(capsys, "get", "good:v1")[0] == 0
    code, out, err = _mv(capsys, "verify")
    assert code != 0
    harmless = case.removeprefix("pack-") in HARMLESS_TO_OBJECTS and case.startswith("pack-")
    if not harmless:
        assert "bad:v1" in out + err, out + err
    code, _, err = _mv(capsys, "get", "bad:v1")
    if code:
        assert err.strip().startswith("mv: error: "), err
