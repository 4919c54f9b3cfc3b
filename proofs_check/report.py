"""Run every statement's checks, write ``report.md`` and ``config.json``, draw the figures.

Verdict words in the report are computed from the numbers by :func:`proofs_check._common.verdict`.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from proofs_check import (
    amortised,
    jacobian,
    lasso_instability,
    lipschitz,
    support_recovery,
)
from proofs_check._common import TIGHT, Check, Config, fmt, single_thread, verdict
from proofs_check.plots import plot_all

STATEMENTS = (
    ("lipschitz", "Global Lipschitz bound of the exact EN/AEN map (fixed w) and the 1-Lipschitz fit", lipschitz),
    ("lasso_instability", "Lasso instability as ρ → 1, support flips, duplicated atoms", lasso_instability),
    ("jacobian", "Local Jacobian on the active set and its norm", jacobian),
    ("support_recovery", "Support recovery: primal–dual witness against the exact solver", support_recovery),
    ("amortised", "Amortised encoders of trained SAEs against the exact map of their own objective", amortised),
)


class Results(NamedTuple):
    """Everything a run produced."""

    cfg: Config
    """The configuration."""
    quick: bool
    """Whether the reduced grid was used."""
    checks: dict[str, list[Check]]
    """Checks per statement key."""
    data: dict[str, dict[str, Any]]
    """Tables per statement key (for the report and figures)."""
    seconds: dict[str, float]
    """Wall time per statement (printed, not written, so the outputs stay deterministic)."""


def run_all(cfg: Config, quick: bool = False, progress: bool = True) -> Results:
    """Run the four statements' sweeps under one thread each for torch and BLAS."""
    checks, data, secs = {}, {}, {}
    with single_thread():
        for key, _, mod in STATEMENTS:
            t = time.perf_counter()
            checks[key], data[key] = mod.run(cfg, progress=progress)
            secs[key] = time.perf_counter() - t
    return Results(cfg, quick, checks, data, secs)


def statement(mod: Any) -> str:
    """The quoted statement: the module docstring up to its derivation / checks paragraphs."""
    return re.split(r"\n\n(?=Derivation|What is checked|With noise|Validity)", (mod.__doc__ or "").strip())[0]


def family(name: str) -> str:
    """The check's name without its '[case]' label."""
    return re.sub(r"\s*\[[^\]]*\]\s*$", "", name)


def label(name: str) -> str:
    """The check's '[case]' label, or ''."""
    m = re.search(r"\[([^\]]*)\]\s*$", name)
    return m.group(1) if m else ""


def worst(cs: list[Check]) -> Check:
    """The check closest to failing (largest measured/bound, or a failure; smallest for 'lower')."""
    failed = [c for c in cs if c.holds is False]
    if failed:
        return failed[0]
    k = cs[0].kind
    if k == "lower":
        return min(cs, key=lambda c: c.measured)
    if k == "bound":
        return max(cs, key=lambda c: c.measured / c.bound if c.bound and math.isfinite(c.bound) and c.bound > 0 else -1)
    return max(cs, key=lambda c: c.measured)


def summary_rows(cs: list[Check]) -> list[tuple[str, int, int, Check]]:
    """(family, number of checks, number failed, worst check) per family, in first-seen order."""
    fams: dict[str, list[Check]] = {}
    for c in cs:
        fams.setdefault(family(c.name), []).append(c)
    return [(f, len(v), sum(c.holds is False for c in v), worst(v)) for f, v in fams.items()]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(h.replace("|", "\\|") for h in header) + " |", "|" + "---|" * len(header)]
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731 - a cell's own bars would split the row
    return out + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]


def _summary_table(cs: list[Check]) -> list[str]:
    rows = []
    for f, n, nf, w in summary_rows(cs):
        rows.append([f, str(n), str(nf), fmt(w.measured), fmt(w.bound), fmt(w.details.get("err")), label(w.name) or "—", verdict(w)])
    return _table(["check", "cases", "failed", "worst measured", "bound", "error bar", "worst case", "verdict"], rows)


