"""Draw the benchmark pictures of docs/benchmarks.md from the committed results (issue 22).

Reads ``benchmarks/peers/results.json`` (written by ``benchmarks/peers/bench_peers.py``)
and writes into ``docs/img/``:

- ``peers-headline.png``: the model family: stored bytes per tool, and the seconds to
  save, push and pull one more version (the README's picture);
- ``peers-stored.png``: local and remote stored bytes per tool, for each workload;
- ``peers-times.png``: save / push / pull seconds per tool, for each workload.

A results file marked as a smoke run is drawn with "SMOKE RUN, NOT FIGURES" in every
title. The output is deterministic: fixed font (DejaVu Sans, bundled with matplotlib),
sizes and DPI, no timestamp or software name in the PNG metadata, so the same results
and the same (pinned) matplotlib give the same bytes. Run by ``make plots`` in
``.venv-plots`` (matplotlib is never a modelvault dependency).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullFormatter

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "peers" / "results.json"
OUT = ROOT / "docs" / "img"
MIB = 1 << 20
DPI = 100
METADATA: dict[str, str | None] = {"Software": None}
# One colour per tool, modelvault first and strongest.
COLOURS = {
    "modelvault": "#d62728",
    "cp": "#7f7f7f",
    "restic": "#1f77b4",
    "borg": "#2ca02c",
    "casync": "#9467bd",
    "dvc": "#8c564b",
    "bentoml": "#ff7f0e",
}
STEPS = [
    ("save_new_s", "save new"),
    ("save_version_s", "save a version"),
    ("push_new_s", "push new"),
    ("push_version_s", "push a version"),
    ("pull_s", "pull (to files)"),
]
WORKLOAD_TITLES = {"family": "model family", "minilm": "all-MiniLM-L6-v2"}


def style() -> None:
    """Fixed fonts and sizes, whatever the user's matplotlibrc says."""
    plt.rcdefaults()
    plt.rcParams.update(
        {
            "font.family": "DejaVu Sans",
            "font.size": 9,
            "axes.titlesize": 10,
            "figure.dpi": DPI,
            "savefig.dpi": DPI,
            "svg.hashsalt": "modelvault",
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )


def smoke_prefix(results: dict[str, Any]) -> str:
    return "SMOKE RUN, NOT FIGURES: " if results.get("kind") != "measurement" else ""


def tool_label(name: str, tools: dict[str, Any]) -> str:
    """The tool's name, starred when its push is a stand-in (rsync, cp, export)."""
    return f"{name}*" if "push" in tools.get(name, {}).get("lacks", {}) else name


def measured(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The workloads that were not skipped, without the tools that failed in them."""
    out = {}
    for name, wl in results["workloads"].items():
        if "results" in wl:
            ok = {t: r for t, r in wl["results"].items() if "failed" not in r}
            out[name] = {**wl, "results": ok}
    return out


STEP_COLOURS = {
    "save_new_s": "#08519c",
    "save_version_s": "#6baed6",
    "push_new_s": "#006d2c",
    "push_version_s": "#74c476",
    "pull_s": "#fd8d3c",
}


def stored_axes(ax: Any, wl: dict[str, Any], tools: dict[str, Any], title: str) -> None:
    """Horizontal bars: local and remote MiB per tool; lines: raw and reference bytes."""
    names = list(wl["results"])
    ys = range(len(names))
    local = [wl["results"][n]["stored_bytes"] / MIB for n in names]
    remote = [wl["results"][n]["remote_bytes"] / MIB for n in names]
    colours = [COLOURS.get(n, "#333333") for n in names]
    ax.barh([y - 0.2 for y in ys], local, height=0.38, color=colours)
    ax.barh([y + 0.2 for y in ys], remote, height=0.38, color=colours, alpha=0.45, hatch="//")
    for y, value in zip(ys, local, strict=True):
        ax.text(value, y - 0.2, f" {value:.1f}", va="center", fontsize=7)
    raw = sum(wl["folder_bytes"]) / MIB
    ref = wl["reference_bytes"] / MIB
    handles = [
        Patch(facecolor="#999999", label="local repository"),
        Patch(facecolor="#999999", alpha=0.45, hatch="//", label="remote"),
        Line2D([], [], color="black", linestyle=":", label=f"all versions as files ({raw:.0f})"),
    ]
    ax.axvline(raw, color="black", linestyle=":", linewidth=1)
    if wl["versions"] > 1:
        ax.axvline(ref, color="black", linestyle="--", linewidth=1)
        handles.append(Line2D([], [], color="black", linestyle="--",
                              label=f"base + changed tensors ({ref:.0f})"))  # fmt: skip
    ax.set_yticks(list(ys), [tool_label(n, tools) for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("MiB stored")
    ax.set_title(title)
    ax.set_xlim(0, max([*local, *remote, raw]) * 1.15)
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2),
              ncol=2, frameon=False)  # fmt: skip


def times_axes(
    ax: Any, wl: dict[str, Any], tools: dict[str, Any], steps: list[Any], title: str
) -> None:
    """Grouped horizontal bars, log scale: seconds per step per tool."""
    names = list(wl["results"])
    steps = [(k, label) for k, label in steps if any(wl["results"][n][k] for n in names)]
    height = 0.8 / len(steps)
    for i, (key, label) in enumerate(steps):
        ys = [y - 0.4 + height * (i + 0.5) for y in range(len(names))]
        vals = [wl["results"][n][key] or 0.0 for n in names]
        ax.barh(ys, vals, height=height * 0.9, color=STEP_COLOURS[key], label=label)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.1, 1, 10
    ax.xaxis.set_minor_formatter(NullFormatter())  # less than a decade: no crowded labels
    ax.set_yticks(list(range(len(names))), [tool_label(n, tools) for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("seconds (median, log scale; start-up of the command included)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3,
              frameon=False)  # fmt: skip


def footnote(fig: Any, results: dict[str, Any]) -> None:
    """What the stars mean and what the run was, without a date (kept out of the image)."""
    starred = [n for n, t in results["tools"].items() if "push" in t.get("lacks", {})]
    missing = [n for n, t in results["tools"].items() if "missing" in t]
    m = results["machine"]
    text = f"{m['nproc']} CPUs, {m['ram_gib']:g} GiB RAM, {m['workdir_filesystem']}; " \
           f"{results['runs']} run(s)."  # fmt: skip
    if starred:
        text += f"  * no native push: {', '.join(starred)} (see docs/benchmarks.md)."
    if missing:
        text += f"  Not installed: {', '.join(missing)}."
    failed = sorted(
        {t for wl in results["workloads"].values() for t, r in wl.get("results", {}).items()
         if "failed" in r}
    )  # fmt: skip
    if failed:
        text += f"  Failed (see results.json): {', '.join(failed)}."
    fig.text(0.01, -0.02, text, fontsize=7, color="#444444")


def save(fig: Any, name: str, out: Path) -> Path:
    path = out / name
    fig.savefig(path, format="png", metadata=METADATA, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return path


def headline(results: dict[str, Any], out: Path) -> Path | None:
    """The family workload: stored bytes, and the seconds for one more version."""
    wl = measured(results).get("family")
    if wl is None:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    prefix = smoke_prefix(results)
    stored_axes(left, wl, results["tools"], f"{prefix}stored bytes, {wl['versions']} versions")
    steps = [("save_version_s", "save a version"), ("push_version_s", "push a version"),
             ("pull_s", "pull (to files)")]  # fmt: skip
    times_axes(right, wl, results["tools"], steps, f"{prefix}one more version")
    fig.suptitle(
        f"{WORKLOAD_TITLES['family']}: {wl['size_mib']} MiB base, ~10% of the tensors "
        "changed per version",
        fontsize=10,
    )
    footnote(fig, results)
    fig.tight_layout()
    return save(fig, "peers-headline.png", out)


def stored(results: dict[str, Any], out: Path) -> Path | None:
    wls = measured(results)
    if not wls:
        return None
    fig, axes = plt.subplots(1, len(wls), figsize=(5 * len(wls), 3.8), squeeze=False)
    for ax, (name, wl) in zip(axes[0], wls.items(), strict=True):
        title = f"{smoke_prefix(results)}{WORKLOAD_TITLES.get(name, name)}"
        stored_axes(ax, wl, results["tools"], title)
    footnote(fig, results)
    fig.tight_layout()
    return save(fig, "peers-stored.png", out)


def times(results: dict[str, Any], out: Path) -> Path | None:
    wls = measured(results)
    if not wls:
        return None
    fig, axes = plt.subplots(1, len(wls), figsize=(5.5 * len(wls), 4.8), squeeze=False)
    for ax, (name, wl) in zip(axes[0], wls.items(), strict=True):
        title = f"{smoke_prefix(results)}{WORKLOAD_TITLES.get(name, name)}"
        times_axes(ax, wl, results["tools"], STEPS, title)
    footnote(fig, results)
    fig.tight_layout()
    return save(fig, "peers-times.png", out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    style()
    for draw in (headline, stored, times):
        path = draw(results, args.out)
        if path:
            print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
