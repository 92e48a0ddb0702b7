"""Plots of the report, drawn from the report dict alone, as inline SVG (no files, no fonts to fetch).

Every function takes the report dict and returns an `<svg>` string, or None when the manifest has
nothing to show. Output is deterministic (fixed SVG id salt, no date), so the HTML is reproducible.
Each mark that shows a value (a bar, a histogram) carries the SVG id `<plot>-mark-<n>`, so a reader of
the page (or the browser test) can tell a plot that shows its data from one that only draws axes.
"""

from __future__ import annotations

import io
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import colors as mcolors
from matplotlib.patches import StepPatch

plt.rcParams.update({"svg.hashsalt": "facecorpus-report", "svg.fonttype": "none", "font.size": 9,
                     "axes.spines.top": False, "axes.spines.right": False})
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)
SPLIT_COLORS = {"train": "#4c78a8", "val": "#f58518", "test": "#e45756"}


def to_svg(fig, plot: str) -> str:
    """The figure as SVG, every data mark (bar, histogram) given the id `<plot>-mark-<n>`."""
    marks = [p for ax in fig.axes for c in ax.containers for p in c] + [
        a for ax in fig.axes for a in ax.patches if isinstance(a, StepPatch)]
    for n, artist in enumerate(marks):
        artist.set_gid(f"{plot}-mark-{n}")
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    # Drop the XML prolog, DOCTYPE and RDF metadata: the SVG sits inside HTML and names nothing outside it.
    return _METADATA.sub("", text[text.index("<svg"):])


def _bars(ax, labels, series: dict[str, list[float]], colors=None):
    """Grouped vertical bars: one group per label, one bar per series."""
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        ax.bar(xs, values, width, label=name, color=(colors or {}).get(name))
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    if len(series) > 1:
        ax.legend(fontsize=8, frameon=False)


def _share(values: list[float]) -> list[float]:
    total = sum(values)
    return [v / total if total else 0.0 for v in values]


def records_vs_paper(report: dict) -> str | None:
    rows = report["table1"]
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [r["dataset"] for r in rows]
    _bars(ax, labels, {"this manifest": [r["records"] for r in rows], "Talk2Face Table 1": [r["paper"] for r in rows]},
          {"this manifest": "#4c78a8", "Talk2Face Table 1": "#bab0ac"})
    # "clip", not "mask": a bar starts at 0, and masking that corner left every bar without a body (an
    # empty plot in the browser). Clipped, a bar runs down off the axis; a count of 0 still shows none.
    ax.set_yscale("log", nonpositive="clip")
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # clear of the tallest bars
    ax.set_ylabel("records (log)")
    ax.set_title("Records per dataset beside the paper's Table 1")
    return to_svg(fig, "records")


def splits(report: dict) -> str | None:
    by = report["splits"]["by_dataset"]
    if not by:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = list(by)
    bottom = [0.0] * len(names)
    for split, color in SPLIT_COLORS.items():
        vals = [by[d].get(split, {}).get("records", 0) for d in names]
        ax.bar(names, vals, bottom=bottom, color=color, label=split)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("records")
    ax.set_title("Records per split (after harmonization)")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(frameon=False, fontsize=8)
    return to_svg(fig, "splits")


def ages(report: dict) -> str | None:
    data = report["axes"]["ages"]
    binned = {d: e["binned"] for d, e in data["datasets"].items() if e["binned"]}
    scales = {d: e["values"] for d, e in data["datasets"].items() if e["scale"] == "scale"}
    if not binned and not scales:
        return None
    panels = (1 if binned else 0) + len(scales)
    fig, axes = plt.subplots(panels, 1, figsize=(8, 3.2 * panels), squeeze=False)
    row = 0
    if binned:
        _bars(axes[row][0], data["bins"], {d: _share(v) for d, v in binned.items()})
        axes[row][0].set_ylabel("share of the dataset's records")
        axes[row][0].set_title("Age on one axis (years binned to FairFace's bins)")
        row += 1
    for dataset, values in scales.items():
        ax = axes[row][0]
        ax.bar([str(v) for v, _ in values], _share([n for _, n in values]), color="#72b7b2")
        ax.set_title(f"{dataset} age: its own scale (not years)")
        ax.set_ylabel("share")
        row += 1
    fig.tight_layout()
    return to_svg(fig, "ages")


