"""What the spiked-model study reports: its claims, matched metrics and prose (:data:`STUDY`).

The report itself (matched.csv, verdicts.csv, summary.md) is :func:`geomsae.study.write_report`,
shared with the real-model study; only what differs is here. Claims, each AEN against every
other arm at every ρ × L0 target:

- (a) fewer dead latents (dead_fraction, lower is better);
- (b) more true features recovered (recovery rate: max cos > 0.9), (b') the same by MCC;
- (c) less shrinkage (|relative bias − 1|);
- (d) the ablation: plain EN does as well as AEN on dead fraction, recovery rate and
  shrinkage (AEN better beyond noise counts against it).
"""

from __future__ import annotations

from typing import Any

from geomsae.study import Claim, Study
from geomsae.study.matched import mean_std
from geomsae.study.report import pm
from synthetic.plots import FIGURES

CLAIMS: tuple[Claim, ...] = (
    Claim("a", "AEN has fewer dead latents than each other arm at matched L0", "dead_fraction", False),
    Claim("b", "AEN recovers more true features (recovery rate: max cos > 0.9)", "recovery_rate", True),
    Claim("b'", "AEN recovers more true features (MCC, Hungarian matching)", "mcc", True),
    Claim("c", "AEN shrinks less (|relative bias − 1|)", "shrinkage", False),
    *(Claim("d", "plain EN does as well as AEN (the ablation)", metric, hib, other="en", flip=True)
      for metric, hib in (("dead_fraction", False), ("recovery_rate", True), ("shrinkage", False))),
)
MATCHED_METRICS = ("fvu", "dead_fraction", "dense_fraction", "dense_fraction_001", "mmcs", "recovery_rate", "mcc",
                   "support_f1", "l2_ratio", "rel_bias", "shrinkage")


def describe(cfg: Any, rows: list[dict[str, Any]]) -> list[str]:
    """Title and the paragraph on data, training and evaluation."""
    rhos = sorted({r["rho"] for r in rows})
    return [f"# Feature starvation on the spiked model — preset `{cfg.preset}`", "",
            f"Spiked model (SPEC §4): n = {cfg.n}, m = d_sae = {cfg.m}, k = {cfg.k} active, magnitudes U[1, 3], no "
            f"noise; ρ ∈ {{{', '.join(f'{r:g}' for r in rhos)}}}; seeds {list(cfg.seeds)} (a seed draws the data and "
            f"the SAE init). {cfg.steps} steps × {cfg.batch_size} tokens (lr {cfg.lr:g}, inputs scaled to E‖x‖² = n), "
            f"trained in stacks of at most {cfg.stack_size}; metrics on {cfg.n_eval} held-out tokens; {len(rows)} SAEs. "
            f"Command: `python -m synthetic.starvation --preset {cfg.preset}`."]


def chance_note(cfg: Any, rows: list[dict[str, Any]], matched: list[dict[str, Any]]) -> list[str]:
    """The caution on the recovery rate at high ρ, with the chance level of the mean atom."""
    rhos = sorted({r["rho"] for r in rows})
    first = next(a for a in cfg.arms if any(r["arm"] == a for r in rows))
    chance = {rho: mean_std([r["recovery_chance"] for r in rows if r["rho"] == rho and r["arm"] == first])[0]
              for rho in rhos}
    if not any(chance[r] > 0 for r in rhos):
        return []
    return ["", "Caution: at high ρ every atom is within cos √ρ of the spike, so one learned atom along the mean atom "
            "'recovers' features by the cos > 0.9 rule. Chance recovery rate (mean atom alone) by ρ: "
            + ", ".join(f"{r:g}: {chance[r]:.2f}" for r in rhos) + ". MCC (one-to-one matching) is not fooled."]


def matched_cell(r: dict[str, Any]) -> str:
    return (f"{pm(r['dead_fraction_mean'], r['dead_fraction_std'], 100, 1)} / {1 - r['fvu_mean']:.2f} / "
            f"{r['recovery_rate_mean']:.2f} / {r['support_f1_mean']:.2f}")


STUDY = Study(cell_keys=("rho",), key_labels={"rho": "ρ"}, claims=CLAIMS, matched_metrics=MATCHED_METRICS,
              matched_caption="dead % / explained variance / recovery rate / support F1, mean ± std over seeds",
              matched_cell=matched_cell, figures=tuple(f for f, _ in FIGURES), describe=describe, notes=chance_note,
              digits=3)
"""The spiked-model study, for :func:`geomsae.study.write_report`."""
