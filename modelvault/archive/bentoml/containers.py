"""The containers BentoML exports in: tar (plain, xz, gz, bz2) and zip, read one member at
a time into a model being imported (:mod:`modelvault.archive.bentoml.reader`), with the
checks untrusted input needs (header and member sizes, decompression budget, names)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from modelvault.core.objects import (
    check_entry_name,
)
from modelvault.errors import ArchiveError

if TYPE_CHECKING:
    from modelvault.archive.bentoml.reader import _Model

_BLOCK = 1 << 20
MAX_EXPANSION = 1024  # bytes unpacked per byte read, at most (zeros reach ~7000 in xz)...
EXPANSION_SLACK = 256 << 20  # ...beyond this many bytes
Progress = Callable[[int], None]


class _Counting(io.RawIOBase):
    """Reads through ``f``, counting the bytes read (``count``, for the decompression
    budget) and reporting progress as the furthest position reached (a zip is read
    partly twice: its directory, then its members)."""

    def __init__(self, f: IO[bytes], progress: Progress | None) -> None:
        self._f = f
        self.count = 0
        self._progress = progress
        self._pos = self._furthest = self.tell() if self.seekable() else 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(getattr(self._f, "seekable", lambda: False)())

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == io.SEEK_SET and offset < 0:  # a zip's offsets are the archive's word
            raise ArchiveError(f"archive points before its own start ({offset})")
        self._pos = int(self._f.seek(offset, whence))
        return self._pos

    def tell(self) -> int:
        return int(self._f.tell())

    def readinto(self, b: Any) -> int:
        data = self._f.read(len(b))
        n = len(data)
        b[:n] = data
        self.count += n
        self._pos += n
        if self._progress is not None and self._pos > self._furthest:
            self._progress(self._pos - self._furthest)
        self._furthest = max(self._furthest, self._pos)
        return n


class _Budget:
    """Bounds what members may unpack to: the store's free disk for one member's claim,
    and :data:`MAX_EXPANSION` x the compressed bytes read (+ slack) for what is written."""

    def __init__(self, source: _Counting | None, where: Path) -> None:
        self._source = source
        self._where = where
        self.unpacked = 0

    def claim(self, name: str, size: int) -> None:
        free = shutil.disk_usage(self._where).free
        if size > free:
            raise ArchiveError(
                f"archive member {name!r} claims {size} bytes, more than the "
                f"{free} bytes free for the store: refusing it (a decompression bomb?)"
            )

    def take(self, name: str, n: int) -> None:
        self.unpacked += n
        if self._source is None:
            return
        limit = MAX_EXPANSION * self._source.count + EXPANSION_SLACK
        if self.unpacked > limit:
            raise ArchiveError(
                f"archive member {name!r} unpacks to more than {MAX_EXPANSION} times the "
                f"archive bytes read ({self.unpacked} from {self._source.count}): refusing "
                "it as a decompression bomb"
            )


def _member_path(name: str) -> tuple[str, ...]:
    """A member's name as safe path components (``./`` and empty parts dropped); the
    archive root is ``()``.

    Raises:
        ArchiveError: an absolute name, ``..``, NUL, backslash or an over-long part.
    """
    if name.startswith("/") or "\0" in name:
        raise ArchiveError(f"archive member {name!r} has an absolute or unsafe name")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    for part in parts:
        try:
            check_entry_name(part)
        except ValueError:
            raise ArchiveError(
                f"archive member {name!r} has an unsafe name (it would climb out of the model "
                "folder or is not a plain file name)"
            ) from None
    return parts


_FORMAT_ERRORS = (
    tarfile.TarError,
    EOFError,
    lzma.LZMAError,
    zlib.error,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    gzip.BadGzipFile,
    NotImplementedError,
)


def _is_bad_data(exc: OSError) -> bool:
    """bz2 and gzip report bad data as an OSError without errno (a disk error has one)."""
    return exc.errno is None


def _bad_archive(kind: str, exc: BaseException) -> ArchiveError:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ArchiveError(
        f"BentoML archive ({kind}) is truncated or corrupt: {detail}; export it again"
    )


def _tar_member(
    model: _Model, tar: tarfile.TarFile, member: tarfile.TarInfo, budget: _Budget
) -> None:
    name = member.name
    parts = _member_path(name)
    if member.issym() or member.islnk():
        raise ArchiveError(
            f"archive member {name!r} is a link (to {member.linkname!r}): links are refused"
        )
    if member.isdir():
        model.add_dir(parts, name)
        return
    if not member.isreg() or member.issparse():
        raise ArchiveError(
            f"archive member {name!r} is a device, fifo or other special file: refused"
        )
    stream = tar.extractfile(member)
    if stream is None:
        raise ArchiveError(f"archive member {name!r} cannot be read")
    with stream:
        model.add_file(parts, name, member.size, bool(member.mode & stat.S_IXUSR), stream, budget)


def _decompressed(source: io.BufferedReader, kind: str) -> Any:
    """The tar stream inside ``source``: read through the compression's own file object,
    which raises EOFError when the compressed stream is cut short."""
    if kind == "xz":
        return lzma.LZMAFile(cast(IO[bytes], source))
    if kind == "gz":
        return gzip.GzipFile(fileobj=source)
    if kind == "bz2":
        return bz2.BZ2File(source)
    return source


MAX_HEADER = 1 << 20  # bytes of one PAX or GNU long-name header (tarfile reads it whole)
_BIG_HEADERS = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


class _CheckedTarInfo(tarfile.TarInfo):
    """Refuses a PAX or GNU long-name header larger than :data:`MAX_HEADER` before
    tarfile reads it into memory (a decompression bomb could make it gigabytes)."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _BIG_HEADERS and self.size > MAX_HEADER:
            raise ArchiveError(
                f"archive has a {self.size}-byte extended tar header (at most {MAX_HEADER}): "
                "refused"
            )
        return super()._proc_member(tar)  # type: ignore[misc,no-any-return]


