"""Per-object compression: zstd where it pays, raw where it does not.

Three codecs (docs/format.md, section 2). The local store writes raw (0) and zstd (1)
(:func:`encode`); archives may also carry byte planes (2), a float-aware layout that
:func:`encode_for_transfer` and :class:`TransferEncoder` choose for chunks on the move.
:func:`decode` reads all three; :func:`split_planes` and :func:`join_planes` decode many
byte-planes payloads at once.
The float codec (3; zstd planes, or Huffman planes coded in C) is
:mod:`modelvault.core.floats` and the zstd primitives are
:mod:`modelvault.core._zstd`; their names are re-exported here.

Byte planes payload (integers little-endian)::

    0       1  width w (the writer uses 4; readers accept 2..8)
    1       1  lane mask: bit i set = lane i is one zstd frame, clear = lane i is raw
    2       4w stored length of each lane, u32
    2+4w    .. the w lanes, in order
    ..      .. the tail: the last (raw length mod w) raw bytes, as they are

Lane i holds bytes i, i+w, i+2w, ... of the first (raw length // w) * w raw bytes, so
every lane decodes to raw length // w bytes. In float32 weights the byte holding the
sign and most of the exponent lands in one lane that shrinks to ~35%, while the three
mantissa lanes are noise and stay raw: ~0.84 of raw, where zstd on the whole gets ~0.92.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING, NamedTuple, overload

from modelvault.core._zstd import _LANE_PARAMS as _LANE_PARAMS
from modelvault.core._zstd import LEVEL as LEVEL
from modelvault.core._zstd import _compressor as _compressor
from modelvault.core._zstd import _decode_zstd as _decode_zstd
from modelvault.core._zstd import _decompressor as _decompressor
from modelvault.core._zstd import _lane_compressor as _lane_compressor
from modelvault.core._zstd import read_planes
from modelvault.core._zstd import zstd_bound as zstd_bound
from modelvault.core.floats import FLOAT_DTYPES as FLOAT_DTYPES
from modelvault.core.floats import FLOAT_HEAD as FLOAT_HEAD
from modelvault.core.floats import FLOAT_KEEP as FLOAT_KEEP
from modelvault.core.floats import FLOAT_MARGIN as FLOAT_MARGIN
from modelvault.core.floats import FLOAT_MIN as FLOAT_MIN
from modelvault.core.floats import FLOAT_TRY as FLOAT_TRY
from modelvault.core.floats import FLOAT_WIDTHS as FLOAT_WIDTHS
from modelvault.core.floats import PLANE_TRY_BITS as PLANE_TRY_BITS
from modelvault.core.floats import _decode_float as _decode_float
from modelvault.core.floats import _join_float_numpy as _join_float_numpy
from modelvault.core.floats import decode_float_batch as decode_float_batch
from modelvault.core.floats import decodes_in_batch as decodes_in_batch
from modelvault.core.floats import encode_float as encode_float
from modelvault.core.floats import encode_float_hinted as encode_float_hinted
from modelvault.core.floats import encode_float_huffman as encode_float_huffman
from modelvault.core.floats import float_bound as float_bound
from modelvault.core.floats import float_plan as float_plan
from modelvault.errors import IntegrityError

if TYPE_CHECKING:  # numpy is imported where byte planes are used: it costs ~80 ms at start-up
    import numpy as np

_Interleave = Callable[[memoryview, list[bytes | memoryview]], None]
_interleave: _Interleave | None
try:
    from modelvault._planes import interleave as _interleave
except ImportError:  # built without a C compiler: numpy interleaves, ~2.5x slower
    _interleave = None


class Codec(IntEnum):
    """How an object's payload is stored; the value is stored on disk."""

    RAW = 0
    ZSTD = 1
    PLANES = 2
    FLOAT = 3


SAMPLE = 8 * 1024  # bytes compressed to decide whether the whole chunk is worth trying
SAMPLE_RATIO = 0.85  # try the whole chunk only when the sample shrinks below this
KEEP_RATIO = 0.90  # keep the compressed form only when it is below this share of raw

