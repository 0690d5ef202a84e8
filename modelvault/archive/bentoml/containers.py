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
from typing import IO, TYPE_CHECKING, Any, Protocol

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

    def read(self, size: int | None = -1) -> bytes:
        data = self._f.read(-1 if size is None else size)  # no copy, as readinto makes
        self._advance(len(data))
        return data

    def readinto(self, b: Any) -> int:
        data = self._f.read(len(b))
        n = len(data)
        b[:n] = data
        self._advance(n)
        return n

    def _advance(self, n: int) -> None:
        self.count += n
        self._pos += n
        if self._progress is not None and self._pos > self._furthest:
            self._progress(self._pos - self._furthest)
        self._furthest = max(self._furthest, self._pos)


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


class Readable(Protocol):
    """What a member's bytes are read from: ``read(n)`` returns at most ``n`` bytes, fewer
    when that is what the source has at hand, and ``b""`` at the member's end."""

    def read(self, size: int = -1, /) -> bytes: ...


class _TarStream:
    """The tar stream (decompressed) as the file :class:`tarfile.TarFile` reads its
    headers from: ``read``, ``tell`` and ``seek`` ahead only (what it skips counts in
    the budget). A member's bytes are read from here directly (:class:`_MemberData`),
    as the decompressor returns them, without tarfile's stream mode copying each byte
    several times (joining and slicing its buffer, then ``readinto``)."""

    def __init__(self, stream: Any, budget: _Budget) -> None:
        self._stream = stream
        self._budget = budget
        self._pos = 0

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or pos < self._pos:
            raise tarfile.StreamError("seeking backwards is not allowed")
        while self._pos < pos and (block := self.some(min(_BLOCK, pos - self._pos))):
            self._budget.take("(tar padding)", len(block))
        return self._pos

    def some(self, size: int) -> bytes:
        """At most ``size`` bytes, as many as the stream gives at once."""
        data: bytes = self._stream.read(size)
        self._pos += len(data)
        return data

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes, fewer only at the end of the stream (tarfile's headers)."""
        if size < 0:
            raise tarfile.StreamError("reading the whole stream is not supported")
        data = self.some(size)
        if len(data) == size or not data:
            return data
        parts = [data]
        got = len(data)
        while got < size and (more := self.some(size - got)):
            parts.append(more)
            got += len(more)
        return b"".join(parts)


class _MemberData:
    """One regular member's ``size`` bytes, read from the tar stream (:class:`Readable`:
    short reads)."""

    def __init__(self, tar: _TarStream, member: tarfile.TarInfo) -> None:
        tar.seek(member.offset_data)  # where tarfile left it: just after the header
        self._tar = tar
        self._left = member.size

    def read(self, size: int = -1, /) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        if size <= 0:
            return b""
        data = self._tar.some(size)
        self._left -= len(data)
        return data


def _tar_member(
    model: _Model, stream: _TarStream, member: tarfile.TarInfo, budget: _Budget
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
    data = _MemberData(stream, member)
    model.add_file(parts, name, member.size, bool(member.mode & stat.S_IXUSR), data, budget)


class _XzReader(io.RawIOBase):
    """The bytes of the xz streams in ``source``, one after another (a file of
    concatenated streams, as modelvault's own export writes, is one ``.xz``), read
    :data:`_BLOCK` compressed bytes at a time.

    ``lzma.LZMAFile`` reads 8 KiB at a time and so calls the decompressor (releasing
    the GIL and taking it back) ~130 000 times per GiB; with another thread saving
    the member meanwhile, each time back costs a wait for the GIL. This reader calls it
    ~1 000 times per GiB, and bounds what one call returns (``max_length``) so a
    decompression bomb is met a block at a time. As ``LZMAFile``: data after the last
    stream that does not begin another is ignored, and a stream cut short raises
    EOFError."""

    def __init__(self, source: _Counting) -> None:
        self._source = source
        self._dec = lzma.LZMADecompressor()
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        while size and not self._done:
            if self._dec.eof:
                data = self._dec.unused_data or self._source.read(_BLOCK)
                if not data:
                    self._done = True
                    break
                self._dec = lzma.LZMADecompressor()
                try:
                    out = self._dec.decompress(data, size)
                except lzma.LZMAError:
                    self._done = True  # trailing data that is no xz stream: ignored
                    break
            else:
                data = self._source.read(_BLOCK) if self._dec.needs_input else b""
                if self._dec.needs_input and not data:
                    raise EOFError("the xz stream ends before its end marker (cut short)")
                out = self._dec.decompress(data, size)
            if out:
                return out
        return b""

    def readall(self) -> bytes:
        parts = []
        while block := self.read(_BLOCK):
            parts.append(block)
        return b"".join(parts)

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


def _decompressed(source: _Counting, kind: str) -> Any:
    """The tar stream inside ``source``: read through the compression's own file object
    (xz: :class:`_XzReader`), which raises EOFError when the compressed stream is cut
    short; 1 MiB reads from ``source`` (not 8 KiB)."""
    if kind == "xz":
        return _XzReader(source)
    buffered = io.BufferedReader(source, _BLOCK)
    if kind == "gz":
        return gzip.GzipFile(fileobj=buffered)
    if kind == "bz2":
        return bz2.BZ2File(buffered)
    return buffered


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
        with _decompressed(source, kind) as decompressed:  # 1 MiB reads below it
            stream = _TarStream(decompressed, budget)
            # tarfile reads the headers from the stream (forward only: it never seeks
            # back on a tar it reads member by member); the members' bytes are read
            # from the stream directly (_MemberData)
            with tarfile.TarFile(fileobj=stream, mode="r", tarinfo=_CheckedTarInfo) as tar:  # type: ignore[arg-type]
                for member in tar:
                    _tar_member(model, stream, member, budget)
                if stream.tell() < tar.offset + tarfile.BLOCKSIZE:  # no zero block: a cut
                    raise EOFError("the tar ends without its end-of-archive block")
            while block := stream.some(_BLOCK):  # the padding after the tar's end: to the
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
