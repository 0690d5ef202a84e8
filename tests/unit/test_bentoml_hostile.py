"""Hostile BentoML archives: each raises ArchiveError, writes nothing outside the store,
leaves the store exactly as it was, and nothing is unpickled while importing.

The archives are real BentoML exports (tests/golden/bentoml) with one hostile change.
"""

from __future__ import annotations

import io
import lzma
import os
import pickle
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import modelvault
from modelvault.archive.bentoml import containers, reader
from modelvault.errors import ArchiveError

GOLDEN = Path(__file__).parent.parent / "golden" / "bentoml"
FOLDER = GOLDEN / "bento_pick.folder"
YAML = (FOLDER / "model.yaml").read_bytes()


def snapshot(path: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(path.rglob("*"))
    }


def _info(name: str, data: bytes = b"", **kw: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def tar_xz(
    extra: list[tuple[tarfile.TarInfo, bytes]] | None = None,
    *,
    yaml: bytes | None = YAML,
    keep: bool = True,
) -> bytes:
    """BentoML's export of bento_pick (its real files) as tar + xz, with ``extra`` members
    and ``yaml`` (None: no model.yaml)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|xz") as tar:
        tar.addfile(_info("./", type=tarfile.DIRTYPE, mode=0o755))
        if keep:
            for name in ["custom_objects.pkl", "saved_model.pkl"]:
                data = (FOLDER / name).read_bytes()
                tar.addfile(_info(f"./{name}", data), io.BytesIO(data))
        if yaml is not None:
            tar.addfile(_info("./model.yaml", yaml), io.BytesIO(yaml))
        for info, data in extra or []:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def _yaml(change: Callable[[str], str]) -> bytes:
    return change(YAML.decode()).encode()


class Boom:
    """Unpickling this creates the file ``path``: proof that something was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def _zip(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (0o120777) << 16
            zf.writestr(info, target)
    return out.getvalue()


def _real_zip_with(**extra: bytes) -> bytes:
    members = {p.name: p.read_bytes() for p in FOLDER.iterdir()}
    members.update(extra)
    return _zip(members)


BOMB = b"\0" * (24 << 20)

CASES: dict[str, tuple[Callable[[], bytes], str]] = {
    "climbs out": (
        lambda: tar_xz([(_info("../x", b"evil"), b"evil")]),
        "unsafe name",
    ),
    "climbs out deeper": (
        lambda: tar_xz([(_info("./sub/../../x", b"evil"), b"evil")]),
        "unsafe name",
    ),
    "absolute": (lambda: tar_xz([(_info("/tmp/x", b"evil"), b"evil")]), "absolute"),
    "symlink": (
        lambda: tar_xz([(_info("./link", type=tarfile.SYMTYPE, linkname="/etc/passwd"), b"")]),
        "is a link",
    ),
    "relative symlink": (
        lambda: tar_xz([(_info("./link", type=tarfile.SYMTYPE, linkname="saved_model.pkl"), b"")]),
        "is a link",
    ),
    "hard link": (
        lambda: tar_xz([(_info("./hard", type=tarfile.LNKTYPE, linkname="/etc/passwd"), b"")]),
        "is a link",
    ),
    "char device": (
        lambda: tar_xz([(_info("./dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3), b"")]),
        "device",
    ),
    "block device": (
        lambda: tar_xz([(_info("./blk", type=tarfile.BLKTYPE, devmajor=8, devminor=0), b"")]),
        "device",
    ),
    "fifo": (lambda: tar_xz([(_info("./fifo", type=tarfile.FIFOTYPE), b"")]), "device, fifo"),
    "absurd size": (
        lambda: _absurd_size(),
        "claims .* bytes, more than",
    ),
    "huge pax header": (
        lambda: _huge_pax_header(),
        "extended tar header",
    ),
    "decompression bomb": (
        lambda: tar_xz([(_info("./zeros.bin", BOMB), BOMB)]),
        "decompression bomb",
    ),
    "no model.yaml": (lambda: tar_xz(yaml=None), "no model.yaml"),
    "model.yaml in a subfolder only": (
        lambda: tar_xz([(_info("./sub/model.yaml", YAML), YAML)], yaml=None),
        "no model.yaml",
    ),
    "model.yaml not YAML": (lambda: tar_xz(yaml=b"name: [unclosed\n"), "not safe, valid YAML"),
    "model.yaml not UTF-8": (lambda: tar_xz(yaml=b"\xff\xfe\x00"), "not UTF-8"),
    "model.yaml a list": (lambda: tar_xz(yaml=b"- a\n- b\n"), "not a mapping"),
    "model.yaml empty": (lambda: tar_xz(yaml=b""), "empty"),
    "model.yaml without version": (
        lambda: tar_xz(yaml=_yaml(lambda t: t.replace("version:", "versionx:", 1))),
        "has no version",
    ),
    "model.yaml bad name": (
        lambda: tar_xz(yaml=_yaml(lambda t: t.replace("name: bento_pick", "name: ../evil"))),
        "model.yaml",
    ),
    "model.yaml bad labels": (
        lambda: tar_xz(yaml=_yaml(lambda t: t.replace("labels:\n", "labels: 7\nx:\n"))),
        "labels must be a mapping",
    ),
    "model.yaml bad time": (
        lambda: tar_xz(yaml=_yaml(lambda t: t.split("creation_time")[0] + "creation_time: soon\n")),
        "creation_time",
    ),
    "model.yaml bad signature": (
        lambda: tar_xz(yaml=_yaml(lambda t: t.replace("batchable: true", "batchable: 3"))),
        "batchable",
    ),
    "model.yaml python tag": (
        lambda: tar_xz(
            yaml=YAML + b"evil: !!python/object/apply:os.system ['touch /tmp/mv-pwned']\n"
        ),
        "not safe, valid YAML",
    ),
    "model.yaml python name": (
        lambda: tar_xz(yaml=YAML + b"evil: !!python/name:os.system\n"),
        "not safe, valid YAML",
    ),
    "model.yaml alias bomb": (
        lambda: tar_xz(yaml=YAML + _billion_laughs()),
        "alias bomb",
    ),
    "model.yaml too large": (
        lambda: tar_xz(yaml=YAML + b"#" * (reader.MAX_YAML_BYTES + 1)),
        "more than",
    ),
    "twice the same file": (
        lambda: tar_xz([(_info("./saved_model.pkl", b"x"), b"x")]),
        "twice",
    ),
    "file and folder": (
        lambda: tar_xz([(_info("./saved_model.pkl/inner", b"x"), b"x")]),
        "under a file",
    ),
    "truncated xz": (lambda: tar_xz()[:-40], "truncated or corrupt"),
    "corrupt xz": (lambda: _flip(tar_xz(), 200), "truncated or corrupt"),
    "truncated gz": (
        lambda: _gz(lzma.decompress(tar_xz()))[:-30],
        "truncated or corrupt",
    ),
    "zip that is not one": (lambda: b"PK\x03\x04" + b"\0" * 600, "zip.*corrupt"),
    "zip climbs out": (lambda: _real_zip_with(**{"../x": b"evil"}), "unsafe name"),
    "zip absolute": (lambda: _real_zip_with(**{"/etc/x": b"evil"}), "absolute"),
    "zip symlink": (
        lambda: _zip({p.name: p.read_bytes() for p in FOLDER.iterdir()}, {"l": "/etc/passwd"}),
        "is a link",
    ),
    "zip without model.yaml": (
        lambda: _zip({"saved_model.pkl": (FOLDER / "saved_model.pkl").read_bytes()}),
        "no model.yaml",
    ),
}


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1 :]


def _gz(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


def _absurd_size() -> bytes:
    """A member whose header claims 1 PiB (the archive holds a few bytes of it)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_info("./model.yaml", YAML), io.BytesIO(YAML))
        info = _info("./huge.bin", b"", pax_headers={"size": str(1 << 50)})
        tar.addfile(info)
    return lzma.compress(raw.getvalue())


def _huge_pax_header() -> bytes:
    """A PAX header block claiming 64 GiB of zeros (that tarfile would read into memory)."""
    header = _info("././@PaxHeader", type=tarfile.XHDTYPE)
    header.size = 64 << 30
    raw = header.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict") + b"\0" * (4 << 20)
    return lzma.compress(raw)


def _billion_laughs() -> bytes:
    lines = ["lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):
        refs = ", ".join([f"*l{i - 1}"] * 9)
        lines.append(f"lol{i}: &l{i} [{refs}]")
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("overlap", [False, True], ids=["staged", "overlapped"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_bentoml_archive(
    case: str, overlap: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each case with members staged then saved, and saved while unpacked (every member
    at least OVERLAP_MIN bytes)."""
    monkeypatch.setattr(containers, "EXPANSION_SLACK", 4 << 20)  # the 24 MiB of zeros trip it
    if overlap:
        monkeypatch.setattr(reader, "OVERLAP_MIN", 1)
    make, message = CASES[case]
    store = modelvault.Store(tmp_path / "store")
    store.import_model(str(GOLDEN / "bento_sk.bentomodel"))  # the store holds something
    path = tmp_path / "in" / "hostile.bentomodel"
    path.parent.mkdir()
    path.write_bytes(make())
    before = snapshot(tmp_path)
    with pytest.raises(ArchiveError, match=message):
        store.import_model(str(path))
    assert snapshot(tmp_path) == before  # the store, and everything beside it
    assert not Path("/tmp/mv-pwned").exists()
    assert not (tmp_path / "x").exists() and not (tmp_path / "in" / "x").exists()


def test_hostile_folder(tmp_path: Path) -> None:
    """The folder format: links inside are refused as in a tar."""
    store = modelvault.Store(tmp_path / "store")
    folder = tmp_path / "model"
    folder.mkdir()
    for p in FOLDER.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "link").symlink_to("/etc/passwd")
    before = snapshot(tmp_path / "store") if (tmp_path / "store").exists() else {}
    with pytest.raises(ArchiveError, match="symbolic link"):
        store.import_model(str(folder))
    os.mkfifo(folder / "pipe")
    (folder / "link").unlink()
    with pytest.raises(ArchiveError, match="fifo"):
        store.import_model(str(folder))
    after = snapshot(tmp_path / "store") if (tmp_path / "store").exists() else {}
    assert after == before or not store.list()


def test_too_many_members(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "MAX_MEMBERS", 10)
    store = modelvault.Store(tmp_path / "store")
    extra = [(_info(f"./f{i}", b"x"), b"x") for i in range(20)]
    path = tmp_path / "many.bentomodel"
    path.write_bytes(tar_xz(extra))
    with pytest.raises(ArchiveError, match="more than 10 members"):
        store.import_model(str(path))
    assert store.list() == []


def test_long_and_odd_member_names_import(tmp_path: Path) -> None:
    long = "x." + "y" * 250  # a 252-byte name whose suffix alone is 251 bytes
    members = [(_info(f"./{long}", b"1"), b"1"), (_info("./sub/.hidden", b"2"), b"2")]
    path = tmp_path / "names.bentomodel"
    path.write_bytes(tar_xz(members))
    model = modelvault.Store(tmp_path / "store").import_model(str(path))
    assert model.open(long).read() == b"1"
    assert model.open("sub/.hidden").read() == b"2"


def test_nothing_is_unpickled_while_importing(tmp_path: Path) -> None:
    """saved_model.pkl and custom_objects.pkl that act when unpickled are only stored."""
    marker = tmp_path / "unpickled"
    bad = pickle.dumps(Boom(str(marker)))
    members = [(_info(f"./{n}", bad), bad) for n in ["saved_model.pkl", "custom_objects.pkl"]]
    path = tmp_path / "pickles.bentomodel"
    path.write_bytes(tar_xz(members, keep=False))
    store = modelvault.Store(tmp_path / "store")
    model = store.import_model(str(path))
    assert not marker.exists()
    assert model.open("saved_model.pkl").read() == bad
    assert store.verify().ok


def test_a_folder_that_is_not_bentomls(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "w.bin").write_bytes(b"x")
    store = modelvault.Store(tmp_path / "store")
    with pytest.raises(ArchiveError, match=r"no model\.yaml.*mv save DIR NAME"):
        store.import_model(str(tmp_path / "plain"))
    assert store.list() == []