def _import_tar(model: _Model, f: IO[bytes], kind: str, progress: Progress | None) -> None:
    source = _Counting(f, progress)
    budget = _Budget(source, model.staging)
    try:
        with (  # 1 MiB reads below the decompressor and in tarfile (not 8 or 10 KiB)
            _decompressed(io.BufferedReader(source, _BLOCK), kind) as stream,
            tarfile.open(fileobj=stream, mode="r|", tarinfo=_CheckedTarInfo, bufsize=_BLOCK) as tar,
        ):
            for member in tar:
                _tar_member(model, tar, member, budget)
            while block := stream.read(_BLOCK):  # the padding after the tar's end: to the
                budget.take("(end of archive)", len(block))  # end, so a cut is seen
    except _FORMAT_ERRORS as exc:
        raise _bad_archive(kind, exc) from None
    except OSError as exc:
        if _is_bad_data(exc):
            raise _bad_archive(kind, exc) from None
        raise


def _import_zip(model: _Model, f: IO[bytes], progress: Progress | None) -> None:
    if not getattr(f, "seekable", lambda: False)():
        raise ArchiveError(
            "a zip archive is read from a seekable file: save it to disk and import that"
        )
    source = _Counting(f, progress)
    budget = _Budget(source, model.staging)
    try:
        with zipfile.ZipFile(source) as zf:
            for info in zf.infolist():
                name = info.filename
                parts = _member_path(name)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise ArchiveError(f"archive member {name!r} is a link: links are refused")
                if info.is_dir():
                    model.add_dir(parts, name)
                    continue
                if mode and stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                    raise ArchiveError(
                        f"archive member {name!r} is a device, fifo or other special file: refused"
                    )
                with zf.open(info) as stream:
                    model.add_file(
                        parts, name, info.file_size, bool(mode & stat.S_IXUSR), stream, budget
                    )
    except _FORMAT_ERRORS as exc:
        raise _bad_archive("zip", exc) from None
    except RuntimeError as exc:  # encrypted members
        raise _bad_archive("zip", exc) from None
