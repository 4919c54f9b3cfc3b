"""The centering factorial (issue 24): is the authors' starvation the coding map's geometry, or an uncentred start?

    python -m synthetic.starvation --preset centering --b-dec-init zeros --out runs/centering_zeros
    python -m synthetic.starvation --preset centering --b-dec-init mean --out runs/centering_mean
    python -m synthetic.centering runs/centering_zeros runs/centering_mean --out runs/centering

Reads each run folder's config.json (its ``b_dec_init`` and length) and results.csv, and reads every
(start, arm, ρ, seed) at L0 16, the authors' operating point: a penalty arm's sweep interpolated at
L0 16 (:func:`geomsae.study.matched.matched_seeds`, the engine's bracket and cliff rules), a TopK
arm's k = 16 run as it is. Two dead counts per cell: ours, on the held-out tokens with the folded
firing rule (``dead_fraction``), and the authors', on the last training batch with z > 0
(``dead_last_batch``); and the outlier severity γ = ‖μ‖/‖σ‖ of the data, and of the data about the
start of b_dec (arXiv 2605.31518). Writes ``centering.md`` (γ by ρ; the authors' 25 cells with
which start reproduces their dead fraction within :data:`FAR` points on their measurement; whether
starvation grows with ρ once centred; AEN's advantage at each start, paired across seeds),
``centering.csv`` (the per-seed values) and ``centering_dead.png``. Nothing is trained here.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geomsae.config_cli import OneLineErrors
from geomsae.study.arms import ARMS as ARM_SPECS
from geomsae.study.matched import matched_seeds, mean_std
from geomsae.study.plotstyle import arm_colors, line_style, pyplot, save
from geomsae.study.report import md_table, pm
from geomsae.study.tables import read_csv, write_csv
from geomsae.study.verdicts import Claim, comparisons, interval, outcome
from synthetic.authors import THEIRS

TARGET = 16.0
"""The authors' operating point: every cell is read at L0 16."""
FAR = 10.0
"""A start reproduces the authors' cell when its mean dead % is within this many points of theirs."""
METRICS = ("dead_fraction", "dead_last_batch", "fvu", "gamma", "gamma_start")
"""The per-seed values read at L0 16."""
ARMS = ("aen", "adaptive_lasso", "en", "relu_l1", "topk", "topk_auxk")
"""Arms in table order (the authors' five, then TopK with AuxK, which they did not run)."""
CLAIMS = (Claim("a", "AEN has fewer dead latents (held-out)", "dead_fraction", False),
          Claim("a*", "AEN has fewer dead latents (last training batch)", "dead_last_batch", False, min_effect=0.01))
"""AEN's advantage at each start, on both dead counts (geomsae.study.verdicts, paired by seed)."""
TABLE, DATA = "centering.md", "centering.csv"
FIGURE = ("centering_dead.png", "The centering factorial: dead % at L0 16 against ρ per arm, b_dec started at zero "
          "(dashed) and at the data mean (solid), held-out and on the last training batch, the authors' overlaid (✕)")
"""The figure's file name and what it shows (figures/README.md)."""


def load(folder: Path) -> tuple[str, list[dict[str, Any]]]:
    """(label 'zeros' / 'mean' + length, per-seed rows at L0 16) of one run folder."""
    cfg = json.loads((folder / "config.json").read_text())
    label = f"{cfg.get('b_dec_init', 'mean')}, {int(cfg['steps'])} steps"
    return label, seed_rows(read_csv(folder / "results.csv"), label)


def finished(folder: Path) -> bool:
    """Whether the run's sweep has ended (synthetic.starvation writes timing.json only then)."""
    return (Path(folder) / "timing.json").exists()