def expressions(report: dict) -> str | None:
    data = report["axes"]["expressions"]
    if not data["datasets"]:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.5))
    _bars(ax, data["order"], {d: _share(e["counts"] + [sum(e["other"].values())])[:-1] for d, e in data["datasets"].items()})
    ax.set_ylabel("share of the dataset's records")
    ax.set_title("Expressions on a common axis")
    return to_svg(fig, "expressions")


def categories(report: dict, axis: str, title: str) -> str | None:
    data = report["axes"][axis]
    if not data:
        return None
    values = sorted({v for pairs in data.values() for v, _ in pairs}, key=str)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    _bars(ax, [str(v) for v in values], {d: _share([dict(map(tuple, p)).get(v, 0) for v in values]) for d, p in data.items()})
    ax.set_ylabel("share")
    ax.set_title(title)
    return to_svg(fig, axis)


def _css(name: str) -> str:
    """FS2K colour names are CSS3 names written as words ('rosy brown' -> 'rosybrown')."""
    css = str(name).replace(" ", "")
    return css if mcolors.is_color_like(css) else "#999999"


def fs2k_colors(report: dict) -> str | None:
    keys = [(d, k, pairs) for d, attrs in report["axes"]["colors"].items() for k, pairs in attrs.items()]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 4), squeeze=False)
    for ax, (dataset, key, pairs) in zip(axes[0], keys):
        pairs = pairs[::-1]
        ax.barh([str(v) for v, _ in pairs], [n for _, n in pairs], color=[_css(v) for v, _ in pairs], edgecolor="#555555")
        ax.set_title(f"{dataset} {key}")
    fig.tight_layout()
    return to_svg(fig, "colors")


def lengths(report: dict) -> str | None:
    data = report["lengths"]
    kinds = list(data["wordpiece"])
    if not kinds:
        return None
    fig, axes = plt.subplots(len(kinds), 2, figsize=(9, 2.8 * len(kinds)), squeeze=False)
    for row, kind in enumerate(kinds):
        for col, unit in enumerate(("words", "wordpiece")):
            ax, dist = axes[row][col], data[unit][kind]
            hist = dict(map(tuple, dist["hist"]))
            top = max(hist)
            # One stairs artist instead of one bar per length: fast to draw whatever the longest text.
            ax.stairs([hist.get(x, 0) for x in range(top + 1)], [x - 0.5 for x in range(top + 2)], fill=True, color="#4c78a8")
            if unit == "wordpiece":
                ax.axvline(data["budget"] + 0.5, color="#e45756", linestyle="--", label=f"budget {data['budget']}")
                ax.legend(frameon=False, fontsize=8)
            ax.set_title(f"{kind}: length in {'WordPiece ids' if unit == 'wordpiece' else 'words'}")
            ax.set_ylabel("records")
    fig.tight_layout()
    return to_svg(fig, "lengths")


def shards(report: dict) -> str | None:
    data = report["shards"]
    if not data or not data["by_split_kind"]:
        return None
    names = list(data["by_split_kind"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    axes[0].bar(names, [data["by_split_kind"][n]["samples"] for n in names], color="#4c78a8")
    axes[0].set_title("samples per split/kind")
    axes[1].bar(names, [data["by_split_kind"][n]["bytes"] / 2**20 for n in names], color="#f58518")
    axes[1].set_title("MiB per split/kind")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return to_svg(fig, "shards")


def all_plots(report: dict) -> dict[str, str | None]:
    return {
        "records": records_vs_paper(report), "splits": splits(report), "ages": ages(report),
        "expressions": expressions(report), "gender": categories(report, "gender", "Gender per dataset"),
        "race": categories(report, "race", "Race per dataset"), "colors": fs2k_colors(report),
        "lengths": lengths(report), "shards": shards(report),
    }
