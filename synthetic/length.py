"""Length ablation (issue 12 item 4): every synthetic claim's verdict against training length.

    for s in 125 500 2000 4000 8000; do python -m synthetic.starvation --preset length --steps $s --resample-every $((s/3+1)) --out runs/length_$s; done
    python -m synthetic.starvation --preset length --arms aen relu_l1 --steps 16000 --resample-every 5334 --out runs/length_16000
    python -m synthetic.length runs/length_125 runs/length_500 runs/length_2000 runs/length_4000 runs/length_8000 runs/length_16000 --out runs/length

Reads each run folder's ``config.json`` (its steps), ``verdicts.csv``, ``results.csv`` and
``matched.csv`` (written by :func:`geomsae.study.write_report`), and writes ``length.md``: per claim
and length, comparisons by label and the share of runs whose loss still fell by more than 1 % over
the last 10 % of the steps; how the verdicts move from each length to the next
(:func:`geomsae.study.agreement.agree`: same / soft / decisive / opposite, and the changes whose
effect exceeds the minimum size at both lengths); and per arm the matched-L0 dead fraction and FVU
(mean over ρ and targets) at each length. ``length_verdicts.png`` shows the share of each label
against steps, one panel per claim. Nothing is trained here.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from geomsae.config_cli import OneLineErrors
from geomsae.study.agreement import KINDS, agree
from geomsae.study.doubling import RULES, converged_at, doubling_pairs
from geomsae.study.plotstyle import pyplot, save
from geomsae.study.report import md_table
from geomsae.study.tables import read_csv
from geomsae.study.verdicts import LABELS, MIN_EFFECT
from geomsae.training.log import UNCONVERGED_REL_CHANGE, unconverged


def load(folder: Path) -> dict[str, Any]:
    """{steps, verdicts (rows of verdicts.csv), unconverged (share of runs)} of one length's run folder."""
    cfg = json.loads((folder / "config.json").read_text())
    rows = read_csv(folder / "results.csv")
    rel = [(r.get("arm"), float(r.get("loss_rel_change", math.nan))) for r in rows]
    matched = read_csv(folder / "matched.csv") if (folder / "matched.csv").exists() else []
    seeds = read_csv(folder / "matched_seeds.csv") if (folder / "matched_seeds.csv").exists() else None
    return {"steps": int(cfg["steps"]), "verdicts": read_csv(folder / "verdicts.csv"), "matched": matched,
            "matched_seeds": seeds,
            "folder": folder, "arms": set(cfg.get("arms") or {r["arm"] for r in matched}), "rel": rel,
            "unconverged": _unconverged_share(rel)}


def _unconverged_share(rel: list[tuple[Any, float]], arms: set[str] | None = None) -> float:
    """Share of the runs (of ``arms``, default all) whose loss still fell by more than 1 % over the last tenth."""
    known = [v for a, v in rel if not math.isnan(v) and (arms is None or a is None or a in arms)]
    return sum(unconverged(v) for v in known) / len(known) if known else math.nan


def moves(runs: list[dict[str, Any]]) -> list[str]:
    """Markdown: how the verdicts move from each length to the next (classes of geomsae.study.agreement)."""
    body = []
    for a, b in zip(runs, runs[1:]):
        res = agree(a["verdicts"], b["verdicts"], ("rho",))
        body.append([f"{a['steps']} → {b['steps']}", str(len(res["pairs"]))]
                    + [str(res["counts"][k]) for k in KINDS] + [str(len(res["big_changes"]))])
    return md_table(["steps", "comparisons", *KINDS, "changed with |effect| ≥ δ at both lengths"], body)


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def metrics(runs: list[dict[str, Any]], names: tuple[str, ...] = ("dead_fraction", "fvu")) -> list[str]:
    """Markdown: per arm and metric, the matched-L0 mean at each length over the (ρ, target) cells that
    have a value at every length (so each row compares the same cells); '–' where no cell is common."""
    arms = list(dict.fromkeys(r["arm"] for run in runs for r in run["matched"]))
    body = []
    for arm in arms:
        ran = [any(r["arm"] == arm for r in run["matched"]) for run in runs]
        for name in names:
            per = [{(r["rho"], r["l0_target"]): float(r[f"{name}_mean"]) for r in run["matched"]
                    if r["arm"] == arm and not math.isnan(float(r[f"{name}_mean"]))} for run in runs]
            common = set.intersection(*(set(d) for d, here in zip(per, ran) if here))
            vals = [_mean([d[c] for c in common]) if here else None for d, here in zip(per, ran)]
            body.append([arm, name, str(len(common))] + ["not run" if v is None else "–" if math.isnan(v) else f"{v:.3f}"
                                                         for v in vals])
    return md_table(["arm", "metric at matched L0", "cells (ρ, target) common to the lengths it ran at",
                     *[str(r["steps"]) for r in runs]], body)