def seed_rows(rows: list[dict[str, Any]], start: str) -> list[dict[str, Any]]:
    """One row per (arm, ρ, seed) at L0 :data:`TARGET`: {start, arm, rho, l0_target, seed, status, l0, METRICS}."""
    out = []
    penalty = [r for r in rows if ARM_SPECS[r["arm"]].start is not None]
    for r in matched_seeds(penalty, (TARGET,), METRICS, cell_keys=("rho",)):
        out.append({"start": start, **r, "l0": TARGET if r["status"] == "ok" else math.nan})  # cliff ends kept
    for r in rows:  # TopK-type arms: the k = 16 run itself (its folded L0 may sit below k)
        if ARM_SPECS[r["arm"]].start is None and float(r["value"]) == TARGET:
            out.append({"start": start, "arm": r["arm"], "rho": r["rho"], "l0_target": TARGET, "seed": r["seed"],
                        "status": "ok", "n_collapsed": 0, "l0": r["l0"], **{m: r.get(m, math.nan) for m in METRICS},
                        **dict.fromkeys(("l0_dense", "dead_dense", "l0_sparse", "dead_sparse"), math.nan)})
    return out


def _ok(rows: list[dict[str, Any]], start: str, arm: str, rho: float, metric: str) -> list[float]:
    return [float(r[metric]) for r in rows if r["start"] == start and r["arm"] == arm
            and math.isclose(float(r["rho"]), rho) and r["status"] == "ok" and not math.isnan(float(r[metric]))]


def _cell(rows: list[dict[str, Any]], start: str, arm: str, rho: float) -> str:
    """'last batch % / held-out % (n)' or why there is no value."""
    last, held = _ok(rows, start, arm, rho, "dead_last_batch"), _ok(rows, start, arm, rho, "dead_fraction")
    if not held:
        mine = [r for r in rows if r["start"] == start and r["arm"] == arm and math.isclose(float(r["rho"]), rho)]
        cl = [r for r in mine if r["status"] == "cliff"]
        if cl:  # the two ends of the cliff, means over its seeds: held-out L0 and dead %
            m = {k: float(np.mean([float(r[k]) for r in cl])) for k in ("l0_dense", "l0_sparse", "dead_dense",
                                                                          "dead_sparse")}
            return (f"cliff ({len(cl)}): L0 {m['l0_dense']:.1f} → {m['l0_sparse']:.2g}, held-out dead "
                    f"{100 * m['dead_dense']:.1f} → {100 * m['dead_sparse']:.1f}")
        return "/".join(sorted({r["status"] for r in mine})) or "–"
    return f"{pm(*mean_std(last), 100, 1)} / {pm(*mean_std(held), 100, 1)} ({len(held)})"


def reproduces(rows: list[dict[str, Any]], start: str, arm: str, rho: float) -> bool | None:
    """Whether ``start``'s mean last-batch dead % is within :data:`FAR` points of the authors' (None: no value)."""
    last = _ok(rows, start, arm, rho, "dead_last_batch")
    if not last or arm not in THEIRS.get(rho, {}):
        return None
    return abs(100 * float(np.mean(last)) - THEIRS[rho][arm][0]) <= FAR


def trend(rows: list[dict[str, Any]], start: str, arm: str, metric: str, level: float = 0.95) -> dict[str, Any]:
    """Does ``metric`` grow with ρ? Per seed, the least-squares slope of the values against ρ times the ρ range
    (the change from the smallest to the largest ρ); their mean, paired t interval across seeds and outcome
    (geomsae.study.verdicts.outcome with δ = 1 point: 'better' reads 'grows', 'worse' 'falls')."""
    per: dict[int, list[tuple[float, float]]] = {}
    for r in rows:
        if r["start"] == start and r["arm"] == arm and r["status"] == "ok" and not math.isnan(float(r[metric])):
            per.setdefault(int(r["seed"]), []).append((float(r["rho"]), float(r[metric])))
    rhos = sorted({p[0] for pts in per.values() for p in pts})
    full = [pts for pts in per.values() if len(pts) == len(rhos) >= 2]
    if len(full) < 2:
        return {"change": math.nan, "lo": math.nan, "hi": math.nan, "n": len(full), "reading": "n/a"}
    span = rhos[-1] - rhos[0]
    changes = [float(np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)[0]) * span for pts in full]
    d, lo, hi, n = interval(changes, [0.0] * len(changes), True, paired=True, level=level)
    lab = outcome(d, lo, hi, 0.01)
    return {"change": d, "lo": lo, "hi": hi, "n": n,
            "reading": {"better": "grows", "worse": "falls", "equivalent": "flat"}.get(lab, lab)}


