"""Matched-sparsity comparison and the verdicts of the starvation benchmark (issue 4, items 3 and 5).

Read ``results.csv`` (one row per trained SAE), write:

- ``matched.csv``: every arm × ρ × L0 target, each metric interpolated to the target L0 for
  each seed (:func:`interpolate_at`), then mean and sample std over the seeds that bracket it;
- ``verdicts.csv``: every comparison behind a claim, with its numbers and verdict;
- ``summary.md``: the claims, the numbers, the rule and the computed verdicts.

Matched L0 (:func:`interpolate_at`): a cell's sweep points are put in order of the swept knob
(λ, or k); the first adjacent pair whose held-out L0 values bracket the target (inclusive) is
used, and each metric is interpolated linearly in log L0 between the two points. A target
no pair brackets gives no value for that seed (no extrapolation).

Verdict rule (:func:`verdict`): for a claim "AEN is better than arm B on metric M", the
advantage Δ = mean_B − mean_AEN (lower is better) or mean_AEN − mean_B (higher is better)
over seeds, with standard error SE = √(s_AEN²/n_AEN + s_B²/n_B) (sample std, unpaired);
'holds' if Δ > c·SE, 'does not hold' if Δ < −c·SE, else 'within noise' (c = se_factor,
2 by default; a |Δ| below 1e-12 is 'within noise'); 'n/a' when either side has < 2 seeds.
A claim's overall verdict (:func:`overall`) is the label of more than half of its defined
comparisons, else 'mixed'.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

AEN = "aen"
SYMBOL = {"holds": "✓", "does not hold": "✗", "within noise": "~", "n/a": "–"}


def matched_metrics(dead_cols: list[str]) -> list[str]:
    """Metrics carried to matched.csv."""
    return (["fvu", "dead_fraction"] + dead_cols + ["dense_fraction", "dense_fraction_001", "mmcs", "recovery_rate",
                                                    "mcc", "support_f1", "l2_ratio", "rel_bias", "shrinkage"])


CLAIMS: list[tuple[str, str, str, bool]] = [
    # (id, statement, metric, higher_is_better)
    ("a", "AEN has fewer dead latents than each other arm at matched L0", "dead_fraction", False),
    ("b", "AEN recovers more true features (recovery rate: max cos > 0.9)", "recovery_rate", True),
    ("b'", "AEN recovers more true features (MCC, Hungarian matching)", "mcc", True),
    ("c", "AEN shrinks less (|relative bias − 1|)", "shrinkage", False),
]
ABLATION_METRICS = [("dead_fraction", False), ("recovery_rate", True), ("shrinkage", False)]


# --------------------------------------------------------------------------- reading
def fmt(v: Any) -> str:
    """CSV cell: floats with 10 significant digits, everything else as str."""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else format(v, ".10g")
    return str(v)


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([fmt(r[c]) for c in columns])


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV with numeric cells converted to float (seed to int)."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out: dict[str, Any] = {}
            for k, v in r.items():
                try:
                    out[k] = float(v)
                except ValueError:
                    out[k] = v
            if "seed" in out:
                out["seed"] = int(out["seed"])
            rows.append(out)
    return rows


# --------------------------------------------------------------------------- matched L0
def interpolate_at(points: list[tuple[float, float, dict[str, float]]], target: float,
                   metrics: list[str]) -> dict[str, float] | None:
    """Metrics at L0 = ``target`` from one cell's sweep points, or None if not bracketed.

    :param points: (knob value, L0, {metric: value}) per run of the cell.
    :returns: {metric: interpolated value, ..., 'value': knob interpolated in log, 't': weight}.

    The first pair of points adjacent in knob order with min(L0) ≤ target ≤ max(L0) is used:
    t = (log target − log L0_a)/(log L0_b − log L0_a) (t = 1/2 when L0_a = L0_b), each metric
    (1 − t)·M_a + t·M_b. L0 is floored at 1e-3 before the logs.
    """
    pts = sorted(points, key=lambda p: p[0])
    for (va, la, ma), (vb, lb, mb) in zip(pts, pts[1:]):
        if min(la, lb) <= target <= max(la, lb):
            a, b, t_ = math.log(max(la, 1e-3)), math.log(max(lb, 1e-3)), math.log(max(target, 1e-3))
            t = 0.5 if a == b else (t_ - a) / (b - a)
            res = {m: (1 - t) * ma[m] + t * mb[m] for m in metrics}
            res["value"] = math.exp((1 - t) * math.log(va) + t * math.log(vb))
            res["t"] = t
            return res
    if len(pts) == 1 and pts[0][1] == target:
        return {**{m: pts[0][2][m] for m in metrics}, "value": pts[0][0], "t": 0.0}
    return None


def mean_std(xs: list[float]) -> tuple[float, float]:
    """(mean, sample std with ddof = 1); std is nan for fewer than 2 values."""
    if not xs:
        return math.nan, math.nan
    a = np.asarray(xs, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


def matched_table(rows: list[dict[str, Any]], targets: list[float], metrics: list[str],
                  arms: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per (arm, ρ, target): n_seeds and {metric}_mean / {metric}_std over seeds."""
    cells: dict[tuple[str, float, int], list] = defaultdict(list)
    for r in rows:
        cells[(r["arm"], r["rho"], r["seed"])].append((r["value"], r["l0"], r))
    arms = arms or list(dict.fromkeys(r["arm"] for r in rows))
    rhos = sorted({r["rho"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    out = []
    for arm in arms:
        for rho in rhos:
            for tgt in targets:
                got = [interpolate_at(cells[(arm, rho, s)], tgt, metrics) for s in seeds if (arm, rho, s) in cells]
                got = [g for g in got if g is not None]
                row: dict[str, Any] = {"arm": arm, "rho": rho, "l0_target": float(tgt), "n_seeds": len(got)}
                row["value_mean"] = mean_std([g["value"] for g in got])[0]
                for m in metrics:
                    row[f"{m}_mean"], row[f"{m}_std"] = mean_std([g[m] for g in got])
                out.append(row)
    return out


def matched_columns(metrics: list[str]) -> list[str]:
    return ["arm", "rho", "l0_target", "n_seeds", "value_mean"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std")]


# --------------------------------------------------------------------------- verdicts
def verdict(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int, higher_is_better: bool,
            se_factor: float = 2.0) -> tuple[float, float, str]:
    """(Δ, SE, label) for the claim "a is better than b" (see the module docstring)."""
    if n_a < 2 or n_b < 2 or any(math.isnan(v) for v in (mean_a, std_a, mean_b, std_b)):
        return math.nan, math.nan, "n/a"
    diff = mean_a - mean_b if higher_is_better else mean_b - mean_a
    se = math.sqrt(std_a**2 / n_a + std_b**2 / n_b)
    if diff > se_factor * se and diff > 1e-12:
        return diff, se, "holds"
    if diff < -se_factor * se and diff < -1e-12:
        return diff, se, "does not hold"
    return diff, se, "within noise"


def overall(labels: list[str]) -> str:
    """The label of more than half of the defined (not 'n/a') comparisons, else 'mixed'."""
    defined = [lab for lab in labels if lab != "n/a"]
    if not defined:
        return "n/a"
    for lab in ("holds", "does not hold", "within noise"):
        if defined.count(lab) * 2 > len(defined):
            return lab
    return "mixed"


def tally(labels: list[str]) -> str:
    defined = [lab for lab in labels if lab != "n/a"]
    return (f"holds {defined.count('holds')}, does not hold {defined.count('does not hold')}, within noise "
            f"{defined.count('within noise')} of {len(defined)} defined comparisons"
            f"{f' ({len(labels) - len(defined)} n/a: target not bracketed or < 2 seeds)' if len(defined) < len(labels) else ''}")


def comparisons(matched: list[dict[str, Any]], se_factor: float) -> list[dict[str, Any]]:
    """Every comparison behind claims (a)–(d): AEN against each other arm, then EN against AEN."""
    idx = {(r["arm"], r["rho"], r["l0_target"]): r for r in matched}
    arms = list(dict.fromkeys(r["arm"] for r in matched))
    out = []

    def one(claim: str, metric: str, hib: bool, a: dict, b: dict, other: str, flip: bool) -> dict[str, Any]:
        na, nb = int(a["n_seeds"]), int(b["n_seeds"])
        diff, se, lab = verdict(a[f"{metric}_mean"], a[f"{metric}_std"], na, b[f"{metric}_mean"],
                                b[f"{metric}_std"], nb, hib, se_factor)
        if flip:  # claim (d) "EN does as well as AEN": AEN better beyond noise contradicts it
            lab = {"holds": "does not hold", "does not hold": "holds"}.get(lab, lab)
        return {"claim": claim, "metric": metric, "rho": a["rho"], "l0_target": a["l0_target"], "other": other,
                "aen_mean": a[f"{metric}_mean"], "aen_std": a[f"{metric}_std"], "aen_n": na,
                "other_mean": b[f"{metric}_mean"], "other_std": b[f"{metric}_std"], "other_n": nb,
                "aen_advantage": diff, "se": se, "verdict": lab}

    if AEN not in arms:
        return out
    keys = sorted({(r["rho"], r["l0_target"]) for r in matched})
    for claim, _, metric, hib in CLAIMS:
        for other in arms:
            if other == AEN:
                continue
            for rho, tgt in keys:
                out.append(one(claim, metric, hib, idx[(AEN, rho, tgt)], idx[(other, rho, tgt)], other, False))
    if "en" in arms:
        for metric, hib in ABLATION_METRICS:
            for rho, tgt in keys:
                out.append(one("d", metric, hib, idx[(AEN, rho, tgt)], idx[("en", rho, tgt)], "en", True))
    return out


VERDICT_COLUMNS = ["claim", "metric", "rho", "l0_target", "other", "aen_mean", "aen_std", "aen_n", "other_mean",
                   "other_std", "other_n", "aen_advantage", "se", "verdict"]


# --------------------------------------------------------------------------- summary.md
def _pm(mean: float, std: float, scale: float = 1.0, digits: int = 2) -> str:
    if math.isnan(mean):
        return "n/a"
    s = f"{mean * scale:.{digits}f}"
    return s + (f" ± {std * scale:.{digits}f}" if not math.isnan(std) else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def summary_lines(cfg: Any, rows: list[dict[str, Any]], matched: list[dict[str, Any]],
                  comps: list[dict[str, Any]]) -> list[str]:
    """The text of summary.md (every number computed from the CSVs)."""
    arms = list(dict.fromkeys(r["arm"] for r in matched))
    rhos = sorted({r["rho"] for r in matched})
    targets = sorted({r["l0_target"] for r in matched})
    idx = {(r["arm"], r["rho"], r["l0_target"]): r for r in matched}
    chance = {rho: mean_std([r["recovery_chance"] for r in rows if r["rho"] == rho and r["arm"] == arms[0]])[0]
              for rho in rhos}
    L = [f"# Feature starvation on the spiked model — preset `{cfg.preset}`", "",
         f"Spiked model (SPEC §4): n = {cfg.n}, m = d_sae = {cfg.m}, k = {cfg.k} active, magnitudes U[1, 3], no noise; "
         f"ρ ∈ {{{', '.join(f'{r:g}' for r in rhos)}}}; seeds {list(cfg.seeds)} (a seed draws the data and the SAE init). "
         f"{cfg.steps} steps × {cfg.batch_size} tokens (lr {cfg.lr:g}, inputs scaled to E‖x‖² = n); metrics on "
         f"{cfg.n_eval} held-out tokens; {len(rows)} SAEs. Command: `python -m synthetic.starvation --preset {cfg.preset}`.",
         "",
         "**Matched L0.** Each arm sweeps its knob (k grid for topk/topk_auxk/batchtopk; adaptive λ sweep otherwise); "
         "metrics are interpolated linearly in log L0 between the two sweep points adjacent in knob order that "
         "bracket the target, per seed, then averaged (mean ± sample std over the seeds that bracket it). "
         f"Targets: L0 ∈ {{{', '.join(f'{t:g}' for t in targets)}}}.", "",
         f"**Verdict rule.** Δ = AEN's advantage (mean over seeds, in the claimed direction), SE = √(s²_AEN/n_AEN + "
         f"s²_B/n_B): 'holds' if Δ > {cfg.se_factor:g}·SE, 'does not hold' if Δ < −{cfg.se_factor:g}·SE, else "
         "'within noise'; 'n/a' if a side has < 2 seeds at the target. A claim's overall verdict is the label of more "
         "than half of its defined comparisons (every other arm × ρ × target), else 'mixed'. For (d) the comparison is "
         "AEN vs EN on dead fraction, recovery rate and shrinkage; AEN better beyond noise counts against (d).", "",
         "## Verdicts", ""]
    for claim, text, metric, _ in CLAIMS + [("d", "plain EN does as well as AEN (the ablation)", "", False)]:
        labs = [c["verdict"] for c in comps if c["claim"] == claim]
        L.append(f"- **({claim})** {text}: **{overall(labels=labs)}** — {tally(labs)}.")
        per_rho = []
        for rho in rhos:
            lr = [c["verdict"] for c in comps if c["claim"] == claim and c["rho"] == rho]
            d = [x for x in lr if x != "n/a"]
            per_rho.append(f"ρ={rho:g}: {d.count('holds')}✓/{d.count('does not hold')}✗/{d.count('within noise')}~")
        L.append("  - by ρ (holds/does not hold/within noise): " + "; ".join(per_rho))
    if any(chance[r] > 0 for r in rhos):
        L += ["", "Caution: at high ρ every atom is within cos √ρ of the spike, so one learned atom along the mean atom "
              "'recovers' features by the cos > 0.9 rule. Chance recovery rate (mean atom alone) by ρ: "
              + ", ".join(f"{r:g}: {chance[r]:.2f}" for r in rhos) + ". MCC (one-to-one matching) is not fooled."]
    L += ["", f"## Matched-L0 table (L0 = {targets[0]:g})", "",
          "dead % / explained variance / recovery rate / support F1, mean ± std over seeds (n/a: not bracketed).", ""]
    t0 = targets[0]
    body = []
    for arm in arms:
        cells = []
        for rho in rhos:
            r = idx[(arm, rho, t0)]
            if r["n_seeds"] == 0:
                cells.append("n/a")
                continue
            cells.append(f"{_pm(r['dead_fraction_mean'], r['dead_fraction_std'], 100, 1)} / "
                         f"{1 - r['fvu_mean']:.2f} / {r['recovery_rate_mean']:.2f} / {r['support_f1_mean']:.2f}"
                         + ("" if r["n_seeds"] == len(cfg.seeds) else f" (n={r['n_seeds']})"))
        body.append([arm] + cells)
    L += _table(["arm"] + [f"ρ = {r:g}" for r in rhos], body)
    for claim, text, metric, hib in CLAIMS + [("d", "EN vs AEN", "", False)]:
        sub = [c for c in comps if c["claim"] == claim]
        if not sub:
            continue
        L += ["", f"## ({claim}) {text}", "",
              "Cells: verdict symbol (✓ holds, ✗ does not hold, ~ within noise, – n/a), AEN's advantage Δ ± SE."
              + (f" Metric `{metric}`; AEN {'higher' if hib else 'lower'} is better." if metric else
                 " Rows: metric; Δ > 0 means AEN is better (which counts against (d))."), ""]
        for tgt in targets:
            L.append(f"L0 = {tgt:g}:")
            L.append("")
            row_key = "metric" if claim == "d" else "other"
            body = []
            for key in dict.fromkeys(c[row_key] for c in sub):
                cells = []
                for rho in rhos:
                    c = next(c for c in sub if c[row_key] == key and c["rho"] == rho and c["l0_target"] == tgt)
                    cells.append(SYMBOL[c["verdict"]] + ("" if c["verdict"] == "n/a" else
                                                         f" {c['aen_advantage']:+.3f} ± {c['se']:.3f}"))
                body.append([key] + cells)
            L += _table([row_key] + [f"ρ = {r:g}" for r in rhos], body) + [""]
    L += ["## Files", "", "- `results.csv`: one row per SAE; `matched.csv`: arm × ρ × target; `verdicts.csv`: every "
          "comparison above with its means, stds and seed counts; `firing_hist.csv`; `config.json`; `timing.json`.",
          "- Figures: " + ", ".join(f"`{f}`" for f in _figure_names()) + "."]
    return L


def _figure_names() -> list[str]:
    from synthetic.plots import FIGURES

    return [f for f, _ in FIGURES]


def write_report(out_dir: str | Path, cfg: Any) -> dict[str, Path]:
    """Write matched.csv, verdicts.csv and summary.md from out_dir/results.csv; returns their paths."""

    out = Path(out_dir)
    rows = read_csv(out / "results.csv")
    dead_cols = [f"dead_at_{w}" for w in sorted(cfg.eval_windows)]
    metrics = matched_metrics(dead_cols)
    arms = [a for a in cfg.arms if any(r["arm"] == a for r in rows)]
    matched = matched_table(rows, list(cfg.l0_targets), metrics, arms)
    write_csv(out / "matched.csv", matched_columns(metrics), matched)
    comps = comparisons(matched, cfg.se_factor)
    write_csv(out / "verdicts.csv", VERDICT_COLUMNS, comps)
    (out / "summary.md").write_text("\n".join(summary_lines(cfg, rows, matched, comps)) + "\n")
    return {"matched": out / "matched.csv", "verdicts": out / "verdicts.csv", "summary": out / "summary.md"}