def _lipschitz_section(d: dict[str, Any]) -> list[str]:
    rows = [[r["method"], fmt(r["rho"]), fmt(r["lam2"]), fmt(r["random_median"]), fmt(r["perturb_median"]), fmt(r["adversarial"]),
             fmt(r["best_gain"]), fmt(r["spec"]), fmt(r["sharp"]), fmt(r["worst"] / r["spec"]) if math.isfinite(r["spec"]) else "—",
             fmt(r["fit_worst"])] for r in d["rows"]]
    ens = [r for r in d["rows"] if math.isfinite(r["spec"])]
    out = _table(["method", "ρ", "λ2", "median ratio, random pairs", "median, δ-perturbations", "worst, adversarial",
                  "largest local gain visited", "bound min(‖D‖/λ2, 1/(2√λ2))", "sharp φ(‖D‖)", "worst/bound", "worst fit ratio"], rows)
    if ens:
        r = max(ens, key=lambda r: r["worst"] / r["spec"])
        q = min(ens, key=lambda r: r["worst"] / r["spec"])
        n_tight = sum(r["worst"] / r["spec"] >= TIGHT for r in ens)
        out += ["", f"Over {len(ens)} EN/AEN configurations the worst ratio reaches {r['worst'] / r['spec']:.4f} of the bound "
                f"({r['method']}, ρ = {fmt(r['rho'])}, λ2 = {fmt(r['lam2'])}); the least tight is {fmt(q['worst'] / q['spec'])} "
                f"({q['method']}, ρ = {fmt(q['rho'])}, λ2 = {fmt(q['lam2'])}). {n_tight} of {len(ens)} configurations are within "
                f"{TIGHT:g} of the bound. Typical (median) ratios are far below it."]
    las = [r for r in d["rows"] if r["method"] == "lasso"]
    if las:
        out += ["", "Lasso (no uniform bound): worst ratio " + ", ".join(f"{fmt(r['worst'])} at ρ = {fmt(r['rho'])}" for r in las)
                + "; its fit ratio stays ≤ 1: worst " + fmt(max(r["fit_worst"] for r in las)) + "."]
    return out


def _lasso_section(d: dict[str, Any]) -> list[str]:
    deltas = d["deltas"]
    head = ["ρ", "lasso median 1/σ_min(D_S)", "lasso worst", f"EN worst gain (λ2={fmt(d['en_lam2'])})", "AEN worst gain", "EN bound 1/(2√λ2)"]
    head += [f"flip rate {mt} δ={fmt(dl)}" for mt in ("lasso", "EN", "AEN") for dl in (deltas[0], deltas[-1])]
    head += ["median r(x)/‖x‖ lasso", "EN", "AEN"]
    rows = []
    for r in d["rows"]:
        row = [fmt(r["rho"]), fmt(r["lasso"]["ratio_median"]), fmt(r["lasso"]["ratio_max"]), fmt(r["EN"]["ratio_max"]),
               fmt(r["AEN"]["ratio_max"]), fmt(r["en_bound"])]
        row += [fmt(r[mt]["flip_rates"][i]) for mt in ("lasso", "EN", "AEN") for i in (0, -1)]
        row += [fmt(r[mt]["radius_median"]) for mt in ("lasso", "EN", "AEN")]
        rows.append(row)
    first, last = d["rows"][0], d["rows"][-1]
    grow = last["lasso"]["ratio_median"] / first["lasso"]["ratio_median"]
    return _table(head, rows) + ["", f"From ρ = {fmt(first['rho'])} to ρ = {fmt(last['rho'])} the lasso's median local gain "
                                 f"1/σ_min(D_S) grows {fmt(grow)}-fold ({fmt(first['lasso']['ratio_median'])} → "
                                 f"{fmt(last['lasso']['ratio_median'])}; worst {fmt(first['lasso']['ratio_max'])} → "
                                 f"{fmt(last['lasso']['ratio_max'])}); the EN's gain stays ≤ {fmt(last['en_bound'])} "
                                 f"(worst {fmt(max(r['EN']['ratio_max'] for r in d['rows']))}), the AEN's (fixed w) too "
                                 f"(worst {fmt(max(r['AEN']['ratio_max'] for r in d['rows']))})."]


