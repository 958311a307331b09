"""Report figures (matplotlib, Agg backend): each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in tests

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from knowpack.mix.config import label_sort_key  # noqa: E402
from knowpack.probe.slick import CATEGORIES  # noqa: E402

CATEGORY_ORDER = CATEGORIES
_SHORT = {"HighlyKnown": "HK", "MaybeKnown": "MK", "WeaklyKnown": "WK", "Unknown": "UK"}
_PALETTE = ["#4c4c4c", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]


def mixture_order(labels) -> list[str]:
    """w/o first, then by kind and k (the paper's column order: 1 HK, 10 HK, 1 Para, 10 Para), controls last."""
    return sorted({str(x) for x in labels if x == x}, key=label_sort_key)


def _colors(labels) -> dict[str, str]:
    return {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(mixture_order(labels))}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _log_x(ax, values) -> None:
    values = sorted(set(values))
    if len(values) > 2 and values[-1] / max(values[0], 1) >= 20:
        ax.set_xscale("log")
    ax.set_xticks(values)
    ax.set_xticklabels([str(v) for v in values])
    ax.minorticks_off()


def _figure_legend(fig, axes, **kw) -> None:
    """One legend beside the figure with every label used in any panel (panels may lack some)."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), **kw)


def reliability_curves(curves: pd.DataFrame, path: Path) -> Path | None:
    """Paper Fig. 2: mean reliability vs epoch per mixture (band = min–max over seeds), one panel per n."""
    if curves.empty or "reliability" not in curves or curves["reliability"].isna().all():
        return None
    ns = sorted(curves["unknown"].unique())
    colors = _colors(curves["mixture"])
    cols = min(3, len(ns))
    rows = int(np.ceil(len(ns) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.4 * rows), sharey=True, squeeze=False)
    for ax in axes.flat[len(ns):]:
        ax.axis("off")
    for ax, n in zip(axes.flat, ns):
        part = curves[curves["unknown"] == n]
        for mixture in mixture_order(part["mixture"]):
            g = part[part["mixture"] == mixture].groupby("epoch")["reliability"].agg(["mean", "min", "max"])
            if g["mean"].isna().all():  # a control adapter trains no Unknown fact: no curve, no legend entry
                continue
            ax.plot(g.index, g["mean"], marker="o", ms=3, color=colors[mixture], label=mixture)
            ax.fill_between(g.index, g["min"], g["max"], color=colors[mixture], alpha=0.15, linewidth=0)
        ax.set_title(f"{n} Unknown facts")
        ax.set_xlabel("epoch")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    for row in axes:
        row[0].set_ylabel("reliability")
    fig.tight_layout()
    _figure_legend(fig, axes.flat, title="mixture")
    return _save(fig, path)


def _series(ax, summary: pd.DataFrame, column: str, colors: dict[str, str]) -> None:
    """Mean across seeds vs n, one line per mixture; error bars = 95% t-interval."""
    for mixture in mixture_order(summary["mixture"]):
        part = summary[summary["mixture"] == mixture].sort_values("unknown")
        mean = part[f"{column}_mean"].to_numpy(float)
        if np.isnan(mean).all():
            continue
        low = np.nan_to_num(mean - part[f"{column}_ci_low"].to_numpy(float))
        high = np.nan_to_num(part[f"{column}_ci_high"].to_numpy(float) - mean)
        control = mixture.startswith("Ctrl")  # control adapters: same steps, only known facts
        ax.errorbar(part["unknown"], mean, yerr=[low, high], marker="s" if control else "o", ms=4, capsize=3,
                    color=colors[mixture], ls="--" if control else "-", label=mixture)


def _yardstick(ax, summary: pd.DataFrame, column: str, label: str, **style) -> None:
    """One base-vs-base yardstick over n: mean over cells as a line (markers: with a single n a
    line has no length to show)."""
    if f"{column}_mean" not in summary or summary[f"{column}_mean"].isna().all():
        return
    f = summary.groupby("unknown")[f"{column}_mean"].mean().sort_index()
    ax.plot(f.index, f.to_numpy(float), marker="_", ms=18, label=label, **style)


def shifts_vs_n(summary: pd.DataFrame, path: Path) -> Path | None:
    """Paper Table 3 as a figure: positive and negative shift vs n per mixture, each control
    adapter dashed beside them, the paired floor and prompt sensitivity of the base model in grey."""
    if summary.empty or summary["positive_shift_mean"].isna().all():
        return None
    colors = _colors(summary["mixture"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, side in zip(axes, ("positive", "negative")):
        _yardstick(ax, summary, f"paired_floor_{side}", "paired floor (base vs base, same prompts)",
                   color="grey", ls="--", lw=1)
        _yardstick(ax, summary, f"prompt_sensitivity_{side}", "prompt sensitivity (base vs base, other prompts)",
                   color="grey", ls=":", lw=1.2)
        _series(ax, summary, f"{side}_shift", colors)
        ax.set_title(f"{side} shifts (held-out facts)")
        ax.set_xlabel("# Unknown facts trained (n)")
        _log_x(ax, summary["unknown"])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of held-out facts")
    # Set the shared limits once both panels are drawn: fixing them inside the loop froze the
    # y range at the first panel's data and cut off the second. Shares cannot be negative.
    top = max(ax.dataLim.y1 for ax in axes)
    axes[0].set_ylim(0, max(top * 1.08, 0.05))
    fig.tight_layout()
    _figure_legend(fig, axes)
    return _save(fig, path)


BENCHMARK_LABELS = {"mmlu": "MMLU", "truthfulqa_mc1": "TruthfulQA MC1", "truthfulqa_mc2": "TruthfulQA MC2"}


def benchmarks_vs_n(summary: pd.DataFrame, path: Path) -> Path | None:
    """Paper Figs. 3–4: benchmark accuracy vs n per mixture, base model as a dashed line."""
    present = [b for b in BENCHMARK_LABELS if f"{b}_mean" in summary and not summary[f"{b}_mean"].isna().all()]
    if summary.empty or not present:
        return None
    colors = _colors(summary["mixture"])
    fig, axes = plt.subplots(1, len(present), figsize=(4.6 * len(present), 3.4), squeeze=False)
    for ax, bench in zip(axes[0], present):
        base = summary.get(f"{bench}_base_mean")
        if base is not None and not base.isna().all():
            ax.axhline(float(base.mean()), color="black", ls="--", lw=1, label="base model")
        _series(ax, summary, bench, colors)
        ax.set_title(BENCHMARK_LABELS[bench])
        ax.set_xlabel("# Unknown facts trained (n)")
        _log_x(ax, summary["unknown"])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    fig.tight_layout()
    _figure_legend(fig, axes.flat)
    return _save(fig, path)


def transition_heatmaps(matrices: list[tuple[str, pd.DataFrame]], path: Path, *, columns: int = 4) -> Path | None:
    """Small multiples of row-normalised category transition matrices (before → after)."""
    if not matrices:
        return None
    rows = int(np.ceil(len(matrices) / columns))
    cols = min(columns, len(matrices))
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat[len(matrices):]:
        ax.axis("off")
    for ax, (title, counts) in zip(axes.flat, matrices):
        cats = [c for c in CATEGORY_ORDER if c in counts.index and (counts.loc[c].sum() or counts[c].sum())]
        m = counts.loc[cats, cats].to_numpy(float)
        share = m / np.where(m.sum(axis=1, keepdims=True) == 0, 1, m.sum(axis=1, keepdims=True))
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(cats)):
            for j in range(len(cats)):
                ax.text(j, i, f"{share[i, j]:.2f}\n({int(m[i, j])})", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(cats)), [_SHORT[c] for c in cats], fontsize=8)
        ax.set_yticks(range(len(cats)), [_SHORT[c] for c in cats], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("after", fontsize=8)
        ax.set_ylabel("before", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
