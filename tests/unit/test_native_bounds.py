"""The compiled kernels touch no byte outside the buffers they are given.

Packs, source files, checkouts and multi-pack indexes reach the C code as memory maps,
whose last byte can be the last of a page with nothing mapped after it; archives and
remotes hand the float decoder payloads that someone else wrote. Here every input and
output buffer lies flush against a page mapped ``PROT_NONE`` (at its end, or at its
start), so a single byte read or written past either edge is a SIGSEGV every time, not
once in a thousand runs as with heap memory. (Electric Fence does the same for malloc'd
memory in test_cdc_native.py.)

The checks run in a child process, this file run as a script: a fault fails the test
with the case that was running, instead of killing the test run.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import random
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def fenced(data: bytes | bytearray | memoryview, at_end: bool = True) -> memoryview:
    """A writable copy of ``data`` in a fresh mapping between two ``PROT_NONE`` pages,
    flush against the one after it (``at_end``) or the one before it."""
    n = len(data)
    span = max(1, -(-n // PAGE)) * PAGE
    mm = mmap.mmap(-1, span + 2 * PAGE)
    base = ctypes.c_char.from_buffer(mm)
    addr = ctypes.addressof(base)
    del base  # (an export of mm: the mapping could not be closed while it lives)
    for guard in (addr, addr + PAGE + span):
        if _libc.mprotect(guard, PAGE, 0) != 0:
            raise OSError(ctypes.get_errno(), "mprotect")
    start = PAGE + (span - n if at_end else 0)
    mm[start : start + n] = bytes(data)
    return memoryview(mm)[start : start + n]  # (the view keeps the mapping alive)


def _touch_outside(at_end: bool) -> None:
    """Read the byte just past a fenced buffer (``at_end``) or just before it."""
    view = fenced(b"x" * 100, at_end)
    base = ctypes.c_char.from_buffer(view)
    ctypes.string_at(ctypes.addressof(base) + (100 if at_end else -1), 1)


@pytest.mark.parametrize("edge", ["past-end", "before-start"])
def test_a_byte_outside_a_fenced_buffer_faults(edge: str) -> None:
    """The fence itself: touching the byte after (or before) the buffer kills the child
    with SIGSEGV; the buffer's own bytes read and write as usual."""
    done = subprocess.run([sys.executable, __file__, edge], capture_output=True, timeout=60)
    assert done.returncode == -11, (edge, done.returncode, done.stderr[-500:])
    inside = fenced(b"abc", at_end=True)
    inside[0] = ord("A")
    assert bytes(inside) == b"Abc"


# --- the checks, run in the child ------------------------------------------------------

SIZES = [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 255, 257, 1023, 1025]
SIZES += [4095, 4096, 4097, 8192, 16385, 65535, 65536, 65537, 100_003]


def _raws(seed: int) -> Iterator[tuple[str, bytes]]:
    from test_float_huffman import KINDS, adversarial

    for kind in KINDS:
        for size in SIZES:
            raw = adversarial(kind, size // 2 + 2, seed + size)[:size]  # (2-byte kinds too)
            yield kind, raw + bytes(size - len(raw))


def check_float_encoder(say: Callable[[str], None]) -> int:
    """hencode, split and probe read only their input; hdecode reads only its payload."""
    from modelvault import _floatcodec as fc

    cases = 0
    for kind, raw in _raws(0):
        for width in (2, 4):
            for at_end in (True, False):
                say(f"encode {kind} {len(raw)} bytes, width {width}, at_end {at_end}")
                data = fenced(raw, at_end)
                for skip in range(-1, min(width, 2)):
                    payload = fc.hencode(data, width, skip, 1, (1 << width) - 1, 1000)
                    assert fc.hdecode(fenced(payload, at_end), len(raw)) == raw
                    cases += 1
                fc.split(data, width, 3)
                fc.probe(data, width)
                fc.probe(data)
    return cases


def check_float_decoder(say: Callable[[str], None]) -> int:
    """hdecode and hdecode_many write only their output, also for damaged payloads and
    wrong raw lengths (which they refuse or decode to the length asked)."""
    from modelvault import _floatcodec as fc

    rng = random.Random(1)
    cases = 0
    for kind, raw in _raws(7):
        n = len(raw)
        for width in (2, 4):
            at_end = rng.random() < 0.7
            say(f"decode {kind} {n} bytes, width {width}, at_end {at_end}")
            good = fc.hencode(raw, width, -1, 1, (1 << width) - 1, 1000)
            out = fenced(bytes(n), at_end)
            fc.hdecode(fenced(good, at_end), n, out)
            assert bytes(out) == raw
            out = fenced(bytes(2 * n), at_end)
            pair = [fenced(good, at_end), fenced(good, not at_end)]
            assert fc.hdecode_many(pair, [n, n], out) is None
            assert bytes(out) == raw + raw
            for _ in range(6):
                bad = _damaged(rng, good)
                want = max(0, n + rng.choice([0, 0, 1, -1, 7, 4096]))
                say(f"decode {kind} {n} bytes, damaged to {len(bad)}, asked for {want}")
                with contextlib.suppress(ValueError):  # refused, or the length asked
                    assert len(fc.hdecode(fenced(bad, at_end), want)) == want
                with contextlib.suppress(ValueError):
                    fc.hdecode(fenced(bad, at_end), want, fenced(bytes(want), at_end))
                fc.hdecode_many([fenced(bad, at_end)], [want], fenced(bytes(want), at_end))
                cases += 1
    return cases


def _damaged(rng: random.Random, payload: bytes) -> bytes:
    p = bytearray(payload)
    how = rng.randrange(4)
    if how == 0 and len(p) > 1:
        del p[rng.randrange(1, len(p)) :]
    elif how == 1 and p:
        for _ in range(rng.randrange(1, 5)):
            p[rng.randrange(len(p))] = rng.randrange(256)
    elif how == 2 and p:
        p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)
        del p[len(p) - rng.randrange(0, min(9, len(p))) :]
    else:
        p += bytes(rng.randrange(1, 9))
    return bytes(p)