def report(runs: Sequence[tuple[str, list[dict[str, Any]]]]) -> list[str]:
    """Markdown of the factorial (module docstring)."""
    rows = [r for _, rs in runs for r in rs]
    starts = [label for label, _ in runs]
    rhos = sorted({float(r["rho"]) for r in rows})
    lines = ["# The centering factorial: geometry of the coding map, or an uncentred start?", "",
             f"Each run read at L0 {TARGET:g} (penalty arms interpolated between the two λ that bracket it, "
             "TopK at k 16); mean ± std over seeds, the seed count in brackets. Dead counts: **last training batch "
             "(the authors' measurement, z > 0 on 256 tokens) / held-out (ours, 65,536 tokens, folded rule)**. "
             "Runs: " + "; ".join(f"`{s}`" for s in starts) + ".", "", "## Outlier severity γ = ‖μ‖/‖σ‖", "",
             "γ of the held-out data, and of the same data about the start of b_dec (the encoder's input at step 0).", ""]
    body = []
    for rho in rhos:
        g = [float(r["gamma"]) for r in rows if math.isclose(float(r["rho"]), rho) and not math.isnan(float(r["gamma"]))]
        line = [f"{rho:g}", f"{np.mean(g):.2f}" if g else "–"]
        for s in starts:
            gs = [float(r["gamma_start"]) for r in rows if r["start"] == s and math.isclose(float(r["rho"]), rho)
                  and not math.isnan(float(r["gamma_start"]))]
            line.append(f"{np.mean(gs):.3f}" if gs else "–")
        body.append(line)
    lines += md_table(["ρ", "γ of the data", *(f"γ about the start ({s})" for s in starts)], body)
    lines += ["", "## The authors' cells", "", f"Theirs: dead % on their last batch. ✓: that start's last-batch dead % "
              f"is within {FAR:g} points of theirs.", ""]
    body, tally = [], {s: [0, 0] for s in starts}
    for rho in rhos:
        for arm in ARMS:
            theirs = THEIRS.get(rho, {}).get(arm)
            line = [f"{rho:g}", arm, "–" if theirs is None else f"{theirs[0]:.1f}"]
            for s in starts:
                ok = reproduces(rows, s, arm, rho)
                if ok is not None:
                    tally[s][0] += ok
                    tally[s][1] += 1
                line.append(_cell(rows, s, arm, rho) + {True: " ✓", False: " ✗", None: ""}[ok])
            body.append(line)
    lines += md_table(["ρ", "arm", "theirs", *starts], body)
    lines += ["", "Cells reproduced within " + f"{FAR:g} points on their measurement: "
              + "; ".join(f"{s}: {a} of {n}" for s, (a, n) in tally.items()) + "."]
    lines += ["", "## Does starvation grow with ρ?", "",
              "Per seed, the least-squares slope of the dead fraction against ρ times the ρ range (points of d_sae "
              "from the smallest to the largest ρ); mean and paired 95 % t interval across seeds; grows / falls / flat "
              "by the verdict rule with δ = 1 point (n/a: fewer than 2 seeds with every ρ).", ""]
    body = [[arm, s, *(f"{100 * t['change']:+.1f} [{100 * t['lo']:+.1f}, {100 * t['hi']:+.1f}] {t['reading']} (n {t['n']})"
                       if t["n"] >= 2 else "n/a" for t in (trend(rows, s, arm, m) for m in ("dead_last_batch",
                                                                                           "dead_fraction")))]
            for arm in ARMS for s in starts]
    lines += md_table(["arm", "start", "last batch", "held-out"], body)
    lines += ["", "## AEN against each arm, at each start", "",
              "AEN's advantage in points of dead fraction (positive: AEN has fewer dead), paired 95 % t interval "
              "across seeds, and the verdict (geomsae.study.verdicts; δ = 1 point).", ""]
    body = []
    for s in starts:
        comps = comparisons([r for r in rows if r["start"] == s], CLAIMS, ("rho",))
        for c in comps:
            body.append([s, c["claim"], f"{float(c['rho']):g}", c["other"], str(c["n"]),
                         "n/a" if math.isnan(c["aen_advantage"]) else
                         f"{100 * c['aen_advantage']:+.1f} [{100 * c['ci_lo']:+.1f}, {100 * c['ci_hi']:+.1f}]",
                         c["verdict"]])
    lines += md_table(["start", "claim", "ρ", "against", "seeds", "AEN's advantage (points)", "verdict"], body)
    return lines