def _jacobian_section(d: dict[str, Any]) -> list[str]:
    rows = [[fmt(r["rho"]), fmt(r["lam2"]), fmt(r["support_median"]), fmt(r["sig_min"]), fmt(r["gain_max"]), fmt(r["fd_gain_max"]),
             fmt(r["fd_err_max"]), fmt(r["bound"]), fmt(r["gain_max"] / r["bound"]) if math.isfinite(r["bound"]) else "—"] for r in d["rows"]]
    return _table(["ρ", "λ2", "median |S|", "min σ_min(D_S)", "‖J‖₂ closed form (max)", "FD gain (max)", "FD rel. error (max)",
                   "1/(2√λ2)", "gain/bound"], rows)


def _recovery_section(d: dict[str, Any]) -> list[str]:
    cells = d["cells"]
    out = [f"λ1 = {fmt(d['lam1'])}, λ2 = {fmt(d['lam2'])} (EN, AEN); adaptive weights w = (|ẑ_EN| + 1e-6)^(−1).", ""]
    keys = ["pred_rec_obs_rec", "pred_rec_obs_fail", "pred_fail_obs_rec", "pred_fail_obs_fail", "strict", "strict_mismatch", "ties", "tie_mismatch"]
    rows = [[mt] + [str(sum(c[mt][k] for c in cells)) for k in keys] for mt in support_recovery.METHODS]
    out += ["Confusion (all cells pooled):", ""] + _table(["method", "pred. recover / obs. recover", "pred. recover / obs. fail",
                                                           "pred. fail / obs. recover", "pred. fail / obs. fail", "strict cases",
                                                           "strict mismatches", "ties (|margin| ≤ τ)", "tie mismatches"], rows)
    phase = [c for c in cells if c["noise"] == 0 and c["mag_low"] == 1.0]
    out += ["", "Phase diagram (noiseless, magnitudes U[1, 3]); each entry observed / PDW-predicted recovery rate:", ""]
    rows = []
    for c in phase:
        rates = [f"{c[mt]['observed']:.2f} / {c[mt]['predicted']:.2f}" for mt in support_recovery.METHODS]
        rows.append([fmt(c["rho"]), str(c["k"]), *rates, fmt(c["lasso"]["max_score"])])
    out += _table(["ρ", "k", *support_recovery.METHODS, "lasso irrepresentable score (median)"], rows)
    sweep = sorted((c for c in cells if c["k"] == d["k_sweep"]), key=lambda c: (c["rho"], c["noise"], -c["mag_low"]))
    if len({(c["noise"], c["mag_low"]) for c in sweep}) > 1:
        out += ["", f"Noise σ and smallest-magnitude sweep at k = {d['k_sweep']} (observed / predicted):", ""]
        rows = [[fmt(c["rho"]), fmt(c["noise"]), fmt(c["mag_low"])] + [f"{c[mt]['observed']:.2f} / {c[mt]['predicted']:.2f}"
                                                                       for mt in support_recovery.METHODS] for c in sweep]
        out += _table(["ρ", "noise σ", "smallest magnitude", *support_recovery.METHODS], rows)
    best = {mt: float(np.mean([c[mt]["observed"] for c in phase])) for mt in support_recovery.METHODS}
    order = sorted(best, key=lambda mt: -best[mt])
    out += ["", "Mean observed recovery over the phase diagram: " + ", ".join(f"{mt} {best[mt]:.2f}" for mt in order) + "."]
    return out


def _amortised_section(d: dict[str, Any]) -> list[str]:
    rows = [[r["arch"], fmt(r["rho"]), fmt(r["lam1"]), fmt(r["lam2"]), fmt(r["enc_norm"]), fmt(r["enc_gain_median"]),
             fmt(r["enc_gain_max"]), fmt(r["exact_gain_median"]), fmt(r["exact_gain_max"]), fmt(r["exact_bound"])]
            for r in d["rows"]]
    out = _table(["SAE", "ρ", "λ1 (F units)", "λ2 (F units)", "‖W_enc‖₂", "encoder local gain, median", "max",
                  "exact map gain (FD), median", "max", "exact bound min(‖D‖/λ2, 1/(2√λ2))"], rows)
    fin = [r for r in d["rows"] if math.isfinite(r["exact_bound"])]
    if fin:
        r = max(fin, key=lambda r: r["enc_norm"] / r["exact_bound"])
        out += ["", f"Largest ratio of the encoder's global bound to the exact map's: {fmt(r['enc_norm'] / r['exact_bound'])} "
                f"({r['arch']}, ρ = {fmt(r['rho'])}). Encoder gains are measured on held-out inputs of the same model."]
    return out


