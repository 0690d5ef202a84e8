"""Remotes over fsspec: push and pull models to a shared URL prefix (S3 first).

::

    transport.py   the verbs of a backend (put, put_file, put_if_absent, get, get_ranges,
                   list, delete; upload and read_range telling bytes as they go) per kind
                   of URL, the wrapping() hook for fault injection; re-exporting base.py
                   (the abstract Transport), wrappers.py (Metered, Retrying), files.py
                   (S3 timeouts, one file in or out by URL) and urls.py (URL redaction,
                   secrets refused, failure advice); with files.py, the fsspec importers
    repo.py        the remote as a repository: format marker, refs, packs and their
                   cached indexes (keys from modelvault.repo.layout)
    sync.py        push, pull, list_remote on a Repository and a remote's (url, options),
                   from push.py, pull.py and session.py (what both share)
    locks.py       lock files on the remote: shared for push, exclusive for remote gc
    maintenance.py delete_remote, gc_remote, verify_remote

The only package importing fsspec (in transport.py and files.py). Remote names (configured remotes,
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
