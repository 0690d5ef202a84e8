"""Tools for testing code that uses modelvault (and modelvault itself): fault injection.

``modelvault.testing.faults``: :class:`~modelvault.testing.faults.FaultyTransport`, a
transport wrapper injecting errors, truncated and stalled reads and slow writes on a
seeded schedule, and :func:`~modelvault.testing.faults.injected`, which puts it under
every push, pull and remote listing of a block.
"""
