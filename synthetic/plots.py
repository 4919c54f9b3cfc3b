"""Figures of the starvation benchmark, drawn from results.csv, matched.csv and firing_hist.csv.

:func:`make_all` draws every entry of :data:`FIGURES` into a run folder (or another folder);
``python -m figures`` copies them into ``figures/``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from geomsae.study.plotstyle import arm_colors, hist_panel, line_style, pyplot, save
from geomsae.study.tables import read_csv

FIGURES: list[tuple[str, str]] = [
    ("starvation_dead_vs_rho.png", "Dead fraction (held-out) at matched L0 against coherence ρ, one line per arm, "
     "mean ± std over seeds; one panel per L0 target"),
    ("starvation_frontier.png", "FVU against L0 for each ρ: every sweep point (small dots, one per seed and knob "
     "value) and the matched-L0 interpolations (large markers, mean ± std)"),
    ("starvation_recovery_vs_rho.png", "Ground-truth recovery at matched L0 against ρ: recovery rate (max cos > 0.9; "
     "dashed: chance level of the mean atom alone), MCC, support F1"),
    ("starvation_firing_hist.png", "log10 firing-frequency histograms (held-out) per arm and ρ, pooled over seeds "
     "at the sweep point nearest the first L0 target; the dead count is printed"),
    ("starvation_shrinkage.png", "Shrinkage at matched L0 against ρ: relative reconstruction bias γ* (> 1: "
     "shrinkage) and l2 ratio ‖x̂‖/‖x‖ (< 1: shrinkage)"),
]


def _by(matched: list[dict[str, Any]], arm: str, tgt: float, metric: str) -> tuple[list, list, list]:
    rs = sorted((r for r in matched if r["arm"] == arm and r["l0_target"] == tgt), key=lambda r: r["rho"])
    return [r["rho"] for r in rs], [r[f"{metric}_mean"] for r in rs], [r[f"{metric}_std"] for r in rs]


def _errorlines(ax: Any, matched: list, arms: list[str], tgt: float, metric: str, colors: dict) -> None:
    for i, arm in enumerate(arms):
        x, y, e = _by(matched, arm, tgt, metric)
        x = [xx + (i - len(arms) / 2) * 0.004 for xx in x]  # dodge so error bars do not overlap
        ax.errorbar(x, y, yerr=np.nan_to_num(e), marker="o", ms=3, capsize=2, color=colors[arm], label=arm,
                    **line_style(arm))
    ax.set_xlabel("coherence ρ")
    ax.grid(alpha=0.3)


def dead_vs_rho(out: Path, matched: list, arms: list[str], targets: list[float], colors: dict) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 4), squeeze=False)
    for ax, tgt in zip(axes[0], targets):
        _errorlines(ax, matched, arms, tgt, "dead_fraction", colors)
        ax.set_title(f"dead fraction at L0 = {tgt:g}")
        ax.set_ylabel("dead fraction (held-out)")
        ax.set_ylim(-0.02, 1.02)
    axes[0][-1].legend(fontsize=7, loc="upper left")
    return save(fig, out / FIGURES[0][0])


def frontier(out: Path, rows: list, matched: list, arms: list[str], targets: list[float], colors: dict) -> Path:
    plt = pyplot()
    rhos = sorted({r["rho"] for r in rows})
    fig, axes = plt.subplots(1, len(rhos), figsize=(3.6 * len(rhos), 3.6), squeeze=False, sharey=True)
    for ax, rho in zip(axes[0], rhos):
        for arm in arms:
            pts = [r for r in rows if r["arm"] == arm and r["rho"] == rho]
            ax.scatter([max(r["l0"], 1e-2) for r in pts], [r["fvu"] for r in pts], s=6, alpha=0.45, color=colors[arm])
            m = [r for r in matched if r["arm"] == arm and r["rho"] == rho and r["n_seeds"] > 0]
            ax.errorbar([r["l0_target"] for r in m], [r["fvu_mean"] for r in m],
                        yerr=np.nan_to_num([r["fvu_std"] for r in m]), marker="D", ms=5, ls="-", capsize=2,
                        color=colors[arm], label=arm, **line_style(arm))
        for t in targets:
            ax.axvline(t, color="grey", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(f"ρ = {rho:g}")
        ax.set_xlabel("L0 (held-out)")
        ax.set_ylim(0, min(1.5, max([1.0] + [r["fvu"] for r in rows if math.isfinite(r["fvu"])])))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("FVU (held-out)")
    axes[0][-1].legend(fontsize=6, loc="upper right")
    return save(fig, out / FIGURES[1][0])


def recovery_vs_rho(out: Path, rows: list, matched: list, arms: list[str], tgt: float, colors: dict) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, metric, title in zip(axes, ("recovery_rate", "mcc", "support_f1"),
                                 ("recovery rate (cos > 0.9)", "MCC (Hungarian)", "support F1")):
        _errorlines(ax, matched, arms, tgt, metric, colors)
        ax.set_title(f"{title} at L0 = {tgt:g}")
        ax.set_ylim(-0.02, 1.02)
    rhos = sorted({r["rho"] for r in rows})
    chance = [float(np.mean([r["recovery_chance"] for r in rows if r["rho"] == rho])) for rho in rhos]
    axes[0].plot(rhos, chance, "k--", lw=1, label="chance (mean atom)")
    axes[0].legend(fontsize=7)
    return save(fig, out / FIGURES[2][0])


def firing_hist(out: Path, rows: list, hists: list, arms: list[str], tgt: float) -> Path:
    plt = pyplot()
    rhos = sorted({r["rho"] for r in rows})
    bins = [c for c in hists[0] if c.startswith("bin_")]
    fig, axes = plt.subplots(len(arms), len(rhos), figsize=(2.3 * len(rhos), 1.3 * len(arms) + 0.6),
                             sharex=True, squeeze=False)
    for i, arm in enumerate(arms):
        for j, rho in enumerate(rhos):
            ax = axes[i][j]
            total = np.zeros(len(bins))
            for seed in sorted({r["seed"] for r in rows}):
                cell = [h for h in hists if h["arm"] == arm and h["rho"] == rho and h["seed"] == seed]
                if not cell:
                    continue
                l0 = {r["value"]: r["l0"] for r in rows if r["arm"] == arm and r["rho"] == rho and r["seed"] == seed}
                best = min(cell, key=lambda h: abs(math.log(max(l0[h["value"]], 1e-3) / tgt)))
                total += np.array([best[b] for b in bins])
            hist_panel(ax, total, arm)
            ax.text(0.03, 0.8, f"dead {int(total[0])}", transform=ax.transAxes, fontsize=7)
            if i == 0:
                ax.set_title(f"ρ = {rho:g}", fontsize=9)
            if j == 0:
                ax.set_ylabel(arm, fontsize=8, rotation=0, ha="right", va="center")
    for ax in axes[-1]:
        ax.set_xlabel("log10 firing freq.", fontsize=8)
        ax.set_xlim(-4.5, 0)
    return save(fig, out / FIGURES[3][0])


def shrinkage(out: Path, matched: list, arms: list[str], tgt: float, colors: dict) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, title in zip(axes, ("rel_bias", "l2_ratio"),
                                 ("relative reconstruction bias γ*", "l2 ratio ‖x̂‖/‖x‖")):
        _errorlines(ax, matched, arms, tgt, metric, colors)
        ax.axhline(1.0, color="grey", ls=":")
        ax.set_title(f"{title} at L0 = {tgt:g}")
    axes[1].legend(fontsize=7)
    return save(fig, out / FIGURES[4][0])


def make_all(run_dir: str | Path, cfg: Any, out_dir: str | Path | None = None) -> list[Path]:
    """Draw every figure of :data:`FIGURES` from the CSVs in ``run_dir`` into ``out_dir`` (default run_dir)."""
    run = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run
    out.mkdir(parents=True, exist_ok=True)
    rows, matched, hists = read_csv(run / "results.csv"), read_csv(run / "matched.csv"), read_csv(run / "firing_hist.csv")
    arms = [a for a in cfg.arms if any(r["arm"] == a for r in rows)]
    targets = sorted(cfg.l0_targets)
    colors = arm_colors(arms)
    return [dead_vs_rho(out, matched, arms, targets, colors),
            frontier(out, rows, matched, arms, targets, colors),
            recovery_vs_rho(out, rows, matched, arms, targets[0], colors),
            firing_hist(out, rows, hists, arms, targets[0]),
            shrinkage(out, matched, arms, targets[0], colors)]
