"""Remotes over fsspec: push and pull models to a shared URL prefix (S3 first).

::

    transport.py   the verbs of a backend (put, put_if_absent, get, get_ranges, list,
                   delete) per kind of URL, the Metered and Retrying wrappers, URL
                   redaction, S3 timeouts, and the wrapping() hook for fault injection
    repo.py        the remote layout: format marker, refs, packs and their cached indexes
    sync.py        push, pull, list_remote

The only package importing fsspec. docs/format-remote.md specifies the remote layout.
"""

from modelvault.remote.sync import (
    TransferProgress,
    TransferResult,
    list_remote,
    pull,
    push,
)

__all__ = ["TransferProgress", "TransferResult", "list_remote", "pull", "push"]