def check_planes(say: Callable[[str], None]) -> int:
    """join and the archive's interleave read and write only their buffers."""
    from modelvault import _floatcodec as fc
    from modelvault import _planes

    rng = random.Random(2)
    cases = 0
    for size in SIZES:
        for width in (2, 4):
            rot = rng.randrange(1, 8 * width)
            say(f"planes {size} bytes, width {width}, rotation {rot}")
            data = rng.randbytes(size)
            n = size // width
            planes = fc.split(fenced(data), width, rot)
            lanes = [fenced(planes[i * n : (i + 1) * n], i % 2 == 0) for i in range(width)]
            tail = fenced(data[n * width :], False)
            assert fc.join(width, rot, fenced(b""), lanes, tail) == data
            out = fenced(bytes(n * width), rng.random() < 0.5)
            _planes.interleave(out, [fenced(rng.randbytes(n), rng.random() < 0.5) for _ in lanes])
            cases += 1
    return cases


def check_cdc(say: Callable[[str], None]) -> int:
    """Cutting and hashing read only the file's bytes; the index's filter and id column
    are read (and the filter written) only where they lie."""
    from modelvault import _cdc

    rng = random.Random(3)
    cases = 0
    for size in [*SIZES, 3 * 512 * 1024 + 5]:
        data = rng.randbytes(size)
        for at_end in (True, False):
            say(f"cdc {size} bytes, at_end {at_end}")
            view = fenced(data, at_end)
            if size:
                _cdc.cut_hash(view, size, 1)
                _cdc.cut_hash(view, size, 1, size // 2)
                _cdc.object_ids(1, view, [size // 3, size])
            assert _cdc.object_id(1, view) == _cdc.object_id(1, data)
            cases += 1
    for count in (1, 2, 7, 64, 65, 300):
        ids = sorted(rng.randbytes(32) for _ in range(count))
        needles = [*ids[::2], *(rng.randbytes(32) for _ in range(count))]
        say(f"index of {count} ids")
        for blocks in (1, 3, 64):
            blank = fenced(bytes(64 * blocks), True)
            _cdc.filter_add(blank, blocks, fenced(b"".join(ids), False))
            hits = _cdc.screen(fenced(bytes(blank)), 0, blocks, fenced(b"".join(needles)))
            assert hits[: len(ids[::2])] == b"\x01" * len(ids[::2])
        fan = [0] * 257
        for oid in ids:
            for b in range(oid[0] + 1, 257):
                fan[b] += 1
        column = fenced(b"".join(ids), True)
        bounds = fenced(struct.pack("=257q", *fan), count % 2 == 0)
        found = _cdc.find(column, 0, bounds, fenced(b"".join(needles)))
        where = struct.unpack(f"={len(needles)}q", found)
        assert list(where[: len(ids[::2])]) == list(range(0, count, 2))
        cases += 1
    return cases


CHECKS = {
    "float_encoder": check_float_encoder,
    "float_decoder": check_float_decoder,
    "planes": check_planes,
    "cdc": check_cdc,
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_kernels_stay_inside_fenced_buffers(name: str) -> None:
    done = subprocess.run(
        [sys.executable, __file__, name], capture_output=True, text=True, timeout=600
    )
    last = done.stderr.strip().splitlines()[-3:]
    assert done.returncode == 0, f"{name}: exit {done.returncode}; last case: {last}"
    assert done.stdout.startswith(f"{name}: ") and int(done.stdout.split()[1]) > 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if sys.argv[1] in ("past-end", "before-start"):
        _touch_outside(sys.argv[1] == "past-end")
        sys.exit(0)

    def say(case: str) -> None:
        print(case, file=sys.stderr, flush=True)

    print(f"{sys.argv[1]}: {CHECKS[sys.argv[1]](say)} cases")
