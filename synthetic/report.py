"""What the spiked-model study reports: its claims, matched metrics and prose (:data:`STUDY`).

The report itself (matched.csv, verdicts.csv, summary.md) is :func:`geomsae.study.write_report`,
shared with the real-model study; only what differs is here. Claims, each AEN against every
other arm at every ρ × L0 target:

- (a) fewer dead latents (dead_fraction, lower is better);
- (b) more true features recovered (recovery rate: max cos > 0.9), (b') the same by MCC (the
  literature's: correlation of Hungarian-matched activations with the true codes);
- (c) less shrinkage (|relative bias − 1|);
- (d) the ablation: plain EN does as well as AEN on dead fraction, recovery rate and
  shrinkage (AEN better by at least the minimum effect counts against it).

The recovery rate, one-to-one MMCS and MCC are printed with their chance levels (the spike-only
dictionary, docs/method.md §3) and chance-corrected.
"""

from __future__ import annotations

from typing import Any

from geomsae.study import Claim, Study
from geomsae.study.matched import mean_std
from geomsae.study.report import pm
from geomsae.study.stack import arm_settings
from geomsae.study.verdicts import NONINFERIORITY_FVU
from geomsae.training.log import unconverged
from synthetic.plots import FIGURES

CLAIMS: tuple[Claim, ...] = (
    Claim("a", "AEN has fewer dead latents than each other arm at matched L0", "dead_fraction", False),
    Claim("b", "AEN recovers more true features (recovery rate: max cos > 0.9)", "recovery_rate", True),
    Claim("b'", "AEN recovers more true features (MCC: Hungarian-matched activation correlations)", "mcc", True),
    Claim("c", "AEN shrinks less (|relative bias − 1|)", "shrinkage", False),
    *(Claim("d", "plain EN does as well as AEN (the ablation)", metric, hib, other="en", flip=True)
      for metric, hib in (("dead_fraction", False), ("recovery_rate", True), ("shrinkage", False))),
    Claim("e", "AEN reconstructs at least as well (FVU) as each other arm at matched L0 (non-inferiority)", "fvu", False,
          margin=NONINFERIORITY_FVU),
)
MATCHED_METRICS = ("fvu", "dead_fraction", "dead_fraction_raw", "l0_raw", "rare_fraction_1e4", "rare_fraction_1e5",
                   "dense_fraction", "dense_fraction_001", "mmcs", "recovery_rate", "recovery_cc", "mmcs_1to1",
                   "mmcs_1to1_cc", "mcc", "mcc_cc", "support_f1", "l2_ratio", "rel_bias", "shrinkage", "loss_rel_change",
                   "dead_last_batch", "gamma", "gamma_start")


def describe(cfg: Any, rows: list[dict[str, Any]]) -> list[str]:
    """Title and the paragraph on data, training and evaluation."""
    rhos = sorted({r["rho"] for r in rows})
    return [f"# Feature starvation on the spiked model — preset `{cfg.preset}`", "",
            f"Spiked model (docs/method.md §4): n = {cfg.n}, m = d_sae = {cfg.m}, k = {cfg.k} active, magnitudes U[1, 3], no "
            f"noise; ρ ∈ {{{', '.join(f'{r:g}' for r in rhos)}}}; seeds {list(cfg.seeds)} (a seed draws the data and "
            f"the SAE init). {_lengths(cfg)} × {cfg.batch_size} tokens (lr {cfg.lr:g}, inputs scaled to E‖x‖² = n), "
            f"trained in stacks of at most {cfg.stack_size}; metrics on {cfg.n_eval} held-out tokens; {len(rows)} SAEs. "
            f"Command: `python -m synthetic.starvation --preset {cfg.preset}`."]


def _lengths(cfg: Any) -> str:
    """'N steps', or each arm's steps where they differ (arm_steps)."""
    by = {a: arm_settings(cfg, a).steps for a in cfg.arms}
    if len(set(by.values())) == 1:
        return f"{cfg.steps} steps"
    return ("steps per arm, each where the length ablation found it converged (docs/method.md §7.5): "
            + ", ".join(f"{a} {n}" for a, n in by.items()) + ", each")


def chance_note(cfg: Any, rows: list[dict[str, Any]], matched: list[dict[str, Any]]) -> list[str]:
    """Chance levels by ρ of the recovery rate, one-to-one MMCS and MCC (the spike-only dictionary),
    and how many runs collapsed or had not converged."""
    rhos = sorted({r["rho"] for r in rows})
    cols = [("recovery_chance", "recovery rate"), ("mmcs_1to1_chance", "one-to-one MMCS"), ("mcc_chance", "MCC")]
    if not all(c in rows[0] for c, _ in cols):
        return []
    chance = {(rho, c): mean_std([r[c] for r in rows if r["rho"] == rho])[0] for rho in rhos for c, _ in cols}
    inflated = [name for c, name in cols if max(chance[(rho, c)] for rho in rhos) > 0.5]
    lines = ["", "**Chance levels.** A dictionary that shares only the spike with the true atoms (the spike-only "
             "dictionary, docs/method.md §3) scores, by ρ (" + ", ".join(f"{r:g}" for r in rhos) + "): "
             + "; ".join(f"{name} " + " / ".join(f"{chance[(rho, c)]:.2f}" for rho in rhos) for c, name in cols)
             + ". " + (f"Above 0.5 at some ρ (a learned spike alone scores high): {', '.join(inflated)}. "
                       if inflated else "")
             + "The matched table reports the chance-corrected recovery rate, (score − chance)/(1 − chance); "
             "results.csv and matched.csv hold every score, its chance level and its chance-corrected value."]
    n_coll = sum(int(r.get("collapsed", 0) == 1) for r in rows)
    slopes = [r.get("loss_rel_change", float("nan")) for r in rows]
    moving = sum(unconverged(v) for v in slopes)
    lines += ["", f"**Runs.** {n_coll} of {len(rows)} runs collapsed (FVU ≥ 0.95 or L0 < 0.5; left out of the "
              f"interpolation). {moving} of {len(rows)} runs' training loss still fell by more than 1 % over the last "
              "10 % of the steps (`loss_rel_change` < −0.01 in results.csv): they had not converged."]
    return lines


def matched_cell(r: dict[str, Any]) -> str:
    return (f"{pm(r['dead_fraction_mean'], r['dead_fraction_std'], 100, 1)} / {1 - r['fvu_mean']:.2f} / "
            f"{r['recovery_cc_mean']:.2f} / {r['mcc_mean']:.2f} / {r['support_f1_mean']:.2f}")


STUDY = Study(cell_keys=("rho",), key_labels={"rho": "ρ"}, claims=CLAIMS, matched_metrics=MATCHED_METRICS,
              matched_caption="dead % / explained variance / chance-corrected recovery rate / MCC / support F1, "
              "mean ± std over seeds",
              matched_cell=matched_cell, figures=tuple(f for f, _ in FIGURES), describe=describe, notes=chance_note,
              digits=3)
"""The spiked-model study, for :func:`geomsae.study.write_report`."""
