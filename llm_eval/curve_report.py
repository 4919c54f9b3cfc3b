"""curves.csv and summary.md of the long runs (llm_eval.long; docs/method.md §7.7).

summary.md is headed ``PARTIAL: k of n evaluation points`` until every point of every long run
is in curves.csv; only then is it written as final (and ``timing.json`` gets ``final: true``).
For each run it tabulates the starvation curve (dead fraction at several windows, the fractions
firing below 1e-4 and 1e-5 of the tokens, dense fraction, FVU, L0), CE loss recovered at the end,
and whether starvation is still growing by the rule of :func:`geomsae.study.curves.still_growing`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from geomsae.study.curves import GROWTH_TOL, eval_steps, still_growing
from geomsae.study.tables import read_csv, write_csv
from llm_eval import plots
from llm_eval.config import LLMStarvationConfig, n_expected

CURVES = "curves.csv"
HEAD = ["arm", "seed", "param", "value", "point", "step", "tokens_seen"]
METRICS = ["l0", "fvu", "dead_fraction", "rare_fraction_1e4", "rare_fraction_1e5", "dense_fraction"]
CE = ["ce_clean", "ce_patched", "ce_zero", "ce_mean", "ce_recovered_zero", "ce_recovered_mean", "kl"]


def columns(cfg: LLMStarvationConfig) -> list[str]:
    """Columns of curves.csv, in order."""
    return [*HEAD, *METRICS, *(f"dead_at_{w}" for w in sorted(cfg.eval_windows)), "dense_fraction_001",
            "l0_raw", "dead_fraction_raw", "shrinkage", *CE, "eval_time_s", "hparams"]


def write_curves(cfg: LLMStarvationConfig, curves: dict[tuple, dict[str, Any]]) -> Path:
    """curves.csv, rows ordered by (arm in curve_arms order, seed, point)."""
    order = {a: i for i, a in enumerate(cfg.curve_arms)}
    keys = sorted(curves, key=lambda k: (order.get(k[0], len(order)), k[1], k[2]))
    return write_csv(cfg.results_dir / CURVES, columns(cfg), [curves[k] for k in keys], fill_missing=True)


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.2f}"


def _rate(timing: dict[str, Any], curve_steps: int) -> list[str]:
    """The cost lines of the summary; a stack timed over fewer than its ``curve_steps`` steps (runs killed before
    llm_eval.long wrote their timing) is said to be, and the total wall time is then a lower bound."""
    lines = []
    for split in ("train", "heldout"):
        h = timing.get(f"harvest_{split}")
        if h:
            lines.append(f"- Harvest ({split}): {h['tokens']:,} tokens at {h['tokens_per_s']:,.0f} tokens/s "
                         f"({h['wall_s'] / 60:.1f} min, its last run).")
    lt = timing.get("long_training", {})
    if lt:
        steps = sum(t["steps"] for t in lt.values())
        secs = sum(t["train_s"] for t in lt.values())
        rates = ", ".join(f"{name} {t.get('sae_tokens_per_s', 0.0):,.0f}" for name, t in lt.items())
        lines.append(f"- Long-run training: {steps:,} stack steps in {secs / 3600:.2f} h of training "
                     f"(evaluation excluded); SAE-tokens/s per stack: {rates}.")
    short = {name: t["steps"] for name, t in lt.items() if t["steps"] < curve_steps}
    if short:
        lines.append("- Timed over fewer steps than they ran (earlier sessions were killed before the timing was "
                     "written): " + ", ".join(f"{name} {n:,} of {curve_steps:,} steps" for name, n in short.items())
                     + "; their rate is that of the timed steps.")
    if "wall_s_total" in timing:
        lines.append(f"- Total wall time of the long-run stage over every (re)start: "
                     f"{'at least ' if short else ''}{timing['wall_s_total'] / 3600:.2f} h (the sweep's own timing is "
                     "in sweep/timing.json).")
    return lines


def write_summary(cfg: LLMStarvationConfig, curves: dict[tuple, dict[str, Any]], timing: dict[str, Any]) -> Path:
    """summary.md (PARTIAL until every point is in); returns its path."""
    n, k = n_expected(cfg), len(curves)
    final = k >= n
    last = len(cfg.curve_points) - 1
    lines = [] if final else [f"# PARTIAL: {k} of {n} evaluation points", "",
                              "The run has not finished: rerun the command below to resume it. Nothing here is final.",
                              ""]
    lines += [f"# Starvation over training: {cfg.preset}", "",
              f"`python -m llm_eval.starvation --preset {cfg.preset}` (docs/method.md §7.7). Model {cfg.model}, "
              f"layer {cfg.layer} {cfg.hook}, text {cfg.text}; {cfg.train_tokens:,} training tokens cached, "
              f"{cfg.eval_tokens:,} held-out; d_sae {cfg.d_sae}; each long run {cfg.curve_steps:,} steps × "
              f"{cfg.batch_size} = {cfg.curve_steps * cfg.batch_size:,} tokens "
              f"({cfg.curve_steps * cfg.batch_size / cfg.train_tokens:.2f} epochs over the cache), evaluated after "
              f"{', '.join(f'{s * cfg.batch_size:,}' for s in eval_steps(cfg.curve_steps, cfg.curve_points))} tokens.",
              "", "Fractions in % of d_sae, on the held-out tokens (folded firing rule, docs/method.md §3). "
              "'< 1e-4', '< 1e-5': firing on fewer than that share of the tokens, dead included.", ""]
    runs = sorted({(r[0], r[1]) for r in curves}, key=lambda r: (list(cfg.curve_arms).index(r[0])
                                                                  if r[0] in cfg.curve_arms else 99, r[1]))
    wins = sorted(cfg.eval_windows)
    head = ["tokens", "L0", "FVU", "dead", *(f"dead@{w:,}" for w in wins), "< 1e-4", "< 1e-5", "dense"]
    growth = []
    for arm, seed in runs:
        pts = [curves[(arm, seed, j)] for j in range(last + 1) if (arm, seed, j) in curves]
        r0 = pts[0]
        lines += [f"## {arm}, seed {seed} ({r0['param']} = {float(r0['value']):g})", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in pts:
            lines.append(f"| {int(r['tokens_seen']):,} | {float(r['l0']):.1f} | {float(r['fvu']):.3f} | "
                         f"{_pct(r['dead_fraction'])} | " + " | ".join(_pct(r.get(f'dead_at_{w}')) for w in wins)
                         + f" | {_pct(r['rare_fraction_1e4'])} | {_pct(r['rare_fraction_1e5'])} | "
                         f"{_pct(r['dense_fraction'])} |")
        end = curves.get((arm, seed, last))
        if end is not None and end.get("ce_recovered_mean") is not None:
            lines += ["", f"CE loss recovered at the end: {float(end['ce_recovered_mean']):.3f} (mean ablation), "
                      f"{float(end['ce_recovered_zero']):.3f} (zero ablation); KL {float(end['kl']):.4f}."]
        lines.append("")
        if len(pts) >= 2:
            t = [float(r["tokens_seen"]) for r in pts]
            g_dead, s_dead = still_growing(t, [float(r["dead_fraction"]) for r in pts])
            g_rare, s_rare = still_growing(t, [float(r["rare_fraction_1e4"]) for r in pts])
            growth.append(f"| {arm} | {seed} | {int(t[-1]):,} | {'yes' if g_dead else 'no'} ({100 * s_dead:+.2f}) | "
                          f"{'yes' if g_rare else 'no'} ({100 * s_rare:+.2f}) |")
    lines += ["## Is starvation still growing?", "",
              f"Rule: growing when the last two points rise by more than {100 * GROWTH_TOL:g} % of d_sae; in "
              "brackets the rise per decade of tokens, in % of d_sae (geomsae.study.curves.still_growing)."
              + ("" if final else " Partial runs: judged at their last point so far."), "",
              "| arm | seed | last point (tokens) | dead growing | < 1e-4 growing |", "|---|---|---|---|---|",
              *growth, "", "Against the authors (docs/method.md §5): TopK without AuxK had 13.9 % dead latents on Pythia-70M "
              "after 204 M tokens, and 80–88 % on Llama-3.1-8B; compare the dead column of topk above at its last point.",
              "", "## Cost (measured)", "", *_rate(timing, cfg.curve_steps), ""]
    path = cfg.results_dir / "summary.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def load(cfg: LLMStarvationConfig) -> dict[tuple, dict[str, Any]]:
    """{(arm, seed, point): row} from curves.csv ({} when absent)."""
    path = cfg.results_dir / CURVES
    return {(r["arm"], int(r["seed"]), int(r["point"])): r for r in read_csv(path)} if path.exists() else {}


def report(cfg: LLMStarvationConfig, figures_dir: str | Path | None = None) -> list[Path]:
    """summary.md and the curve figure from curves.csv; marks timing.json final when complete."""
    curves = load(cfg)
    if not curves:
        return []
    tp = cfg.results_dir / "timing.json"
    timing = json.loads(tp.read_text()) if tp.exists() else {}
    if len(curves) >= n_expected(cfg) and tp.exists():
        timing["final"] = True
        tp.write_text(json.dumps(timing, indent=2) + "\n")
    return [write_summary(cfg, curves, timing), plots.curves_figure(cfg, figures_dir)]