def doubling(runs: list[dict[str, Any]]) -> list[str]:
    """Markdown: each arm's matched-L0 FVU and dead fraction when training doubles, cell by cell, and the length
    it is converged at (geomsae.study.doubling)."""
    pairs = doubling_pairs([(r["steps"], r["matched"], r["matched_seeds"]) if r["matched_seeds"] is not None
                            else (r["steps"], r["matched"]) for r in runs])
    body = [[p["arm"], f"{p['steps_from']} → {p['steps_to']}", str(p["cells"]), str(p["seeds"]),
             *(f"{p[f'{m}_from']:.3f} → {p[f'{m}_to']:.3f} (largest {p[f'{m}_max_change']:+.3f})" if p["cells"]
               else "–" for m in ("fvu", "dead_fraction")),
             " / ".join(str(p[f"cells_{rule}"]) for rule in RULES),
             {True: "yes", False: "no", None: "not measurable"}[p["stable"]]
             + (f" (moved: {p['moved']})" if p["moved"] else "")] for p in pairs]
    conv = converged_at(pairs)
    last = {p["arm"]: p["steps_to"] for p in pairs}
    lines = [f"Each (ρ, L0 target) cell is tested on its own, signed changes never averaged over cells: a cell "
             f"passes when its |Δ| is below the minimum effect ({MIN_EFFECT['fvu']:g} FVU, "
             f"{100 * MIN_EFFECT['dead_fraction']:g} point dead), or else when the 95 % t interval of its paired "
             "per-seed changes contains 0 (within the seed-to-seed spread); an arm is stable when no cell moved "
             "(docs/method.md §7.5). FVU and dead fraction: mean over the cells (for reading) and the cell change "
             "of largest size.", ""]
    lines += md_table(["arm", "steps", "cells", "seeds (fewest in a cell)", "FVU at matched L0",
                       "dead fraction at matched L0", "cells passing by min. effect / by seed interval / moved",
                       "stable"], body)
    lines += ["", "Converged at (the shortest length from which every doubling is stable): "
              + "; ".join(f"{arm} {at}" if at is not None else f"{arm} not within {last[arm]} steps"
                          for arm, at in conv.items()) + "."]
    return lines


def table(runs: list[dict[str, Any]]) -> list[str]:
    """Markdown: one row per (claim, steps): counts of each label and the unconverged share."""
    claims = list(dict.fromkeys(v["claim"] for r in runs for v in r["verdicts"]))
    body = []
    for cid in claims:
        for r in runs:
            labs = [v["verdict"] for v in r["verdicts"] if v["claim"] == cid]
            body.append([f"({cid})", str(r["steps"])] + [str(labs.count(lab)) for lab in LABELS]
                        + [f"{100 * r['unconverged']:.0f} %"])
    return md_table(["claim", "steps", *LABELS, "loss still falling"], body)


