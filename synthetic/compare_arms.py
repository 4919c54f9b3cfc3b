"""Amortised vs exact on the spiked model: where does starvation come from, the objective or the encoder?

    python -m synthetic.compare_arms                     # quick sizes, ρ = 0.9, aen / en / relu_l1 / topk
    python -m synthetic.compare_arms --rho 0.5 --seed 1

For one coherence ρ and seed, each arm is trained exactly as in the starvation benchmark
(:func:`geomsae.study.stack.train_members`, the same data and settings of ``starvation_preset``),
with its knob at the value that the benchmark's matched-L0 table gives for ``l0_target``
(``value_mean`` in ``runs/starvation_<preset>/matched.csv``; the arm's starting λ, or k =
``l0_target``, when that table is absent). Then :func:`geomsae.compare.compare_sae` solves every
SAE's own problem exactly on ``n_tokens`` held-out tokens (topk: the l1 problem calibrated to
its L0) and the reports go to ``out`` (report.json / .md / .html) together with
``compare_arms.png``: per arm, each latent's firing frequency under the encoder against
under the exact map (dead latents on the axes' floor), and the relative objective gaps.
A latent dead under the encoder but alive under the exact map is starved by the amortised
encoder; one dead under both is starved by the objective itself.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geomsae.compare import CompareConfig, compare_sae
from geomsae.compare_report import markdown_table, write_reports
from geomsae.config_cli import parse_config
from geomsae.study import ARMS, Member
from geomsae.study.plotstyle import pyplot, save
from geomsae.study.stack import train_members
from geomsae.study.tables import read_csv
from synthetic import cells, starvation

FIGURE = ("compare_arms.png", "Encoder vs exact map on the spiked model (ρ = 0.9, quick sizes): per-latent firing "
          "frequency under the exact solution of each SAE's own objective (x) against under its encoder (y), dead "
          "latents at the floor, and the relative objective gap F(z_enc)/F(z*) − 1 per token")
TABLE = "compare_arms.md"


@dataclass
class CompareArmsConfig:
    """Which SAEs to compare and on what."""

    starvation_preset: str = "quick"
    """Preset of synthetic.starvation whose sizes, training settings and matched λ are used."""
    rho: float = 0.9
    """Coherence ρ of the spiked dictionary."""
    seed: int = 0
    """Seed of the data and the SAEs."""
    arms: tuple[str, ...] = ("aen", "en", "relu_l1", "topk")
    """Arms to compare (names of geomsae.study.ARMS)."""
    l0_target: float = 4.0
    """The matched-L0 target whose λ (or k) each arm is trained at."""
    n_tokens: int = 4096
    """Held-out tokens compared."""
    out: str = "runs/compare_arms"
    """Output folder of the reports and the figure."""


def knob_values(cfg: CompareArmsConfig) -> dict[str, tuple[float, str]]:
    """arm -> (knob value, where it came from)."""
    scfg = starvation.PRESETS[cfg.starvation_preset]
    path = scfg.out_dir / "matched.csv"
    matched = read_csv(path) if path.exists() else []
    res_path = scfg.out_dir / "results.csv"
    results = read_csv(res_path) if res_path.exists() else []
    out = {}
    for arm in cfg.arms:
        a = ARMS[arm]
        hit = [r for r in matched if r["arm"] == arm and r["rho"] == cfg.rho and r["l0_target"] == cfg.l0_target
               and r["n_seeds"] > 0]
        near = [r for r in results if r["arm"] == arm and r["rho"] == cfg.rho and r["seed"] == cfg.seed
                and not r.get("collapsed", 0) and r["l0"] > 0]
        if a.start is None:  # topk-type: k is the L0
            out[arm] = (float(round(cfg.l0_target)), "k = the L0 target")
        elif hit:
            out[arm] = (float(f"{hit[0]['value_mean']:.3g}"), f"matched λ for L0 {cfg.l0_target:g} in {path}")
        elif near:  # no matched value (a cliff, or not bracketed): this seed's run nearest the target
            r = min(near, key=lambda r: abs(math.log(r["l0"] / cfg.l0_target)))
            out[arm] = (float(r["value"]), f"no matched λ at L0 {cfg.l0_target:g} (cliff or not bracketed); the "
                                           f"uncollapsed seed-{cfg.seed} run nearest it in {res_path} (L0 {r['l0']:.2f})")
        else:
            out[arm] = (float(a.start(scfg)), "the arm's starting λ (no matched.csv)")
    return out


def run(cfg: CompareArmsConfig) -> tuple[Path, list[Any]]:
    """Train, compare, write the reports and the figure; returns (out folder, reports)."""
    import torch


    scfg = starvation.PRESETS[cfg.starvation_preset]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = cells.make_data(scfg.n, scfg.m, scfg.k, cfg.rho, scfg.steps * scfg.batch_size, scfg.n_eval, cfg.seed)
    knobs = knob_values(cfg)
    reps = []
    for arm, (value, _) in knobs.items():
        (res,), _ = train_members([Member(arm, (cfg.rho,), cfg.seed, value)], scfg, d_sae=scfg.m,
                                  source=[data.x_train], tcfg=cells.synthetic_train_config(scfg.for_arm(arm)))
        sae = res.sae.cpu().eval()
        rep = compare_sae(sae, data.x_eval[: cfg.n_tokens], CompareConfig(n_tokens=cfg.n_tokens, seed=cfg.seed))
        reps.append(dataclasses.replace(rep, name=arm))
        s = rep.summary
        print(f"compare_arms: {arm} {ARMS[arm].param}={value:g}: L0 enc {s.l0_encoder:.2f} / exact "
              f"{s.l0_exact:.2f}, dead enc {s.dead_fraction_encoder:.3f} / exact {s.dead_fraction_exact:.3f}",
              file=sys.stderr)
    out = Path(cfg.out)
    write_reports(reps, out)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    draw(reps, out / FIGURE[0], cfg)
    (out / TABLE).write_text(table(reps, knobs, cfg))
    return out, reps


def table(reps: list[Any], knobs: dict[str, tuple[float, str]], cfg: CompareArmsConfig) -> str:
    """The markdown table of compare_arms.md: each arm's knob and where it came from, then the comparison."""
    lines = [f"# Encoder vs exact map, spiked model ρ = {cfg.rho:g}, seed {cfg.seed} "
             f"(`python -m synthetic.compare_arms --rho {cfg.rho:g} --seed {cfg.seed}`)", ""]
    for r in reps:
        value, why = knobs[r.name]
        lines.append(f"- **{r.name}**: {ARMS[r.name].param} = {value:g} ({why}); {r.penalty.how}")
    return "\n".join(lines + ["", markdown_table(reps), ""])


