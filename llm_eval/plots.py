"""Figures of the real-model comparison, drawn from results.csv and firing_hist.csv."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from geomsae.study.plotstyle import arm_colors, hist_panel, line_style, pyplot, save
from geomsae.study.tables import read_csv
from llm_eval.config import n_expected

FIGURES: list[tuple[str, str]] = [
    ("llm_starvation_vs_l0.png", "Real model: dead fraction, FVU and CE loss recovered (mean ablation) of every SAE "
     "against its held-out L0, one line per arm and seed (sweep points joined in L0 order); dotted: the L0 targets"),
    ("llm_firing_hist.png", "Real model: log10 firing-frequency histograms on the held-out activations, per arm, "
     "at the SAE nearest the first L0 target (seed 0); the dead count is printed"),
]


def seed_lines(ax: Any, rows: list[dict[str, Any]], arms: list[str], colors: dict[str, Any], x_key: str,
               metric: str) -> None:
    """One line per (arm, seed) of ``metric`` against ``x_key``: the first seed solid and labelled
    with the arm, the others dashed."""
    seeds = sorted({r["seed"] for r in rows})
    for arm in arms:
        for j, seed in enumerate(seeds):
            pts = sorted((r[x_key], r[metric]) for r in rows if r["arm"] == arm and r["seed"] == seed)
            if not pts:
                continue
            x, y = zip(*pts)
            ax.plot(x, y, marker="o", ms=4, color=colors[arm], ls="-" if j == 0 else "--",
                    label=arm if j == 0 else None, **line_style(arm))


def vs_l0(out: Path, rows: list[dict[str, Any]], arms: list[str], targets: list[float], title: str) -> Path:
    plt = pyplot()
    colors = arm_colors(arms)
    panels = [("dead_fraction", "dead fraction (held-out)"), ("fvu", "FVU (held-out)"),
              ("ce_recovered_mean", "CE loss recovered (mean ablation)")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (metric, label) in zip(axes, panels):
        seed_lines(ax, rows, arms, colors, "l0", metric)
        for t in targets:
            ax.axvline(t, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("L0 (held-out)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save(fig, out / FIGURES[0][0])


def firing_hist(out: Path, rows: list[dict[str, Any]], hists: list[dict[str, Any]], arms: list[str],
                tgt: float) -> Path:
    plt = pyplot()
    bins = [c for c in hists[0] if c.startswith("bin_")]
    seed0 = min(r["seed"] for r in rows)
    fig, axes = plt.subplots(1, len(arms), figsize=(2.4 * len(arms), 2.4), sharex=True, squeeze=False)
    for ax, arm in zip(axes[0], arms):
        cand = [(r, h) for r in rows for h in hists if r["arm"] == arm and r["seed"] == seed0
                and h["arm"] == arm and h["seed"] == seed0 and h["value"] == r["value"]]
        if not cand:
            ax.set_axis_off()
            continue
        r, h = min(cand, key=lambda rh: abs(math.log(max(rh[0]["l0"], 1e-3) / tgt)))
        counts = np.array([h[b] for b in bins])
        hist_panel(ax, counts, arm)
        ax.set_title(f"{arm}\nL0 {r['l0']:.0f}, dead {int(counts[0])}", fontsize=8)
        ax.set_xlim(-5.5, 0)
        ax.set_xlabel("log10 firing freq.", fontsize=8)
    return save(fig, out / FIGURES[1][0])


def make_all(cfg: Any, out_dir: str | Path | None = None) -> list[Path]:
    """Draw :data:`FIGURES` from the CSVs in cfg.results_dir into out_dir (default: the same folder)."""
    res = cfg.results_dir
    out = Path(out_dir) if out_dir is not None else res
    out.mkdir(parents=True, exist_ok=True)
    rows, hists = read_csv(res / "results.csv"), read_csv(res / "firing_hist.csv")
    arms = [a for a in cfg.arms if any(r["arm"] == a for r in rows)]
    title = f"{cfg.model}, layer {cfg.layer} {cfg.hook}, d_sae {cfg.d_sae} (preset {cfg.preset})"
    return [vs_l0(out, rows, arms, sorted(cfg.l0_targets), title),
            firing_hist(out, rows, hists, arms, min(cfg.l0_targets))]


CURVE_FIGURE = ("llm_long_starvation.png", "Real model at length: dead fraction, the fractions firing below "
                "1e-4 and 1e-5 of the held-out tokens, and held-out L0 (the penalty arms drift from the L0 their "
                "λ was picked at) against training tokens seen (log x), one line per arm (seed 0 solid, seed 1 dashed)")


def curves_figure(cfg: Any, out_dir: str | Path | None = None) -> Path:
    """The starvation curves of the long runs (:data:`CURVE_FIGURE`) from cfg.results_dir/curves.csv."""
    rows = read_csv(Path(cfg.results_dir) / "curves.csv")
    arms = [a for a in cfg.curve_arms if any(r["arm"] == a for r in rows)]
    colors = arm_colors(arms)
    plt = pyplot()
    panels = [("dead_fraction", "dead (held-out)"), ("rare_fraction_1e4", "firing < 1e-4 of tokens"),
              ("rare_fraction_1e5", "firing < 1e-5 of tokens"), ("l0", "held-out L0 (log)")]
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    for ax, (metric, label) in zip(axes, panels):
        seed_lines(ax, rows, arms, colors, "tokens_seen", metric)
        ax.set_xscale("log")
        ax.set_xlabel("training tokens seen")
        ax.set_ylabel(label)
    axes[-1].set_yscale("log")
    axes[-1].axhline(cfg.curve_l0, color="grey", lw=0.8, ls=":")  # the L0 the knobs were picked for
    axes[0].legend(fontsize=8)
    partial = "" if len(rows) >= n_expected(cfg) else f" (PARTIAL: {len(rows)} points)"
    fig.suptitle(f"{cfg.preset}: starvation over training{partial}")
    out = Path(out_dir) if out_dir is not None else Path(cfg.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    return save(fig, out / CURVE_FIGURE[0])
