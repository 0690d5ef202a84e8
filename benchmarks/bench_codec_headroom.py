"""Float codec headroom (issue 21): how many stored bytes each idea could save on the real
all-MiniLM-L6-v2 weights, computed exactly on the chunks a save cuts, before any of it
is written into the codec.

Inputs as ``bench_codec.py`` makes them (fp32, bf16, fp16 safetensors). For every chunk
(``chunking.chunk_file``), at the skip whose plane 0 (rotation 1) has the least order-0
entropy:

- ``now``: the payload ``codec.encode`` writes, and its fixed bytes (payload header,
  plane headers, code-length tables, stream lengths);
- ``huffman K`` (K = 0..3): plane 0 holding the exponent byte and K mantissa bits, coded
  with the code lengths the C encoder builds (``_huf_lengths``, a port of ``huf_lengths``:
  12-bit limit), sub-format 2's code-length table and the plane's 23 bytes of headers,
  plus plane w - 1 (the byte below, without its K top bits): Huffman-coded where that is
  below 1000/1024 of its packed size, else packed; beside it the order-0 entropy of both
  (no table, no header); and the sum of each chunk's smallest K (up to 2, as sub-format
  2 allows, and up to 3);
- ``ans K`` (K = 0..2): plane 0 with frequencies normalised to 4096 (12 bits), at
  sum(count * log2(4096 / f)) bits (what tANS / rANS reach within ~0.01%; the prototype
  ``benchmarks/proto/tans_plane0.c`` measures it), a frequency table (per symbol: its gap
  from the last and its frequency's change from the last, Elias-gamma, 1 bit for a gap
  of 1), 8 first states of 12 bits (~2 bytes each with the stream's padding) and 19
  bytes of headers, plus plane w - 1 as in ``huffman K``;
- ``pairs``: consecutive chunks merged in pairs and encoded as now (half the objects:
  the store spends ~135 bytes an object, its 44-byte record header, 52-byte index entry
  and ~39 bytes in the file's chunk list).

Sizes of plane 0 and plane w - 1 together, bytes; the other planes (fp32) as now.
``--dump DIR`` writes plane 0 (K = 0) of every chunk, ``<kind>.sym`` (u32 length, then
the bytes, per chunk), the input of ``tans_plane0.c``::

    .venv/bin/python benchmarks/bench_codec_headroom.py --bench-python .venv-bench/bin/python
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ["MODELVAULT_FLOAT_CODEC"] = "1"

HUF_MAX = 12
PLANE_HEAD = 5 + 7 * 2 + 4  # T, first, last; 7 u16 stream lengths; ~4 bytes of padding
ANS_BITS = 12
ANS_HEAD = 5 + 7 * 2 + 8 * 2  # as above; 8 first states of 12 bits, each stream padded
DTYPE = {"fp32": "F32", "bf16": "BF16", "fp16": "F16"}


def _huf_lengths(hist: np.ndarray) -> np.ndarray:
    """The code lengths ``huf_lengths`` (``_floatcodec.c``) builds from ``hist``."""
    lens = np.zeros(len(hist), np.int64)
    items = sorted((int(hist[s]), int(s)) for s in np.nonzero(hist)[0])
    m = len(items)
    if m < 2:
        return lens
    weight = [c for c, _ in items] + [0] * m
    parent = [0] * (2 * m)
    leaf, node, end = 0, m, m
    for _ in range(m - 1):
        pick = []
        for _j in range(2):
            if leaf < m and (node >= end or weight[leaf] <= weight[node]):
                pick.append(leaf)
                leaf += 1
            else:
                pick.append(node)
                node += 1
        weight[end] = weight[pick[0]] + weight[pick[1]]
        parent[pick[0]] = parent[pick[1]] = end
        end += 1
    depth = [0] * (2 * m)
    for i in range(end - 2, -1, -1):
        depth[i] = depth[parent[i]] + 1
    num = [0] * (HUF_MAX + 2)
    for i in range(m):
        num[min(depth[i], HUF_MAX)] += 1
    total = sum(num[i] << (HUF_MAX - i) for i in range(1, HUF_MAX + 1))
    while total > 1 << HUF_MAX:  # make the clamped code complete again (as miniz)
        num[HUF_MAX] -= 1
        for i in range(HUF_MAX - 1, 0, -1):
            if num[i]:
                num[i] -= 1
                num[i + 1] += 2
                break
        total -= 1
    at = m - 1
    for length in range(1, HUF_MAX + 1):
        for _ in range(num[length]):
            lens[items[at][1]] = length
            at -= 1
    return lens


def _table_bytes(lens: np.ndarray) -> int:
    """Bytes of sub-format 2's code-length bit string (``huf_table``)."""
    present = np.nonzero(lens)[0]
    s, last, prev, bits = int(present[0]), int(present[-1]), int(lens.max()), 0
    while s <= last:
        length = int(lens[s])
        if not length:
            run = 0
            while s + run <= last and not lens[s + run] and run < 17:
                run += 1
            bits, s = (bits + 11, s + run) if run >= 2 else (bits + 3, s + 1)
            continue
        bits += 1 if length == prev else 3 if abs(length - prev) == 1 else 7
        prev, s = length, s + 1
    return (bits + 7) // 8