SECTIONS = {"amortised": _amortised_section, "lipschitz": _lipschitz_section, "lasso_instability": _lasso_section, "jacobian": _jacobian_section,
            "support_recovery": _recovery_section}


def write_report(res: Results, out_dir: Path, figures: list[Path]) -> Path:
    """Write report.md and config.json into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    all_checks = [c for v in res.checks.values() for c in v]
    n_fail = sum(c.holds is False for c in all_checks)
    lines = ["# proofs_check: the statements of docs/method.md §1 against exact solutions", "",
             f"Generated by `python -m proofs_check{' --quick' if res.quick else ''}`; configuration in `config.json` "
             f"(seed {res.cfg.seed}, spiked dictionaries n = {res.cfg.n}, m = {res.cfg.m}). Canonical units: "
             "F(z) = ½‖x − Dz‖² + λ1 Σ w|z| + (λ2/2)‖z‖², z ≥ 0, b = 0. Every code is exact to a certified relative duality "
             f"gap ≤ {res.cfg.tol:g}; bound checks subtract the certified error bars √(2g/λ2) (code) and √(2g) (fit) before "
             f"comparing. A bound is called tight when the worst measured value reaches {TIGHT:g} of it.", "",
             f"**{len(all_checks)} checks, {n_fail} failed.**", "", "## Summary", ""]
    rows = []
    for key, title, _ in STATEMENTS:
        cs = res.checks[key]
        rows.append([title, str(len(cs)), str(sum(c.holds is False for c in cs)), str(sum(c.holds is None for c in cs))])
    lines += _table(["statement", "checks", "failed", "measured only"], rows)
    for key, title, mod in STATEMENTS:
        doc = statement(mod)
        lines += ["", f"## {title} (`proofs_check/{key}.py`)", "", "> " + doc.replace("\n", "\n> "), "", "### Checks", ""]
        lines += _summary_table(res.checks[key]) + ["", "### Measurements", ""] + SECTIONS[key](res.data[key])
    lines += ["", "## Figures", ""] + [f"- `figures/{p.name}`: {dict(FIGURES)[p.name]}" for p in figures]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    cfg = dict(res.cfg.to_dict(), quick=res.quick, command=f"python -m proofs_check{' --quick' if res.quick else ''}")
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return path


FIGURES: list[tuple[str, str]] = [
    ("proofs_lipschitz_vs_lam2.png", "Worst ‖Δz‖/‖Δx‖ of the exact EN / AEN (fixed w) map against λ2 for each coherence ρ, with "
     "min(‖D‖₂/λ2, 1/(2√λ2)), the attainment witnesses, and typical (median) ratios"),
    ("proofs_lasso_instability.png", "Lasso local ratio 1/σ_min(D_S) as ρ → 1 against the EN / AEN ratio and its bound; "
     "support-flip rate against perturbation size δ"),
    ("proofs_jacobian.png", "Closed-form Jacobian norm max σ/(σ²+λ2) and the finite-difference gain of the exact map against "
     "1/(2√λ2), over λ2 and ρ"),
    ("proofs_recovery_phase.png", "Support-recovery phase diagrams over ρ × k per method (lasso, EN, adaptive lasso, AEN): "
     "observed rate of the exact solver and the primal–dual-witness prediction"),
    ("proofs_recovery_confusion.png", "Primal–dual witness: predicted vs observed recovery counts per method (all cells pooled)"),
]


def make_figures(out_dir: str | Path, quick: bool = False, results: Results | None = None) -> list[Path]:
    """Draw every figure of :data:`FIGURES` into ``out_dir`` (running the checks unless
    ``results`` are given); returns the paths written."""
    res = results if results is not None else run_all(Config.quick() if quick else Config(), quick=quick)
    return plot_all(res, Path(out_dir), [f for f, _ in FIGURES])
