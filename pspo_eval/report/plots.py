"""The report's figures: PNG bytes drawn with matplotlib's object API on the Agg canvas.

No pyplot: figures are built as ``matplotlib.figure.Figure`` objects and saved directly, so nothing
depends on a display, a global backend or pyplot's figure registry (safe in CI and in tests). PNGs
are drawn at a modest DPI without timestamps in their metadata, so the demo report stays small and
re-running it on the same records gives the same bytes.

Every plotted number comes from the same summaries the tables print.
"""

from __future__ import annotations

import io
import math
from typing import Any

DPI = 100
# Colour-blind-friendly palette (Okabe & Ito 2008); a model keeps its colour in every figure.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]


def color_map(names: list[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig


def _style(ax) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(True, axis="y", color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)


def to_png(fig) -> bytes:
    """The figure as PNG, reduced to a 256-colour palette (about a third of the bytes, no visible change for
    line plots, bars and heat maps), so the committed demo report stays small."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        return buf.getvalue()
    image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    small = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def accuracy_bars(datasets: list[str], titles: dict[str, str], models: list[str],
                  values: dict[tuple[str, str], tuple[float, float, float]], colors: dict[str, str]) -> bytes:
    """Greedy accuracy per dataset as grouped bars with 95% CI whiskers (values: (acc, low, high) fractions)."""
    fig = _figure(max(7.5, 1.6 * len(datasets) + 0.5 * len(models)), 3.2)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(models))
    for i, model in enumerate(models):
        xs, ys, err_lo, err_hi = [], [], [], []
        for j, d in enumerate(datasets):
            v = values.get((model, d))
            if v is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(100 * v[0])
            err_lo.append(100 * (v[0] - v[1]))
            err_hi.append(100 * (v[2] - v[0]))
        ax.bar(xs, ys, width * 0.92, color=colors[model], label=model)
        ax.errorbar(xs, ys, yerr=[err_lo, err_hi], fmt="none", ecolor="#374151", elinewidth=0.9, capsize=2)
    ax.set_xticks(range(len(datasets)), [titles[d] for d in datasets])
    ax.set_ylabel("greedy pass@1 (%)", fontsize=9)
    ax.set_ylim(0, 100)
    _style(ax)
    ax.legend(fontsize=8, frameon=False, ncols=min(4, len(models)), loc="upper right")
    return to_png(fig)


def _grid(n: int, ncols: int = 3) -> tuple[int, int]:
    ncols = min(ncols, n)
    return math.ceil(n / ncols), ncols


def temperature_curves(datasets: list[str], titles: dict[str, str], models: list[str],
                       series: dict[tuple[str, str], list[dict[str, Any]]], colors: dict[str, str],
                       metric: str, ylabel: str, *, band: bool = False) -> bytes:
    """One panel per dataset, one line per model: ``metric`` of each point (a dict) versus temperature.

    Points are dicts with "t" and the metric; with ``band`` the 95% CI ("low", "high") is shaded.
    """
    rows, cols = _grid(len(datasets), 4)
    fig = _figure(2.6 * cols + 0.6, 2.3 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, d in enumerate(datasets):
        ax = axes[k // cols][k % cols]
        for model in models:
            pts = [p for p in series.get((model, d), []) if p.get(metric) is not None]
            if not pts:
                continue
            xs = [p["t"] for p in pts]
            ys = [p[metric] for p in pts]
            ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.6, color=colors[model], label=model)
            if band and all("low" in p for p in pts):
                ax.fill_between(xs, [p["low"] for p in pts], [p["high"] for p in pts], color=colors[model],
                                alpha=0.15, linewidth=0)
        ax.set_title(titles[d], fontsize=10)
        ax.set_xlabel("temperature", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        _style(ax)
    for k in range(len(datasets), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(5, len(labels)), fontsize=8, frameon=False)
    return to_png(fig)


def heatmaps(models: list[str], rows: list[str], cols: list[str],
             cells: dict[str, dict[tuple[str, str], tuple[int, int]]], title: str) -> bytes:
    """One subject × level accuracy heat map per model; each cell shows accuracy % and n."""
    n = len(models)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = _figure(min(4.4 * ncols + 1.0, 13.5), (0.42 * len(rows) + 1.3) * nrows + 0.3)
    fig.get_layout_engine().set(wspace=0.04)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    image = None
    for k, model in enumerate(models):
        ax = axes[k // ncols][k % ncols]
        data = [[math.nan] * len(cols) for _ in rows]
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                hit = cells[model].get((r, c))
                if hit and hit[1]:
                    data[i][j] = 100 * hit[0] / hit[1]
        image = ax.imshow(data, cmap="Blues", vmin=0, vmax=100, aspect="auto")
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                hit = cells[model].get((r, c))
                if not hit or not hit[1]:
                    continue
                value = 100 * hit[0] / hit[1]
                ax.text(j, i, f"{value:.0f}\nn={hit[1]}", ha="center", va="center", fontsize=7,
                        color="white" if value > 60 else "#111827")
        ax.set_xticks(range(len(cols)), cols, fontsize=8)
        ax.set_yticks(range(len(rows)), rows if k % ncols == 0 else [""] * len(rows), fontsize=8)
        ax.set_xlabel("level", fontsize=8)
        ax.set_title(model, fontsize=9)
        for spine in ax.spines.values():
            spine.set_visible(False)
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.8, pad=0.01)
        bar.set_label("accuracy (%)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    return to_png(fig)


def judge_scores(panels: list[tuple[str, list[str], dict[tuple[str, str], tuple[float, float, float]], tuple | None]],
                 models: list[str], colors: dict[str, str]) -> bytes:
    """Horizontal grouped bars, one panel per (judge, rubric): mean score per criterion and model with 95% CIs.

    ``panels``: (title, criteria, {(model, criterion): (mean, low, high)}, scale (low, high) or None).
    """
    ncols = min(2, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    most = max(len(p[1]) for p in panels)
    fig = _figure(5.4 * ncols + 0.4, nrows * (0.6 + 0.28 * most * max(1, len(models)) ** 0.7) + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, (title, criteria, values, scale) in enumerate(panels):
        ax = axes[k // ncols][k % ncols]
        shown = [m for m in models if any((m, c) in values for c in criteria)]
        height = 0.8 / max(1, len(shown))
        for i, model in enumerate(shown):
            ys, xs, lo, hi = [], [], [], []
            for j, c in enumerate(criteria):
                v = values.get((model, c))
                if v is None:
                    continue
                ys.append(j - 0.4 + height * (i + 0.5))
                xs.append(v[0])
                lo.append(v[0] - v[1])
                hi.append(v[2] - v[0])
            ax.barh(ys, xs, height * 0.9, color=colors.get(model, "#6b7280"), label=model)
            ax.errorbar(xs, ys, xerr=[lo, hi], fmt="none", ecolor="#374151", elinewidth=0.9, capsize=2)
        ax.set_yticks(range(len(criteria)), [c.replace("_", " ") for c in criteria], fontsize=8)
        ax.invert_yaxis()
        if scale:
            ax.set_xlim(0, scale[1])
        ax.set_xlabel("mean score", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.spines["top"].set_visible(False)
        ax.spines["right"].set_visible(False)
        ax.grid(True, axis="x", color="#e5e7eb", linewidth=0.8)
        ax.set_axisbelow(True)
        ax.tick_params(labelsize=8)
    for k in range(len(panels), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    _shared_legend(fig)
    return to_png(fig)


def _shared_legend(fig) -> None:
    handles, labels = [], []
    for ax in fig.axes:
        for h, lbl in zip(*ax.get_legend_handles_labels()):
            if lbl not in labels:
                handles.append(h)
                labels.append(lbl)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(5, len(labels)), fontsize=8, frameon=False)


def training_curves(runs: list, panels: list[tuple[str, str, tuple[str, str] | None]], colors: dict[str, str]) -> bytes:
    """A grid of trainer metrics versus optimizer step, one line per training run (method).

    Long runs are noisy step to step: the raw values are drawn faintly and a centred moving average
    (window ≈ 5% of the steps) on top; short runs are drawn as they are.
    """
    rows, cols = _grid(len(panels), 3)
    fig = _figure(3.3 * cols + 0.4, 2.4 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, (key, title, band) in enumerate(panels):
        ax = axes[k // cols][k % cols]
        for run in runs:
            xs, ys = run.series(key)
            if not ys:
                continue
            color = colors[run.label]
            window = max(1, len(ys) // 20)
            if window >= 3:
                ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
                smooth = _moving_average(ys, window)
                ax.plot(xs, smooth, color=color, linewidth=1.6, label=run.label)
            else:
                ax.plot(xs, ys, color=color, linewidth=1.6, marker="o" if len(ys) < 15 else None, markersize=3,
                        label=run.label)
            for extra in band or ():
                bx, by = run.series(extra)
                if by:
                    ax.plot(bx, _moving_average(by, window) if window >= 3 else by, color=color, linewidth=0.9,
                            linestyle="--", alpha=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer step", fontsize=8)
        _style(ax)
    for k in range(len(panels), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    _shared_legend(fig)
    return to_png(fig)


def _moving_average(values: list[float], window: int) -> list[float]:
    half = window // 2
    out = []
    for i in range(len(values)):
        part = values[max(0, i - half): i + half + 1]
        out.append(sum(part) / len(part))
    return out