def _huffman_bytes(hist: np.ndarray, raw: int) -> int:
    """A Huffman plane's bytes (headers and table included), or ``raw`` if that is not
    above 1000/1024 of them (the encoder's HUF_KEEP)."""
    lens = _huf_lengths(hist)
    if not lens.any():
        return min(3, raw)
    coded = int((hist * lens).sum() + 7) // 8 + _table_bytes(lens) + PLANE_HEAD
    return coded if coded * 1024 < 1000 * raw else raw


def _gamma(x: int) -> int:
    return 2 * (x.bit_length() - 1) + 1


def _ans_bytes(hist: np.ndarray) -> float:
    """Plane bytes at 12-bit normalised frequencies, with table and headers."""
    present = np.nonzero(hist)[0]
    if len(present) < 2:
        return 3.0
    total, scale = int(hist.sum()), 1 << ANS_BITS
    freq = {int(s): max(1, round(int(hist[s]) * scale / total)) for s in present}
    while (excess := sum(freq.values()) - scale) != 0:  # least costly unit moves
        step = 1 if excess < 0 else -1
        movable = [s for s in freq if freq[s] + step >= 1]
        best = min(movable, key=lambda s: -hist[s] * math.log2((freq[s] + step) / freq[s]))
        freq[best] += step
    bits = sum(int(hist[s]) * (ANS_BITS - math.log2(f)) for s, f in freq.items())
    table, prev, last_f = 0, -1, 0
    for s in sorted(freq):
        table += 1 if s - prev == 1 else 1 + _gamma(s - prev)
        d = freq[s] - last_f
        table += _gamma(2 * d if d > 0 else 1 - 2 * d)
        prev, last_f = s, freq[s]
    return bits / 8 + table / 8 + ANS_HEAD


def _entropy_bytes(hist: np.ndarray) -> float:
    c = hist[hist > 0].astype(np.float64)
    n = c.sum()
    return float((n * np.log2(n) - (c * np.log2(c)).sum()) / 8)


def _rotated(chunk: bytes, w: int) -> np.ndarray:
    """The chunk's elements rotated left by 1, at the skip whose plane 0 is smallest."""
    best: tuple[float, np.ndarray] | None = None
    for skip in range(min(w, len(chunk))):
        n = (len(chunk) - skip) // w
        a = np.frombuffer(chunk, np.uint8, count=n * w, offset=skip)
        x = a.view(f"<u{w}").astype(np.uint64)
        bits = np.uint64(8 * w)
        y = ((x << np.uint64(1)) | (x >> (bits - np.uint64(1)))) & np.uint64((1 << 8 * w) - 1)
        e = _entropy_bytes(np.bincount((y >> (bits - np.uint64(8))).astype(np.int64)))
        if best is None or e < best[0]:
            best = (e, y)
    assert best is not None
    return best[1]


