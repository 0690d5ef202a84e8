"""What the float codec writes by default (no ``MODELVAULT_FLOAT_CODEC``): only chunks
known to be bf16 (a safetensors file of bf16 tensors); fp32 and fp16 stay as before
(docs/format.md, section 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_float_ingest import _safetensors, _save

from modelvault.core import codec
from modelvault.core.codec import Codec


@pytest.fixture(autouse=True)
def default_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The setting of a process started without MODELVAULT_FLOAT_CODEC (which
    test_the_environment_switches_it checks in a fresh process)."""
    monkeypatch.setattr(codec, "FLOAT_WRITE", False)
    monkeypatch.setattr(codec, "FLOAT_HINTED", frozenset({"BF16"}))


def _bf16(n: int) -> bytes:
    fp32 = np.random.default_rng(7).normal(0, 0.02, n).astype("<f4").view("<u4")
    return bytes((((fp32 + 0x7FFF + ((fp32 >> 16) & 1)) >> 16).astype("<u2")).tobytes())


def test_bf16_safetensors_is_stored_as_float_planes_by_default(tmp_path: Path) -> None:
    data = _safetensors("BF16", _bf16(600_000))
    heads = _save(tmp_path, "m.safetensors", data)  # reads back bit-exact inside
    assert len(heads) > 3
    floats = [head for how, head in heads if how == Codec.FLOAT]
    assert len(floats) >= len(heads) - 1, heads  # the header's chunk may go otherwise
    assert all(head[0] == 2 for head in floats)  # width 2


@pytest.mark.parametrize("dtype", ["F32", "F16"])
def test_fp32_and_fp16_are_not_float_coded_by_default(tmp_path: Path, dtype: str) -> None:
    values = np.random.default_rng(8).normal(0, 0.02, 300_000)
    raw = values.astype("<f4" if dtype == "F32" else "<f2").tobytes()
    heads = _save(tmp_path, "m.safetensors", _safetensors(dtype, raw))
    assert len(heads) > 3
    assert all(how != Codec.FLOAT for how, _ in heads), heads


@pytest.mark.parametrize(
    ("setting", "hinted", "write"),
    [
        (None, {"BF16"}, False),
        ("", {"BF16"}, False),
        ("0", set(), False),
        ("1", {"BF16"}, True),
        ("bf16, F16,F32", {"BF16", "F16", "F32"}, False),
        ("F16", {"F16"}, False),
        ("F8,F16", {"BF16"}, False),  # a name it does not know: warned, the default kept
    ],
)
def test_the_environment_switches_it(setting: str | None, hinted: set[str], write: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MODELVAULT_FLOAT_CODEC"}
    if setting is not None:
        env["MODELVAULT_FLOAT_CODEC"] = setting
    code = "from modelvault.core import codec; print(sorted(codec.FLOAT_HINTED), codec.FLOAT_WRITE)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split("\n")[0] == f"{sorted(hinted)} {write}"
    warned = "is not 0, 1 or a list of BF16, F16, F32: ignored" in done.stderr
    assert warned == (setting == "F8,F16"), done.stderr