PLANES_WIDTH = 4  # lanes the writer cuts a chunk into (float32: one byte each)
MIN_WIDTH, MAX_WIDTH = 2, 8  # widths a reader accepts
PLANES_HEAD = struct.Struct("<BB")  # width, lane mask; then ``width`` u32 lane lengths
TRANSFER_LEVEL = 1  # zstd level for whole chunks on the move (archives)
TRANSFER_KEEP = 0.99  # keep a compressed form (whole, or one lane) only below this share
_PROBE_SLICES = 4  # the transfer probe takes SAMPLE bytes in this many slices, spread out

_local = threading.local()  # this thread's byte-planes scratch buffer


def encode(
    data: bytes | memoryview, *, probe: bool = True, dtype: str | None = None
) -> tuple[Codec, bytes | memoryview]:
    """Return ``(codec, payload)`` for ``data``: raw, zstd or float planes (what the
    local store keeps).

    With ``probe`` (used for chunks of model weights) the float codec is tried first,
    where it is written (:data:`FLOAT_WRITE`, or a ``dtype`` of :data:`FLOAT_HINTED`):
    straight away for a chunk whose ``dtype`` (what the caller knows of the data, a
    safetensors dtype name, or None) is a float of :data:`FLOAT_DTYPES`, kept if below
    :data:`FLOAT_KEEP` of the chunk; else when a sample says it pays
    (:func:`float_plan`), then weighed against zstd; else a small sample is compressed
    and the whole is tried only if the sample shrank: float weights barely compress and
    trying costs time. Without it (metadata objects) zstd is always tried.
    """
    size = len(data)
    if size == 0:
        return Codec.RAW, data
    if (
        probe
        and dtype is not None
        and dtype in FLOAT_DTYPES
        and (FLOAT_WRITE or dtype in FLOAT_HINTED)
    ):
        hinted = encode_float_hinted(data, dtype)
        if hinted is not None and len(hinted) < size * FLOAT_KEEP:
            return Codec.FLOAT, hinted
    elif probe and FLOAT_WRITE:
        plan = float_plan(data, dtype)
        if plan is not None:
            payload = encode_float_huffman(data, *plan)
            if len(payload) < size * FLOAT_KEEP:
                return _float_or_zstd(data, payload)
    cctx = _compressor()
    if probe and size > 2 * SAMPLE:
        sample = cctx.compress(data[:SAMPLE])
        if len(sample) > SAMPLE * SAMPLE_RATIO:
            return Codec.RAW, data
    packed = cctx.compress(data)
    if len(packed) < size * KEEP_RATIO:
        return Codec.ZSTD, packed
    return Codec.RAW, data


def _float_or_zstd(data: bytes | memoryview, payload: bytes) -> tuple[Codec, bytes | memoryview]:
    """The float payload, unless zstd does better: the probe's order-0 estimate does not
    see repeats (a tensor of few distinct values, text). zstd level 1 on the first
    ``SAMPLE`` bytes decides (~10 us); a chunk of at most twice that is simply
    compressed whole."""
    size = len(data)
    share = len(payload) / size
    cctx = _compressor(TRANSFER_LEVEL)
    sample = data if size <= 2 * SAMPLE else data[:SAMPLE]
    packed = cctx.compress(sample)
    if len(packed) >= len(sample) * share:
        return Codec.FLOAT, payload
    if size > 2 * SAMPLE:
        packed = _compressor().compress(data)
    return (Codec.ZSTD, packed) if len(packed) < len(payload) else (Codec.FLOAT, payload)


# --- float planes: modelvault/core/floats.py ---------------------------------------

