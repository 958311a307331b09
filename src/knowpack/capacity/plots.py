"""Capacity figures: facts held vs rank and vs trainable parameters, bits per parameter vs parameters.

Each function writes one PNG and returns its path (None when there is nothing to draw). The x axes
are logarithmic: ranks and parameter counts grow geometrically in a capacity study.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from knowpack.capacity.bits import ALLEN_ZHU_LI_BITS_PER_PARAMETER
from knowpack.report.plots import _PALETTE, _save, plt


def _per_method(frame: pd.DataFrame, x: str, y: str, path: Path, *, xlabel: str, ylabel: str, title: str,
                reference: float | None = None) -> Path | None:
    frame = frame.dropna(subset=[x, y])
    if frame.empty:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for i, (method, group) in enumerate(frame.groupby("method", sort=False)):
        group = group.sort_values(x)
        ax.plot(group[x], group[y], marker="o", color=_PALETTE[(i + 1) % len(_PALETTE)], label=method)
    if reference is not None:
        ax.axhline(reference, color="#888", linestyle="--", linewidth=1,
                   label=f"{reference:g} bits/parameter (Allen-Zhu & Li)")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def capacity_vs_rank(frame: pd.DataFrame, path: Path) -> Path | None:
    """n found per rank, one line per method."""
    return _per_method(frame, "rank", "n_found", path, xlabel="adapter rank (log)", ylabel="facts held (n found)",
                       title="Capacity vs rank")


def capacity_vs_parameters(frame: pd.DataFrame, path: Path) -> Path | None:
    """n found per trainable parameter count, one line per method."""
    return _per_method(frame, "trainable_parameters", "n_found", path, xlabel="trainable parameters (log)",
                       ylabel="facts held (n found)", title="Capacity vs trainable parameters")


def bits_vs_parameters(frame: pd.DataFrame, path: Path) -> Path | None:
    """Net likelihood bits per trainable parameter at n found, with the 2 bits/parameter reference."""
    return _per_method(frame, "trainable_parameters", "bits_per_parameter", path,
                       xlabel="trainable parameters (log)", ylabel="net bits per trainable parameter",
                       title="Bits stored at n found", reference=ALLEN_ZHU_LI_BITS_PER_PARAMETER)