def figure(runs: list[dict[str, Any]], path: Path) -> Path:
    """Share of each label (defined comparisons) against steps, one panel per claim."""
    plt = pyplot()
    claims = list(dict.fromkeys(v["claim"] for r in runs for v in r["verdicts"]))
    ncols = min(3, len(claims))
    nrows = math.ceil(len(claims) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows), squeeze=False)
    steps = [r["steps"] for r in runs]
    flat = list(axes.flat)
    for ax in flat[len(claims):]:
        ax.set_visible(False)
    for ax, cid in zip(flat, claims):
        for lab in LABELS[:-1]:
            share = []
            for r in runs:
                labs = [v["verdict"] for v in r["verdicts"] if v["claim"] == cid and v["verdict"] != "n/a"]
                share.append(labs.count(lab) / len(labs) if labs else math.nan)
            ax.plot(steps, share, marker="o", label=lab)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(steps, [str(x) for x in steps])
        ax.set_title(f"({cid})")
        ax.set_xlabel("training steps")
        ax.set_ylim(0, 1)
    for row in axes:
        row[0].set_ylabel("share of defined comparisons")
    flat[0].legend(fontsize=7)
    return save(fig, path)


def write(folders: list[Path], out: Path) -> list[Path]:
    """length.md and length_verdicts.png of the run folders (at least two lengths) into ``out``.

    Runs that trained only some of the arms (a longer run of the slow arms) enter the matched-metric
    and doubling tables; the verdict tables and the figure use the runs with every arm of the shortest run,
    and only their comparisons among those arms (an arm added at some lengths enters the metric and
    doubling tables only, so every length's verdict counts are over the same comparisons)."""
    runs = sorted((load(Path(f)) for f in folders), key=lambda r: r["steps"])
    if len(runs) < 2:
        raise ValueError(f"give at least two lengths, got {len(runs)}")
    out.mkdir(parents=True, exist_ok=True)
    base = runs[0]["arms"]  # the design's arms, as its shortest run trained them
    full = [{**r, "verdicts": [v for v in r["verdicts"] if v.get("other") not in r["arms"] - base],
             "unconverged": _unconverged_share(r["rel"], base if r["arms"] - base else None)}
            for r in runs if r["arms"] >= base]
    partial = [r for r in runs if not r["arms"] >= base]
    if len(full) < 2:
        raise ValueError(f"fewer than two of the runs trained every arm of the shortest one ({sorted(base)})")
    span = full[-1]["steps"] / full[0]["steps"]
    lines = ["# Verdicts against training length", "", f"{len(full)} lengths spanning {span:g}× ("
             + ", ".join(f"`{r['folder'].name}`" for r in full) + ")"
             + "".join(f"; `{r['folder'].name}` trained only {', '.join(sorted(r['arms']))} (matched metrics and "
                       "doubling only)" for r in partial)
             + "".join(f"; `{r['folder'].name}` also trained {', '.join(sorted(r['arms'] - base))} (matched metrics "
                       "and doubling only)" for r in full if r["arms"] - base)
             + f". 'loss still falling': the share of runs with loss_rel_change < {UNCONVERGED_REL_CHANGE} over the "
             "last tenth of the steps, which the learning-rate decay alone produces; convergence is judged by "
             "doubling, below (docs/method.md §7.5).", ""] + table(full)
    lines += ["", "## How the verdicts move from one length to the next", "",
              "soft: one side underpowered or n/a; decisive: two different resolved labels; opposite: holds against "
              "does not hold (docs/method.md §7.4).", ""] + moves(full)
    lines += ["", "## Convergence: each arm when training doubles", ""] + doubling(runs)
    lines += ["", "## Matched-L0 metrics against length", ""] + metrics(runs)
    (out / "length.md").write_text("\n".join(lines) + "\n")
    return [out / "length.md", figure(full, out / "length_verdicts.png")]


def main(argv: list[str] | None = None) -> int:
    p = OneLineErrors(prog="python -m synthetic.length", description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path, help="run folders of synthetic.starvation --preset length")
    p.add_argument("--out", type=Path, default=Path("runs/length"), help="where length.md and the figure go")
    args = p.parse_args(argv)
    try:
        paths = write(args.folders, args.out)
    except (ValueError, FileNotFoundError) as e:
        print(f"synthetic.length: {e}", file=sys.stderr)
        return 2
    print(paths[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