def draw(reps: list[Any], path: Path, cfg: CompareArmsConfig) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(2, len(reps), figsize=(3.4 * len(reps), 6.4), squeeze=False)
    for j, rep in enumerate(reps):
        a, n = rep.arrays, rep.summary.n_tokens
        floor = 0.5 / n
        fe, fs = np.maximum(a.freq_encoder, floor), np.maximum(a.freq_exact, floor)
        ax = axes[0][j]
        dead_e, dead_s = a.freq_encoder == 0, a.freq_exact == 0
        for mask, lab, mk in ((~dead_e & ~dead_s, "alive under both", "o"), (dead_e & ~dead_s, "dead: encoder only", "x"),
                              (~dead_e & dead_s, "dead: exact only", "+"), (dead_e & dead_s, "dead under both", "s")):
            if mask.any():
                ax.scatter(fs[mask], fe[mask], s=6 if mk == "o" else 14, marker=mk, alpha=0.6,
                           label=f"{lab} ({int(mask.sum())})")
        ax.plot([floor, 1], [floor, 1], "k--", lw=0.7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{rep.name}: L0 {rep.summary.l0_encoder:.1f} (exact {rep.summary.l0_exact:.1f})",
                     fontsize=9)
        ax.set_xlabel("firing freq., exact map", fontsize=8)
        ax.set_ylabel("firing freq., encoder", fontsize=8)
        ax.legend(fontsize=6, loc="upper left")
        ax = axes[1][j]
        rel = np.maximum(a.objective_gap / np.maximum(a.objective, 1e-300), 1e-16)
        ax.hist(np.log10(rel), bins=40, color="black" if rep.name == "aen" else "tab:blue")
        ax.set_xlabel("log10 (F(z_enc) − F(z*)) / F(z*)", fontsize=8)
        ax.set_ylabel("tokens", fontsize=8)
    fig.suptitle(f"Amortised encoder vs exact map of the same objective, spiked ρ = {cfg.rho:g} "
                 f"({cfg.starvation_preset} sizes, seed {cfg.seed})", fontsize=10)
    return save(fig, path)


def main(argv: list[str] | None = None) -> int:
    cfg, _ = parse_config(CompareArmsConfig, argv, prog="python -m synthetic.compare_arms",
                          description=__doc__.split("\n\n")[0])
    out, _ = run(cfg)
    print((out / TABLE).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