# The float codec (codec 3) is always read, but written only where it is switched on
# (``MODELVAULT_FLOAT_CODEC=1``, read at import; tests set ``FLOAT_WRITE``). It stores
# weights 1.2-1.5x smaller. Its zstd form encoded at ~0.5 GB/s a core and decoded at
# 1.0-1.4 GB/s, which made saving a new 1 GiB model 2.4x and Model.path 1.7x ``cp -r`` +
# ``sync`` (benchmarks/RESULTS.md, session 8). The Huffman planes that replaced it encode
# at ~1.3-1.6 GB/s of raw bytes per CPU second and decode at ~1.7-2.3 GB/s on MiniLM
# fp32 / bf16 / fp16 (issue 21, session 9: bench_codec.py, CPU time of one thread on a
# shared machine). Their sub-format 2 (session 10: the exponent coded with up to 2
# mantissa bits, 0.25-0.6% smaller on fp32 / bf16) encodes at ~1.25 / 1.25 / 1.7 GB/s
# (bf16 / fp16 / fp32) and decodes at ~2.0 / 2.25 / 2.5 GB/s per CPU second in the C
# alone (no Python around it); since session 15 (two streams coded at once) it encodes
# bf16 at ~1.5 GB/s (1.35 ns an element) and fp32 at ~2.0 GB/s (1.95 ns an element) on
# this host. Decoding meets its 1.5 GB/s target; whether saves meet
# theirs with it on is measured in bench_store.py. By default it is written only for
# chunks known to be bf16 (a safetensors file of bf16 tensors): there it costs less CPU
# than the zstd it replaces and stores 15% fewer bytes (256 MiB of MiniLM bf16 tiles:
# 0.49 s CPU, 0.664 of raw, against 0.61 s, 0.783; benchmarks/bench_save_cpu.py,
# session 10); on fp16 it would cost 1.8x the CPU of today's raw store, on fp32 ~1.35x.
# MODELVAULT_FLOAT_CODEC=1 tries it on every chunk, =0 never writes it, and a list of
# safetensors dtypes (e.g. BF16,F16,F32) writes it for the chunks known to be of those.
_SETTING = os.environ.get("MODELVAULT_FLOAT_CODEC", "")
FLOAT_WRITE = _SETTING == "1"  # try the float codec on every chunk of weights


def _hinted(setting: str) -> frozenset[str]:
    """The safetensors dtypes whose chunks get the float codec, from the setting."""
    if setting == "0":
        return frozenset()
    if setting in ("", "1"):
        return frozenset({"BF16"})
    names = frozenset(n.strip().upper() for n in setting.split(",") if n.strip())
    unknown = names - FLOAT_DTYPES.keys()
    if unknown or not names:
        import warnings

        warnings.warn(
            f"MODELVAULT_FLOAT_CODEC={setting!r} is not 0, 1 or a list of "
            f"{', '.join(sorted(FLOAT_DTYPES))}: ignored (the default, BF16, applies)",
            stacklevel=2,
        )
        return frozenset({"BF16"})
    return names


FLOAT_HINTED: frozenset[str] = _hinted(_SETTING)


# --- byte planes ------------------------------------------------------------------


def _lanes(data: bytes | memoryview, width: int) -> np.ndarray:
    """A contiguous ``(width, len // width)`` array, row i lane i: one transposing copy."""
    import numpy as np

    n = len(data) // width
    return np.ascontiguousarray(np.frombuffer(data, np.uint8, count=n * width).reshape(n, width).T)


def _lane_pays(lane: bytes | memoryview, keep: float) -> bytes | None:
    """The zstd frame of ``lane`` if it is below ``keep`` of the lane's size, else None."""
    packed = _lane_compressor().compress(lane)
    return packed if len(packed) < len(lane) * keep else None


def _planes(data: bytes | memoryview, width: int, keep: float, tries: int) -> tuple[bytes, int]:
    """The byte-planes payload of ``data`` and its lane mask: lane i is zstd'd if bit i of
    ``tries`` is set and that pays, else stored raw."""
    lanes = _lanes(data, width)
    n = lanes.shape[1]
    parts: list[bytes | memoryview] = []
    mask = 0
    for i in range(width):
        lane = lanes[i].data
        packed = _lane_pays(lane, keep) if tries >> i & 1 else None
        if packed is not None:
            mask |= 1 << i
        parts.append(lane if packed is None else packed)
    head = PLANES_HEAD.pack(width, mask) + struct.pack(f"<{width}I", *map(len, parts))
    return b"".join([head, *parts, data[n * width :]]), mask


def encode_planes(
    data: bytes | memoryview,
    *,
    width: int = PLANES_WIDTH,
    keep: float = TRANSFER_KEEP,
    try_lanes: list[bool] | None = None,
) -> bytes:
    """The codec-2 payload of ``data``: each lane zstd'd if that pays, else raw.

    ``try_lanes[i]`` False stores lane i raw without trying (a probe said it is noise).
    """
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ValueError(f"byte-planes width {width} is not in {MIN_WIDTH}..{MAX_WIDTH}")
    lanes = try_lanes if try_lanes is not None else [True] * width
    return _planes(data, width, keep, sum(1 << i for i, t in enumerate(lanes) if t))[0]


