"""Remotes over fsspec: layout, transport, push and pull."""
