"""Capacity figures: facts held vs rank and vs trainable parameters, bits per parameter, bits per trial.

Each function writes one PNG and returns its path (None when there is nothing to draw). The x axes
are logarithmic: ranks, parameter counts and trial sizes grow geometrically in a capacity study.
The bits axes are logarithmic too: what an adapter stores per parameter (10⁻⁶–10⁻⁴ bits on the
default model) would sit on zero beside the 2 bits/parameter reference on a linear axis.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from knowpack.capacity.artifacts import ArmResult, CapacityResults, trial_bits
from knowpack.capacity.bits import ALLEN_ZHU_LI_BITS_PER_PARAMETER
from knowpack.capacity.spec import arm_label
from knowpack.report.plots import _PALETTE, _save, plt


def _color(i: int) -> str:
    return _PALETTE[(i + 1) % len(_PALETTE)]


def _per_method(frame: pd.DataFrame, x: str, path: Path, *, xlabel: str, title: str) -> Path | None:
    """Facts held (n found) over ``x`` per method, each with its bracket up to the first failing n: the
    capacity lies in [n found, first failure)."""
    frame = frame.dropna(subset=[x, "n_found"])
    if frame.empty:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for i, (method, group) in enumerate(frame.groupby("method", sort=False)):
        group = group.sort_values(x)
        ax.plot(group[x], group["n_found"], marker="o", color=_color(i), label=method)
        bracketed = group.dropna(subset=["first_failure"])
        ax.vlines(bracketed[x], bracketed["n_found"], bracketed["first_failure"], color=_color(i), alpha=0.35,
                  linewidth=6)
        ax.scatter(bracketed[x], bracketed["first_failure"], marker="x", color=_color(i), zorder=3)
    ax.set_xscale("log")
    ticks = sorted(set(frame[x].astype(int)))
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks], fontsize=8 if len(ticks) > 3 else 10)
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("facts held (n found); bar up to x = first failure")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def capacity_vs_rank(frame: pd.DataFrame, path: Path) -> Path | None:
    """n found per rank, one line per method."""
    return _per_method(frame, "rank", path, xlabel="adapter rank (log)", title="Capacity vs rank")


def capacity_vs_parameters(frame: pd.DataFrame, path: Path) -> Path | None:
    """n found per trainable parameter count, one line per method."""
    return _per_method(frame, "trainable_parameters", path, xlabel="trainable parameters (log)",
                       title="Capacity vs trainable parameters")


def _positive(values) -> pd.Series:
    """Values a log axis can show (a measure of 0 bits, or none, is left out rather than drawn at -inf)."""
    series = pd.Series(values, dtype=float)
    return series.where(series > 0)


def bits_vs_parameters(frame: pd.DataFrame, path: Path) -> Path | None:
    """Likelihood bits written (solid) and destroyed (dashed) per trainable parameter at n found, log scale,
    beside the 2 bits/parameter reference: how far below storage capacity the binding limit is reached."""
    frame = frame.dropna(subset=["trainable_parameters"]).copy()
    frame["written"] = _positive(frame["bits_written"] / frame["trainable_parameters"])
    frame["destroyed"] = _positive(frame["bits_destroyed"] / frame["trainable_parameters"])
    if frame[["written", "destroyed"]].isna().all().all():
        return None
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for i, (method, group) in enumerate(frame.groupby("method", sort=False)):
        group = group.sort_values("trainable_parameters")
        for column, style in (("written", "-"), ("destroyed", "--")):
            shown = group.dropna(subset=[column])
            if not shown.empty:
                ax.plot(shown["trainable_parameters"], shown[column], marker="o" if style == "-" else "x",
                        linestyle=style, color=_color(i), label=f"{method}: {column}")
    ax.axhline(ALLEN_ZHU_LI_BITS_PER_PARAMETER, color="#888", linestyle=":", linewidth=1,
               label=f"{ALLEN_ZHU_LI_BITS_PER_PARAMETER:g} bits/parameter (Allen-Zhu & Li)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("trainable parameters (log)")
    ax.set_ylabel("likelihood bits per trainable parameter (log)")
    ax.set_title("Bits written and destroyed at n found", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, path)


def arm_trial_bits(arm: ArmResult) -> pd.DataFrame:
    """One row per trial of an arm: n, whether it passed, mean bits written and destroyed over seeds."""
    passed = {record.n: record.passed for record in arm.search.trials}
    rows = []
    for trial in arm.trials:
        bits = trial_bits(trial)
        rows.append({"n": trial["n"], "passed": passed.get(trial["n"], False), "written": bits["bits_written"],
                     "destroyed": bits["bits_destroyed"]})
    return pd.DataFrame(rows, columns=["n", "passed", "written", "destroyed"]).sort_values("n")


def _draw_arm_trials(ax, trials: pd.DataFrame, label: str, color: str) -> list[int]:
    """Written (solid) and destroyed (dashed) bits over n; a hollow marker is a trial that failed a limit.
    Returns the n drawn."""
    drawn: list[int] = []
    for column, style, marker in (("written", "-", "o"), ("destroyed", "--", "s")):
        shown = trials.assign(value=_positive(trials[column])).dropna(subset=["value"])
        if shown.empty:
            continue
        ax.plot(shown["n"], shown["value"], linestyle=style, marker=marker, color=color, label=f"{label}: {column}")
        failed = shown[~shown["passed"].astype(bool)]
        ax.scatter(failed["n"], failed["value"], marker=marker, s=30, facecolors="white", edgecolors=color, zorder=3)
        drawn += shown["n"].astype(int).tolist()
    return drawn


def bits_per_trial(results: CapacityResults, path: Path) -> Path | None:
    """Every trial's bits (mean over seeds) against n, per arm: what each adapter wrote and destroyed on
    the way to its limit, including the trials that failed (hollow markers)."""
    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    drawn = sorted({n for i, arm in enumerate(results.arms)
                    for n in _draw_arm_trials(ax, arm_trial_bits(arm), arm_label(arm.method, arm.rank), _color(i))})
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log", base=2)
    ax.set_xticks(drawn, [str(n) for n in drawn])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("new facts in the trial (n, log)")
    ax.set_ylabel("likelihood bits (mean over seeds, log)")
    ax.set_title("Bits written (solid) and destroyed (dashed) per trial; hollow = failed a limit", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)