def _spread_sample(data: bytes | memoryview, width: int) -> bytes:
    """SAMPLE bytes of ``data`` in ``_PROBE_SLICES`` slices spread over it, each starting
    at a multiple of ``width`` so that lanes of the sample are lanes of the data."""
    piece = SAMPLE // _PROBE_SLICES
    step = (len(data) - piece) // (_PROBE_SLICES - 1)
    starts = [(k * step) // width * width for k in range(_PROBE_SLICES)]
    return b"".join(data[s : s + piece] for s in starts)


Encoded = tuple[Codec, bytes | memoryview, int]  # codec, payload, byte-planes lane mask


def _probed(data: bytes | memoryview, keep: float) -> Encoded:
    """:func:`encode_for_transfer`, also returning the lane mask (0 unless byte planes)."""
    size = len(data)
    width = PLANES_WIDTH
    all_lanes = (1 << width) - 1
    if size < 2 * width:
        return Codec.RAW, data, 0
    cctx = _compressor(TRANSFER_LEVEL)
    if size <= 2 * SAMPLE:  # small: encoding both ways costs about what probing would
        best: Encoded = (Codec.RAW, data, 0)
        for how, (payload, mask) in (
            (Codec.ZSTD, (cctx.compress(data), 0)),
            (Codec.PLANES, _planes(data, width, keep, all_lanes)),
        ):
            if len(payload) < size * keep and len(payload) < len(best[1]):
                best = (how, payload, mask)
        return best
    sample = _spread_sample(data, width)
    plain = len(cctx.compress(sample))
    lanes = _lanes(sample, width)
    pays = [_lane_pays(lane.data, keep) for lane in lanes]
    planes = PLANES_HEAD.size + 4 * width
    planes += sum(lanes.shape[1] if p is None else len(p) for p in pays)
    if min(plain, planes) >= len(sample) * keep:
        return Codec.RAW, data, 0
    if plain <= planes:
        packed = cctx.compress(data)
        return (Codec.ZSTD, packed, 0) if len(packed) < size * keep else (Codec.RAW, data, 0)
    tries = sum(1 << i for i, p in enumerate(pays) if p is not None)
    payload, mask = _planes(data, width, keep, tries)
    return (Codec.PLANES, payload, mask) if len(payload) < size * keep else (Codec.RAW, data, 0)


def encode_for_transfer(
    data: bytes | memoryview, *, keep: float = TRANSFER_KEEP
) -> tuple[Codec, bytes | memoryview]:
    """``(codec, payload)`` for a chunk on the move: byte planes, zstd or raw.

    A sample spread over the chunk is compressed both ways (zstd level 1 on the whole
    sample; each lane of it alone); the chunk is then encoded the way the sample says is
    smaller, lanes the sample found incompressible stored raw untried. The result is
    kept only below ``keep`` of the raw size. Chunks up to twice the sample are simply
    encoded both ways.
    """
    how, payload, _ = _probed(data, keep)
    return how, payload


class TransferEncoder:
    """Encodes the chunks of files, in order, for the trip; skips most probes.

    Neighbouring chunks of a file share a layout: in float32 weights the exponent byte
    comes every 4 bytes. After a chunk went as byte planes, the next one (which starts
    that chunk's length further into the file) has the same lanes worth compressing,
    relabelled by that length mod the width: it is encoded so directly, without a probe.
    The guess is kept only if every guessed lane paid and the chunk shrank about as much
    as the last probed one (within ``GUESS_SLACK``); otherwise (other content, or a chunk
    that does not follow the last one) the chunk is probed as :func:`encode_for_transfer`
    does, and so is every ``REPROBE``-th chunk. Call :meth:`next_file` before each file's
    chunks and :meth:`skip` for a chunk of the file encoded elsewhere.
    """

    GUESS_SLACK = 0.03
    REPROBE = 16

    def __init__(self, keep: float = TRANSFER_KEEP) -> None:
        self._keep = keep
        self._guess = 0  # lanes to compress in the next chunk; 0: probe it
        self._ratio = 1.0  # payload / raw of the last probed chunk
        self._guessed = 0  # chunks encoded on a guess since the last probe

    def next_file(self) -> None:
        """Forget the guess: the next chunk starts another file."""
        self._guess = 0

    def skip(self, size: int) -> None:
        """The next chunk starts ``size`` bytes later (a chunk not encoded here)."""
        self._guess = _relabel(self._guess, size)

    def encode(self, data: bytes | memoryview) -> tuple[Codec, bytes | memoryview]:
        """``(codec, payload)`` of the next chunk, as :func:`encode_for_transfer` gives."""
        size = len(data)
        guess, self._guess = self._guess, 0
        if guess and self._guessed < self.REPROBE and size > 2 * SAMPLE:
            planes, mask = _planes(data, PLANES_WIDTH, self._keep, guess)
            if mask == guess and abs(len(planes) / size - self._ratio) <= self.GUESS_SLACK:
                self._guessed += 1
                self._guess = _relabel(mask, size)
                return Codec.PLANES, planes
        how, payload, mask = _probed(data, self._keep)
        self._guessed = 0
        if how == Codec.PLANES and size > 2 * SAMPLE:
            self._guess = _relabel(mask, size)
            self._ratio = len(payload) / size
        return how, payload


def _relabel(mask: int, size: int) -> int:
    """The lane mask of the chunk that starts ``size`` bytes after one with ``mask``: its
    lane i holds the bytes the earlier chunk's lane (i + size) mod width held."""
    w = PLANES_WIDTH
    return sum(1 << i for i in range(w) if mask >> (i + size) % w & 1)


def planes_bound(raw_len: int) -> int:
    """The largest valid byte-planes payload for ``raw_len`` raw bytes, any width.

    Header ``2 + 4w``, each of the w lanes at most one zstd frame of ``raw_len // w``
    bytes, the tail ``raw_len mod w``; width 8 gives the largest (docs/format.md, 2).
    """
    w = MAX_WIDTH
    return PLANES_HEAD.size + 4 * w + w * zstd_bound(raw_len // w) + raw_len % w


class Planes(NamedTuple):
    """A checked byte-planes payload: its width, its lanes decoded, and its tail."""

    width: int
    lanes: list[bytes | memoryview]  # each raw length // width bytes
    tail: memoryview


def split_planes(payload: bytes | memoryview, raw_len: int) -> Planes:
    """Check a byte-planes payload against its header and ``raw_len`` and decode its zstd
    lanes (each into at most raw length // width bytes); :func:`join_planes` finishes.

    Raises:
        IntegrityError: naming what is wrong with the payload.
    """
    view = memoryview(payload)
    if len(view) < PLANES_HEAD.size:
        raise IntegrityError(f"byte-planes payload of {len(view)} bytes has no header")
    width, mask = PLANES_HEAD.unpack_from(view)
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise IntegrityError(f"byte-planes width {width} is not in {MIN_WIDTH}..{MAX_WIDTH}")
    if mask >> width:
        raise IntegrityError(f"byte-planes lane mask {mask:#04x} marks lanes beyond {width}")
    head = PLANES_HEAD.size + 4 * width
    if len(view) < head:
        raise IntegrityError(f"byte-planes header is truncated ({len(view)} of {head} bytes)")
    lengths = struct.unpack_from(f"<{width}I", view, PLANES_HEAD.size)
    n, tail = divmod(raw_len, width)
    expected = head + sum(lengths) + tail
    if len(view) != expected:
        raise IntegrityError(
            f"byte-planes payload is {len(view)} bytes, its header and raw length "
            f"{raw_len} give {expected}"
        )
    lanes, at = read_planes(view, head, lengths, mask, n, "lane")
    return Planes(width, lanes, view[at:])


def _scratch(n: int) -> memoryview:
    """A writable buffer of at least ``n`` bytes, this thread's own and reused."""
    buf: bytearray | None = getattr(_local, "scratch", None)
    if buf is None or len(buf) < n:
        buf = _local.scratch = bytearray(max(n, 2 * len(buf) if buf else n))
    return memoryview(buf)


def join_planes(
    items: list[Planes], alloc: Callable[[int], memoryview] | None = None
) -> list[memoryview]:
    """The raw bytes of each of ``items``, laid out one after another in one buffer.

    The results are views of a buffer from ``alloc`` (given a size in bytes, it returns a
    writable buffer at least that large), or of a fresh one without it: a caller that
    knows when the results are no longer used can hand the same buffers out again, and
    spare the page faults of fresh memory.

    The compiled interleave (``modelvault._planes``) writes each item straight from its
    lanes, without the GIL. Without it, numpy interleaves all items at once
    (:func:`_join_numpy`).
    """
    if _interleave is None:
        return _join_numpy(items, alloc)
    sizes = [len(item.lanes[0]) * item.width + len(item.tail) for item in items]
    total = sum(sizes)
    buf = alloc(total) if alloc is not None else memoryview(bytearray(total))
    out: list[memoryview] = []
    at = 0
    for item, size in zip(items, sizes, strict=True):
        body = at + size - len(item.tail)
        _interleave(buf[at:body], item.lanes)
        buf[body : at + size] = item.tail
        out.append(buf[at : at + size])
        at += size
    return out


def _join_numpy(
    items: list[Planes], alloc: Callable[[int], memoryview] | None = None
) -> list[memoryview]:
    """:func:`join_planes` in numpy, for a build without the compiled interleave.

    Decoding many chunks this way costs one numpy call per width, not several per chunk
    (each of which would release and retake the GIL). Every lane of every item goes into
    one ``(width, total)`` array, item after item, each followed by one slot that holds
    the item's tail (the rest is padding); interleaving that array lays out each item's
    raw bytes contiguously, tail included. The results are views of that shared buffer.
    """
    import numpy as np

    out: list[memoryview] = [memoryview(b"")] * len(items)
    by_width: dict[int, list[int]] = {}
    for k, item in enumerate(items):
        by_width.setdefault(item.width, []).append(k)
    for width, ks in by_width.items():
        row = sum(len(items[k].lanes[0]) + 1 for k in ks)
        flat = _scratch(width * row)  # this thread's, reused: no fresh pages every batch
        at = 0
        for i in range(width):
            for k in ks:
                lanes, tail = items[k].lanes, items[k].tail
                n = len(lanes[i])
                flat[at : at + n] = lanes[i]
                flat[at + n] = tail[i] if i < len(tail) else 0
                at += n + 1
        lanes_array = np.frombuffer(flat, np.uint8, width * row).reshape(width, row)
        if alloc is None:
            joined = np.empty((row, width), np.uint8)
        else:
            joined = np.frombuffer(alloc(row * width), np.uint8, row * width).reshape(row, width)
        np.positive(lanes_array, out=joined.T)  # the interleave: one pass, GIL released
        view = joined.data.cast("B")
        at = 0
        for k in ks:
            n = len(items[k].lanes[0])
            out[k] = view[at : at + n * width + len(items[k].tail)]
            at += (n + 1) * width
    return out


def _decode_planes(payload: bytes | memoryview, raw_len: int) -> bytes:
    """Undo :func:`encode_planes`, checking every length against the header first."""
    return bytes(join_planes([split_planes(payload, raw_len)])[0])


@overload
def decode(codec: int, payload: bytes, raw_len: int) -> bytes: ...
@overload
def decode(
    codec: int, payload: bytes | memoryview, raw_len: int, into: memoryview | None = None
) -> bytes | memoryview: ...
def decode(
    codec: int, payload: bytes | memoryview, raw_len: int, into: memoryview | None = None
) -> bytes | memoryview:
    """Undo :func:`encode` or :func:`encode_for_transfer`; never produces more than
    ``raw_len`` bytes. A raw payload comes back as it was given (a memoryview stays one:
    no copy). ``into`` (``raw_len`` bytes or more) is where a float codec payload is
    decoded where it can be (the compiled Huffman planes), returned as ``into[:raw_len]``:
    a reader that reuses its buffers writes into pages it has, not fresh ones.

    Raises:
        IntegrityError: the payload is not valid for its codec or has the wrong size.
    """
    if codec == Codec.RAW:
        out = payload
    elif codec == Codec.ZSTD:
        out = _decode_zstd(payload, raw_len, "zstd payload")
    elif codec == Codec.PLANES:
        out = _decode_planes(payload, raw_len)
    elif codec == Codec.FLOAT:
        out = _decode_float(payload, raw_len, into)
    else:
        raise IntegrityError(f"unknown codec {codec}")
    if len(out) != raw_len:
        raise IntegrityError(f"payload decodes to {len(out)} bytes, expected {raw_len}")
    return out
