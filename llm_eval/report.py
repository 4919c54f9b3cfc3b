"""Matched-L0 table, verdicts and summary.md of the real-model comparison, computed from results.csv.

Matched L0 and the verdict rule are those of the synthetic benchmark
(:func:`synthetic.report.interpolate_at`, :func:`synthetic.report.verdict`): per seed, each
metric is interpolated linearly in log L0 between the two sweep points (in knob order) that
bracket the target; mean and sample std over the seeds that bracket it; a claim
"AEN is better than B on M" holds when AEN's advantage exceeds ``se_factor`` standard errors,
does not hold when it is that far the other way, and is 'within noise' otherwise ('n/a' with
fewer than two seeds on a side).

Claims (each AEN against every other arm, at every L0 target):

- (a) fewer dead latents (dead_fraction on the held-out activations, lower is better);
- (b) reconstruction at least as good (FVU, lower is better: 'within noise' means competitive);
- (c) the LM loses less when the SAE is spliced in (CE loss recovered against mean ablation);
- (d) less shrinkage (|relative reconstruction bias − 1|);
- (e) the ablation: plain EN does as well as AEN on dead fraction (AEN better beyond noise
  counts against it).

The paper's Pythia-70M figures (SPEC §5, the authors' logs) are printed beside ours for
reference; they are quoted from the SPEC, not measured here.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from synthetic.report import SYMBOL, interpolate_at, mean_std, overall, read_csv, tally, verdict, write_csv

AEN = "aen"
METRICS = ["l0", "fvu", "dead_fraction", "dense_fraction", "l2_ratio", "rel_bias", "shrinkage", "ce_recovered_zero",
           "ce_recovered_mean", "kl"]
CLAIMS = [  # (id, statement, metric, higher is better)
    ("a", "AEN has fewer dead latents than each other arm at matched L0", "dead_fraction", False),
    ("b", "AEN reconstructs at least as well (FVU) as each other arm at matched L0", "fvu", False),
    ("c", "AEN preserves the LM loss better (CE loss recovered, mean ablation)", "ce_recovered_mean", True),
    ("d", "AEN shrinks less (|relative bias − 1|)", "shrinkage", False),
]
PAPER_PYTHIA = {  # SPEC §5: Pythia-70M, 4096 latents, 3 seeds, dead % / explained variance at matched L0
    32: {"aen": (1.3, 0.57), "adaptive_lasso": (3.5, 0.72), "en": (1.5, 0.63), "topk": (13.9, 0.76)},
    128: {"aen": (3.1, 0.85), "adaptive_lasso": (0.6, 0.87), "topk": (12.0, 0.90)},
}
VERDICT_COLUMNS = ["claim", "metric", "l0_target", "other", "aen_mean", "aen_std", "aen_n", "other_mean", "other_std",
                   "other_n", "aen_advantage", "se", "verdict"]


def matched_table(rows: list[dict[str, Any]], targets: list[float], arms: list[str]) -> list[dict[str, Any]]:
    """One row per (arm, target): n_seeds, value_mean and {metric}_mean / _std over seeds."""
    cells: dict[tuple[str, int], list] = defaultdict(list)
    for r in rows:
        cells[(r["arm"], r["seed"])].append((r["value"], r["l0"], r))
    seeds = sorted({r["seed"] for r in rows})
    out = []
    for arm in arms:
        for tgt in targets:
            got = [interpolate_at(cells[(arm, s)], tgt, METRICS) for s in seeds if (arm, s) in cells]
            got = [g for g in got if g is not None]
            row: dict[str, Any] = {"arm": arm, "l0_target": float(tgt), "n_seeds": len(got),
                                   "value_mean": mean_std([g["value"] for g in got])[0]}
            for m in METRICS:
                row[f"{m}_mean"], row[f"{m}_std"] = mean_std([g[m] for g in got])
            out.append(row)
    return out


def comparisons(matched: list[dict[str, Any]], se_factor: float) -> list[dict[str, Any]]:
    """Every comparison behind claims (a)–(e)."""
    idx = {(r["arm"], r["l0_target"]): r for r in matched}
    arms = list(dict.fromkeys(r["arm"] for r in matched))
    targets = sorted({r["l0_target"] for r in matched})
    out: list[dict[str, Any]] = []
    if AEN not in arms:
        return out

    def one(claim: str, metric: str, hib: bool, other: str, tgt: float, flip: bool = False) -> dict[str, Any]:
        a, b = idx[(AEN, tgt)], idx[(other, tgt)]
        diff, se, lab = verdict(a[f"{metric}_mean"], a[f"{metric}_std"], int(a["n_seeds"]), b[f"{metric}_mean"],
                                b[f"{metric}_std"], int(b["n_seeds"]), hib, se_factor)
        if flip:
            lab = {"holds": "does not hold", "does not hold": "holds"}.get(lab, lab)
        return {"claim": claim, "metric": metric, "l0_target": tgt, "other": other, "aen_mean": a[f"{metric}_mean"],
                "aen_std": a[f"{metric}_std"], "aen_n": int(a["n_seeds"]), "other_mean": b[f"{metric}_mean"],
                "other_std": b[f"{metric}_std"], "other_n": int(b["n_seeds"]), "aen_advantage": diff, "se": se,
                "verdict": lab}

    for claim, _, metric, hib in CLAIMS:
        for other in arms:
            if other != AEN:
                out += [one(claim, metric, hib, other, t) for t in targets]
    if "en" in arms:
        out += [one("e", "dead_fraction", False, "en", t, flip=True) for t in targets]
    return out


def _pm(mean: float, std: float, scale: float = 1.0, digits: int = 2) -> str:
    if mean != mean:  # nan
        return "n/a"
    s = f"{mean * scale:.{digits}f}"
    return s + (f" ± {std * scale:.{digits}f}" if std == std else "")


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in body]


def summary_lines(cfg: Any, rows: list[dict[str, Any]], matched: list[dict[str, Any]], comps: list[dict[str, Any]],
                  timing: dict[str, Any]) -> list[str]:
    arms = list(dict.fromkeys(r["arm"] for r in matched))
    targets = sorted({r["l0_target"] for r in matched})
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"# Feature starvation on {cfg.model}, layer {cfg.layer} ({cfg.hook}) — preset `{cfg.preset}`", "",
             f"Activations: {cfg.train_tokens:,} training tokens and {cfg.eval_tokens:,} held-out tokens of `{cfg.text}` "
             f"(documents split {1 - cfg.held_out_fraction:.0%}/{cfg.held_out_fraction:.0%} by a seeded hash), "
             f"contexts of {cfg.ctx_len} tokens, BOS dropped, tokens above {cfg.outlier_factor:g}× the median norm "
             f"dropped. SAEs: d_sae = {cfg.d_sae}, {cfg.steps} steps × {cfg.batch_size} tokens, lr {cfg.lr:g}, "
             f"inputs scaled to E‖x‖² = d_in (folded into the saved weights), seeds {seeds}; {len(rows)} SAEs. "
             f"Metrics on the held-out activations; CE loss on {cfg.ce_contexts} held-out contexts with the "
             f"reconstruction spliced in at the hook (BOS position kept clean). "
             f"Command: `python -m llm_eval.starvation --preset {cfg.preset}`.", "",
             "Verdict rule: AEN's advantage Δ (mean over seeds, in the claimed direction) against SE = "
             f"√(s²_AEN/n_AEN + s²_B/n_B): 'holds' if Δ > {cfg.se_factor:g}·SE, 'does not hold' if "
             f"Δ < −{cfg.se_factor:g}·SE, else 'within noise'; 'n/a' if a side has < 2 seeds bracketing the target. "
             "A claim's overall verdict is the label of more than half of its defined comparisons, else 'mixed'.", "",
             "## Verdicts", ""]
    for claim, text, metric, _ in CLAIMS + [("e", "plain EN does as well as AEN on dead fraction (the ablation)",
                                               "dead_fraction", False)]:
        labs = [c["verdict"] for c in comps if c["claim"] == claim]
        lines.append(f"- **({claim})** {text}: **{overall(labs)}** — {tally(labs)}.")
    lines += ["", "## Matched-L0 table", "",
              "dead % / FVU / CE loss recovered (mean ablation) / KL (nats), mean ± std over seeds.", ""]
    body = []
    for arm in arms:
        cells = []
        for t in targets:
            r = next(m for m in matched if m["arm"] == arm and m["l0_target"] == t)
            if r["n_seeds"] == 0:
                cells.append("n/a (not bracketed)")
                continue
            note = f" (n={int(r['n_seeds'])})" if r["n_seeds"] < len(seeds) else ""
            cells.append(f"{_pm(r['dead_fraction_mean'], r['dead_fraction_std'], 100, 1)} / "
                         f"{_pm(r['fvu_mean'], r['fvu_std'], 1, 3)} / {_pm(r['ce_recovered_mean_mean'], r['ce_recovered_mean_std'], 1, 3)} / "
                         f"{r['kl_mean']:.3f}{note}")
        body.append([arm] + cells)
    lines += _table(["arm"] + [f"L0 = {t:g}" for t in targets], body)
    for claim, text, metric, _ in CLAIMS:
        lines += ["", f"## ({claim}) {text}", "",
                  f"Cells: verdict (✓ holds, ✗ does not hold, ~ within noise, – n/a), AEN's advantage Δ ± SE on `{metric}`.", ""]
        body = []
        for other in [a for a in arms if a != AEN]:
            cells = []
            for t in targets:
                c = next(c for c in comps if c["claim"] == claim and c["other"] == other and c["l0_target"] == t)
                cells.append(SYMBOL[c["verdict"]] + ("" if c["aen_advantage"] != c["aen_advantage"]
                                                     else f" {c['aen_advantage']:+.4f} ± {c['se']:.4f}"))
            body.append([other] + cells)
        lines += _table(["other"] + [f"L0 = {t:g}" for t in targets], body)
    lines += ["", "## Against the paper's Pythia-70M figures (SPEC §5)", "",
              "Dead % / explained variance at matched L0. The paper's numbers are the authors' logs for Pythia-70M "
              "(4096 latents, last training batch), quoted from SPEC §5; ours are this run's held-out values at the "
              "nearest target. Order = arms sorted by dead fraction, fewest first.", ""]
    for paper_l0, ref in PAPER_PYTHIA.items():
        t = min(targets, key=lambda x: abs(x - paper_l0))
        ours = {m["arm"]: m for m in matched if m["l0_target"] == t and m["n_seeds"] > 0}
        common = [a for a in ref if a in ours]
        body = [[a, f"{ref[a][0]:.1f} / {ref[a][1]:.2f}",
                 f"{100 * ours[a]['dead_fraction_mean']:.1f} / {1 - ours[a]['fvu_mean']:.2f}"] for a in common]
        lines += [f"Paper L0 ≈ {paper_l0} against ours at L0 = {t:g}:", ""]
        lines += _table(["arm", "paper dead % / EV", "ours dead % / EV"], body)
        lines += ["", f"- paper order: {' < '.join(sorted(common, key=lambda a: ref[a][0]))}",
                  f"- our order: {' < '.join(sorted(common, key=lambda a: ours[a]['dead_fraction_mean']))}", ""]
    if timing:
        lines += ["## Throughput and wall time", ""]
        for split in ("train", "heldout"):
            h = timing.get(f"harvest_{split}")
            if h:
                lines.append(f"- harvest ({split}): {h['tokens']:,} tokens in {h['wall_s']:.0f} s, "
                             f"{h['tokens_per_s']:,.0f} tokens/s")
        tr = timing.get("training")
        if tr:
            lines.append(f"- training: {tr['saes']} SAEs, median {tr['median_tokens_per_s']:,.0f} tokens/s, "
                         f"{tr['total_train_s'] / 3600:.2f} h of training in all")
    lines += ["", "Files: results.csv (one row per SAE), matched.csv, verdicts.csv, firing_hist.csv, config.json, "
              "timing.json; figures llm_starvation_vs_l0.png, llm_firing_hist.png.", ""]
    return lines


def write_report(cfg: Any) -> dict[str, Path]:
    """matched.csv, verdicts.csv and summary.md in cfg.results_dir, from its results.csv."""
    import json

    res = cfg.results_dir
    rows = read_csv(res / "results.csv")
    arms = [a for a in cfg.arms if any(r["arm"] == a for r in rows)]
    targets = sorted(cfg.l0_targets)
    matched = matched_table(rows, targets, arms)
    comps = comparisons(matched, cfg.se_factor)
    cols = ["arm", "l0_target", "n_seeds", "value_mean"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    write_csv(res / "matched.csv", cols, matched)
    write_csv(res / "verdicts.csv", VERDICT_COLUMNS, comps)
    timing = json.loads((res / "timing.json").read_text()) if (res / "timing.json").exists() else {}
    (res / "summary.md").write_text("\n".join(summary_lines(cfg, rows, matched, comps, timing)))
    return {"matched": res / "matched.csv", "verdicts": res / "verdicts.csv", "summary": res / "summary.md"}
