"""Remotes over fsspec: push and pull models to a shared URL prefix (S3 first).

::

    transport.py   the verbs of a backend (put, put_file, put_if_absent, get, get_ranges,
                   list, delete) per kind of URL, the Metered and Retrying wrappers, URL
                   redaction, S3 timeouts, and the wrapping() hook for fault injection
    repo.py        the remote as a repository: format marker, refs, packs and their
                   cached indexes (keys from modelvault.repo.layout)
    sync.py        push, pull, list_remote on a Repository and a remote's (url, options)

The only package importing fsspec. Remote names (configured remotes,
``$MODELVAULT_REMOTE``, ``origin``) are resolved above this package, by the façade
(``Store.push`` / ``pull`` / ``list_remote`` through ``modelvault.remotes.resolve``).
docs/format.md section 11 specifies the remote layout.
"""

from modelvault.remote.sync import (
    TransferProgress,
    TransferResult,
    list_remote,
    pull,
    push,
)

__all__ = ["TransferProgress", "TransferResult", "list_remote", "pull", "push"]