def headroom(path: Path, kind: str, dump: Path | None) -> dict[str, float]:
    from modelvault.core import codec, floats
    from modelvault.core.chunking import chunk_file

    w = 4 if kind == "fp32" else 2
    chunks = [bytes(c) for c in chunk_file(path)]
    tot: Counter[str] = Counter()
    out = (dump / f"{kind}.sym").open("wb") if dump else None
    for c in chunks:
        head, payload = codec.encode(c, dtype=DTYPE[kind])
        tot["raw"] += len(c)
        tot["now payload"] += len(payload)
        if head == codec.Codec.FLOAT:
            skip, mask = payload[1], payload[2]
            lengths = struct.unpack_from(f"<{w}I", payload, 5)
            tot["now planes 0 and w-1"] += lengths[0] + lengths[-1]
            tot["now fixed: payload header"] += 5 + 4 * w
            at = 5 + 4 * w + skip
            for i, length in enumerate(lengths):
                src = memoryview(payload)[at : at + length]
                at += length
                if mask >> i & 1 and src[0]:
                    first, last = struct.unpack_from("<HH", src, 1)
                    _, end = floats._table_v2(src, first, last, src[0])
                    tot["now fixed: plane headers and stream lengths"] += 5 + 7 * 2
                    tot["now fixed: code-length tables"] += end - 5
        else:
            tot["now planes 0 and w-1"] += len(payload)  # (none on these files)
        y = _rotated(c, w)
        n = len(y)
        bits = 8 * w
        per_k = []
        for k in range(4):
            hist = np.bincount((y >> np.uint64(bits - 8 - k)).astype(np.int64))
            low = np.bincount(((y >> np.uint64(bits - 16)) & np.uint64(255 >> k)).astype(np.int64))
            packed = (n * (8 - k) + 7) // 8
            narrow = _huffman_bytes(low, packed)
            per_k.append(_huffman_bytes(hist, 1 << 62) + narrow)
            tot[f"huffman K={k}: its plane 0 tables"] += _table_bytes(_huf_lengths(hist))
            tot[f"huffman K={k}"] += per_k[-1]
            tot[f"entropy K={k}"] += _entropy_bytes(hist) + min(_entropy_bytes(low), packed)
            if k <= 2:
                tot[f"ans K={k}"] += _ans_bytes(hist) + narrow
        tot["huffman best K<=2 a chunk"] += min(per_k[:3])
        tot["huffman best K<=3 a chunk"] += min(per_k)
        if out:
            top = (y >> np.uint64(bits - 8)).astype(np.uint8)
            out.write(struct.pack("<I", n) + top.tobytes())
    if out:
        out.close()
    for i in range(0, len(chunks), 2):
        tot["pairs payload"] += len(codec.encode(b"".join(chunks[i : i + 2]), dtype=DTYPE[kind])[1])
    tot["objects"] = len(chunks)
    tot["pair objects"] = (len(chunks) + 1) // 2
    return dict(tot)


def main(argv: list[str] | None = None) -> None:
    from bench_codec import convert, find_minilm

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench-python", help="python of the benchmark venv (the weights)")
    ap.add_argument("--minilm-zip", help="all_minilm_l6_v2/model.zip, if not in that venv")
    ap.add_argument("--kinds", default="fp16,bf16,fp32")
    ap.add_argument("--dump", type=Path, help="write plane 0 of every chunk here")
    args = ap.parse_args(argv)
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(find_minilm(args.bench_python, args.minilm_zip)) as z:
        source = z.read("model.safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        paths = convert(source, Path(tmp))
        for kind in args.kinds.split(","):
            r = headroom(paths[kind], kind, args.dump)
            base = r["now planes 0 and w-1"]
            head = f"MiniLM {kind}: {r['objects']} chunks, raw {r['raw']}"
            print(f"\n{head}, payloads {r['now payload']}")
            print("| planes 0 and w-1 | bytes | vs now |")
            print("|---|---|---|")
            for key in sorted(r):
                if key.startswith(("huffman", "entropy", "ans", "now planes")) and not key.endswith(
                    "tables"
                ):
                    print(f"| {key} | {r[key]:.0f} | {r[key] - base:+.0f} |")
            for key in sorted(r):
                if key.startswith("now fixed") or key.endswith("tables"):
                    print(f"| {key} | {r[key]:.0f} | |")
            print(
                f"| pairs: payloads, objects | {r['pairs payload']:.0f}, {r['pair objects']} "
                f"| {r['pairs payload'] - r['now payload']:+.0f} |"
            )


if __name__ == "__main__":
    main()