def plot(runs: Sequence[tuple[str, list[dict[str, Any]]]], path: Path) -> Path:
    """Dead % at L0 16 against ρ: last batch (left) and held-out (right), one colour per arm, one line style per
    start, bars from the lowest to the highest seed, the authors' cells as ✕."""
    plt = pyplot()
    colors = arm_colors(list(ARMS))
    styles = ("--", "-", ":", "-.")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    for ax, metric, title in zip(axes, ("dead_last_batch", "dead_fraction"),
                                 ("last training batch (the authors' measurement)", "held-out tokens (ours)")):
        for (label, rows), ls in zip(runs, styles):
            for arm in ARMS:
                pts = []
                for rho in sorted({float(r["rho"]) for r in rows}):
                    v = _ok(rows, label, arm, rho, metric)
                    if v:
                        pts.append((rho, 100 * np.mean(v), 100 * min(v), 100 * max(v)))
                if not pts:
                    continue
                x, y, lo, hi = (np.array(c) for c in zip(*pts))
                ax.errorbar(x, y, yerr=[y - lo, hi - y], ls=ls, marker="o", ms=3, color=colors[arm], capsize=2,
                            label=f"{arm} ({label})", **line_style(arm))
        present = {r["arm"] for _, rows in runs for r in rows}
        for arm in (a for a in ARMS if a in present):
            xs = [rho for rho in THEIRS if arm in THEIRS[rho]]
            ax.scatter(xs, [THEIRS[rho][arm][0] for rho in xs], marker="x", s=40, color=colors[arm], zorder=6)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("coherence ρ")
        ax.set_ylim(-3, 103)
    axes[0].set_ylabel(f"dead latents at L0 {TARGET:g} (% of d_sae)")
    axes[1].legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Spiked model (n 256, m 1024, k 16): dead latents with b_dec started at zero and at the mean; "
                 "✕ the authors'; bars: lowest to highest seed", fontsize=9)
    return save(fig, path)


def write(folders: Sequence[Path], out: Path) -> list[Path]:
    """centering.md, centering.csv and centering_dead.png of the run folders into ``out``."""
    runs = [load(Path(f)) for f in folders]
    labels = [label for label, _ in runs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two runs have the same start and length: {labels}")
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for _, rs in runs for r in rs]
    cols = ["start", "arm", "rho", "l0_target", "seed", "status", "l0", *METRICS, "l0_dense", "dead_dense",
            "l0_sparse", "dead_sparse"]
    write_csv(out / DATA, cols, rows)
    lines = report(runs)
    partial = [f"`{label}` ({Path(f).name})" for (label, _), f in zip(runs, folders) if not finished(Path(f))]
    if partial:  # a sweep still running: its cells may not be refined to the engine's rule yet
        lines[1:1] = ["", "**PARTIAL**: the sweep of " + ", ".join(partial) + " has not finished (no timing.json); "
                      "its cells are read from the λ trained so far, not yet refined to two runs within 1.25× of L0 16."]
    (out / TABLE).write_text("\n".join(lines) + "\n")
    return [out / TABLE, out / DATA, plot(runs, out / FIGURE[0])]


def main(argv: list[str] | None = None) -> int:
    p = OneLineErrors(prog="python -m synthetic.centering", description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path, help="run folders of the centering preset (one per b_dec start)")
    p.add_argument("--out", type=Path, default=Path("runs/centering"), help="where the table, CSV and figure go")
    args = p.parse_args(argv)
    missing = [str(f / "results.csv") for f in args.folders if not (f / "results.csv").is_file()]
    if missing:
        print(f"synthetic.centering: {', '.join(missing)} does not exist: run the centering preset first",
              file=sys.stderr)
        return 2
    try:
        paths = write(args.folders, args.out)
    except ValueError as e:
        print(f"synthetic.centering: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"synthetic.centering: wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
