"""Every error modelvault raises, in one tree.

::

    ModelVaultError
     ├── InvalidTag          (also ValueError)   a name or version breaks the tag rules
     ├── InvalidInput        (also ValueError)   bad arguments: metadata, signatures, paths
     ├── NotFound            (also LookupError)  no such model, version, path or object
     │    └── PathNotFound   (also FileNotFoundError)
     ├── ModelExists                             name:version already holds another model
     ├── IntegrityError                          stored or received bytes do not match their id
     ├── UnsupportedFormat                       a store, remote or archive of a newer format
     ├── ArchiveError        (also ValueError)   an archive is truncated, corrupt or hostile
     ├── RemoteError         (also OSError)      a remote could not be read or written
     ├── DiskFull            (also OSError)      no space left (or quota) while writing
     ├── StorageError        (also OSError)      the disk failed a write (an I/O error)
     ├── BatchingError       (also ValueError)   a payload cannot be merged or split on batch_dim
     ├── BatcherClosed       (also RuntimeError) a batcher was closed before the call ran
     └── RunnerError         (also RuntimeError) a model cannot be served
          └── RunnerNotInitialized               called before init_local()

Foreign exceptions are translated once, where they enter (``raise ... from exc``).
"""

from __future__ import annotations


class ModelVaultError(Exception):
    """Root of every error modelvault raises on purpose."""


class InvalidTag(ModelVaultError, ValueError):
    """A model name or version does not follow the tag rules."""


class InvalidInput(ModelVaultError, ValueError):
    """An argument is not usable: metadata that cannot be stored, a bad signature, a bad path."""


class NotFound(ModelVaultError, LookupError):
    """A model, version, path or object that was asked for does not exist."""


class PathNotFound(NotFound, FileNotFoundError):
    """A path on disk that was named does not exist (or is a dangling link)."""


class ModelExists(ModelVaultError):
    """A ``name:version`` already holds a different model; versions are immutable."""


class IntegrityError(ModelVaultError):
    """Bytes read from disk, an archive or a remote do not match their content id."""


class UnsupportedFormat(ModelVaultError):
    """A store, remote or archive written in a format version this modelvault does not
    read (a newer modelvault wrote it). The one error for it, wherever it is found; an
    archive's is also an :class:`ArchiveError`, a remote's also a :class:`RemoteError`.
    """

    def __init__(self, what: str, found: object, reads: object) -> None:
        super().__init__(
            f"{what} is of format {found}; this modelvault reads format {reads}: "
            "upgrade modelvault (pip install -U modelvault)"
        )
        self.found = found


class ArchiveError(ModelVaultError, ValueError):
    """An archive is truncated, corrupted, of an unknown version or hostile."""


class RemoteError(ModelVaultError, OSError):
    """A remote could not be reached, read or written."""


class DiskFull(ModelVaultError, OSError):
    """The disk (or quota) holding the store or a destination filled up while writing.

    Nothing was published: the store is as it was. ``errno`` is the system's
    (``ENOSPC`` or ``EDQUOT``) and ``filename`` where the write failed, when known.
    """


class StorageError(ModelVaultError, OSError):
    """The disk holding the store or a destination failed a write (an I/O error, EIO).

    What was being written is not published (a temporary at most is left, for ``gc``);
    ``errno`` and ``filename`` are the system's, when known.
    """


class BatchingError(ModelVaultError, ValueError):
    """A payload cannot be batched, or an output cannot be split, along ``batch_dim``."""


class BatcherClosed(ModelVaultError, RuntimeError):
    """The batcher was closed: the call was refused or dropped before it ran."""


class RunnerError(ModelVaultError, RuntimeError):
    """The model cannot be served: no flavour module, no loader, or a missing method."""


class RunnerNotInitialized(RunnerError):
    """A runner was called before ``init_local()``."""


__all__ = [
    "ArchiveError",
    "BatcherClosed",
    "BatchingError",
    "DiskFull",
    "IntegrityError",
    "InvalidInput",
    "InvalidTag",
    "ModelExists",
    "ModelVaultError",
    "NotFound",
    "PathNotFound",
    "RemoteError",
    "RunnerError",
    "RunnerNotInitialized",
    "StorageError",
    "UnsupportedFormat",
]
