"""Our run of the authors' spiked table beside theirs, cell by cell (docs/method.md §5, §7.6).

    python -m synthetic.starvation --preset authors --rhos 0.3 0.9     # CPU: hours
    python -m synthetic.starvation --preset authors-gpu                # all 5 ρ on one GPU
    python -m synthetic.authors runs/starvation_authors                # -> authors_table.md, authors_dead.png there

The authors report, per ρ and arm, the run whose L0 is closest to 16 (dead % / explained variance
/ L0, read on their last training batch). We pick the same way — among our seed-0 runs of that
(arm, ρ), the one whose held-out L0 is closest to 16 — and print ours and theirs in one cell, plus
the difference in dead percentage points. Our metrics are on held-out data with the folded firing
rule (docs/method.md §3), so small differences are expected; the table says which cells differ by
more than 10 points of dead fraction. Nothing is trained here.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geomsae.config_cli import OneLineErrors
from geomsae.study.plotstyle import arm_colors, pyplot, save
from geomsae.study.report import md_table
from geomsae.study.tables import read_csv
from geomsae.training.log import unconverged

ARMS = ("aen", "adaptive_lasso", "en", "relu_l1", "topk")
"""The authors' arms, in their column order (topk: k 16, no AuxK)."""
THEIRS: dict[float, dict[str, tuple[float, float, float]]] = {
    # docs/method.md §5 (the authors' public logs): dead % / explained variance / L0 at the run with L0 closest to 16
    0.0: {"aen": (0.0, .53, 15.6), "adaptive_lasso": (0.0, .57, 15.0), "en": (1.6, .69, 20.2),
          "relu_l1": (1.6, .71, 21.4), "topk": (4.7, .69, 16)},
    0.3: {"aen": (0.3, .54, 16.7), "adaptive_lasso": (8.7, .43, 11.0), "en": (10.2, .49, 17.2),
          "relu_l1": (11.0, .52, 18.3), "topk": (96.4, .16, 16)},
    0.5: {"aen": (1.3, .35, 14.4), "adaptive_lasso": (16.8, .33, 7.8), "en": (24.1, .38, 15.7),
          "relu_l1": (27.0, .39, 14.0), "topk": (95.5, .18, 16)},
    0.7: {"aen": (19.0, .41, 15.2), "adaptive_lasso": (44.2, .31, 15.0), "en": (56.8, .20, 9.6),
          "relu_l1": (57.3, .25, 6.8), "topk": (96.2, .24, 16)},
    0.9: {"aen": (44.9, .67, 18.3), "adaptive_lasso": (48.5, .66, 16.7), "en": (82.1, .33, 14.0),
          "relu_l1": (47.4, .75, 60.4), "topk": (97.5, .45, 16)},
}
TARGET_L0 = 16.0
"""The authors pick, per arm and ρ, the run whose L0 is closest to this."""
FAR = 10.0
"""Dead-fraction difference (percentage points) above which a cell is flagged as not matching theirs."""
TABLE = "authors_table.md"
"""The table's file name (in the run folder, and in figures/)."""
FIGURE = ("authors_dead.png", "The authors' spiked table, ours beside theirs: dead % and explained variance per arm "
          "at the run with L0 closest to 16, one column per ρ run (hatched: theirs; numbers: L0; ✗: collapsed, "
          "†: loss still falling)")
"""The figure's file name and what it shows (figures/README.md)."""


def closest(rows: list[dict[str, Any]], arm: str, rho: float, seed: int = 0) -> dict[str, Any] | None:
    """The run of (arm, ρ, seed) whose finite L0 is closest to :data:`TARGET_L0`; None if there is none."""
    cands = [r for r in rows if r["arm"] == arm and math.isclose(float(r["rho"]), rho) and int(r["seed"]) == seed
             and math.isfinite(float(r["l0"]))]
    return min(cands, key=lambda r: abs(float(r["l0"]) - TARGET_L0)) if cands else None


def cells(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per (ρ, arm) present in both tables: ours and theirs (dead %, EV, L0) and the dead difference."""
    out = []
    for rho, theirs in THEIRS.items():
        for arm in ARMS:
            r = closest(rows, arm, rho)
            if r is None:
                continue
            ours = (100 * float(r["dead_fraction"]), 1 - float(r["fvu"]), float(r["l0"]))
            rel = float(r.get("loss_rel_change", "nan") or "nan")
            out.append({"rho": rho, "arm": arm, "ours": ours, "theirs": theirs[arm],
                        "dead_diff": ours[0] - theirs[arm][0], "collapsed": int(float(r.get("collapsed", 0) or 0)),
                        "value": r.get("value"), "loss_rel_change": rel, "unconverged": unconverged(rel)})
    return out


Variants = Sequence[tuple[str, list[dict[str, Any]]]]
"""(label, results.csv rows) of runs of another design (e.g. another decoder-bias init), shown beside the main run."""


def table(rows: list[dict[str, Any]], variants: Variants = ()) -> list[str]:
    """Markdown: per ρ a row, per arm a cell 'ours | theirs'; then the flagged cells (main run only). Each variant
    adds, under each ρ, a row of its own cells (ours of that variant ‖ theirs)."""
    cs = cells(rows)
    if not cs:
        return ["No (arm, ρ) of the authors' table was found in this run (arms "
                + ", ".join(ARMS) + f"; ρ {', '.join(map(str, THEIRS))}; seed 0)."]
    fmt = lambda t: f"{t[0]:.1f} / {t[1]:.2f} / {t[2]:.1f}"
    rhos = sorted({c["rho"] for c in cs})
    body = []
    runs = [("", cs)] + [(label, cells(vrows)) for label, vrows in variants]
    for rho in rhos:
        for label, vcs in runs:
            line = [f"{rho:g}" + (f" ({label})" if label else "")]
            for arm in ARMS:
                c = next((c for c in vcs if c["rho"] == rho and c["arm"] == arm), None)
                line.append("–" if c is None else f"{fmt(c['ours'])}{' (collapsed)' if c['collapsed'] else ''}"
                            f"{' †' if c['unconverged'] else ''} ‖ {fmt(c['theirs'])}")
            if label == "" or any(x != "–" for x in line[1:]):
                body.append(line)
    far = [c for c in cs if abs(c["dead_diff"]) > FAR]
    lines = ["Each cell: **ours ‖ theirs**, dead % / explained variance / L0 at the run with L0 closest to 16 "
             "(ours: seed 0, held-out data, folded firing rule; theirs: the authors' logs, last training batch). "
             "†: our run's loss still fell by more than 1 % over its last tenth (not converged).", ""]
    lines += md_table(["ρ", *ARMS], body)
    lines += ["", f"Cells of the main run whose dead fraction differs from theirs by more than {FAR:g} points: "
              f"{len(far)} of {len(cs)}"
              + (": " + ", ".join(f"{c['arm']} at ρ {c['rho']:g} ({c['dead_diff']:+.1f})" for c in far) if far else ".")]
    lines += ["", "The run picked in each cell (ours): its knob (λ, or k for topk), held-out L0 and the relative "
              "change of its training loss over the last tenth of its steps.", ""]
    lines += md_table(["ρ", "arm", "knob", "L0", "loss change, last tenth"],
                      [[f"{c['rho']:g}" + (f" ({label})" if label else ""), c["arm"],
                        f"{float(c['value']):g}" if c["value"] not in (None, "") else "?",
                        f"{c['ours'][2]:.2f}", f"{100 * c['loss_rel_change']:+.2f} %"] for label, vcs in runs for c in vcs])
    return lines


def plot(rows: list[dict[str, Any]], path: str | Path, variants: Variants = ()) -> Path:
    """Bar chart of :func:`cells`: per ρ of this run a column, dead % (top) and explained variance (bottom) per arm,
    ours solid, each variant beside it in a hatch of its own, theirs hatched //, each bar labelled with its L0. Raises
    ValueError when the main run has no cell."""
    cs = cells(rows)
    if not cs:
        raise ValueError("no (arm, ρ) of the authors' table in these rows: nothing to plot")
    plt = pyplot()
    rhos = sorted({c["rho"] for c in cs})
    colors = arm_colors(list(ARMS))
    hatches = ("xx", "..", "oo", "++", "**")
    runs = [("ours", cs, None, 1.0)] + [(label, cells(v), hatches[i % len(hatches)], 0.7)
                                        for i, (label, v) in enumerate(variants)]
    fig, axes = plt.subplots(2, len(rhos), figsize=(4.6 * len(rhos), 6.4), squeeze=False, sharey="row")
    for j, rho in enumerate(rhos):
        for i, label in enumerate(("dead latents (%)", "explained variance")):
            ax = axes[i][j]
            for x, arm in enumerate(ARMS):
                bars = []
                for name, rcs, hatch, alpha in runs:
                    c = next((c for c in rcs if c["rho"] == rho and c["arm"] == arm), None)
                    if c is not None:
                        mark = ("✗" if c["collapsed"] else "") + ("†" if c["unconverged"] else "")
                        bars.append((c["ours"], hatch, alpha, mark))
                        theirs = c["theirs"]
                if not bars:
                    continue
                bars.append((theirs, "//", 0.45, ""))
                w = 0.8 / len(bars)
                for b, (vals, hatch, alpha, mark) in enumerate(bars):
                    xb = x - 0.4 + w * (b + 0.5)
                    ax.bar(xb, vals[i], width=w * 0.95, color=colors[arm], alpha=alpha, hatch=hatch,
                           edgecolor="black", linewidth=0.5)
                    ax.annotate(f"{vals[2]:.3g}{mark}", (xb, vals[i]), ha="center", va="bottom", fontsize=6)
            ax.set_xticks(range(len(ARMS)), [a.replace("adaptive_lasso", "ada.lasso") for a in ARMS], fontsize=7)
            if j == 0:
                ax.set_ylabel(label)
            if i == 0:
                ax.set_title(f"ρ = {rho:g}", fontsize=9)
        axes[0][j].set_ylim(0, 105)
        axes[1][j].set_ylim(0, 1.05)
    fig.suptitle("solid: ours" + "".join(f" · {hatch}: {name}" for name, _, hatch, _ in runs[1:]) + " · //: theirs"
                 "   (on each bar its L0; ✗ collapsed, † loss still falling)", fontsize=8)
    return save(fig, Path(path))


def write(run: Path, out_dir: Path | None = None, variants: Sequence[tuple[str, Path]] = ()) -> list[Path]:
    """Write :data:`TABLE` and :data:`FIGURE` of ``run`` (a folder with results.csv) into ``out_dir`` (default:
    ``run``), with each (label, folder) of ``variants`` beside it; returns their paths (the figure only when
    some cell is present)."""
    out_dir = Path(out_dir or run)
    rows = read_csv(Path(run) / "results.csv")
    var = [(label, read_csv(Path(folder) / "results.csv")) for label, folder in variants]
    lines = ["# The authors' spiked table: ours beside theirs", ""] + table(rows, var)
    out = [out_dir / TABLE]
    out[0].write_text("\n".join(lines) + "\n")
    if cells(rows):
        out.append(plot(rows, out_dir / FIGURE[0], var))
    return out


def parse_variant(text: str) -> tuple[str, Path]:
    """'LABEL=FOLDER' -> (label, folder with results.csv); ValueError otherwise."""
    label, sep, folder = text.partition("=")
    if not sep or not label or not (Path(folder) / "results.csv").is_file():
        raise ValueError(f"--variant {text!r}: must be LABEL=FOLDER with FOLDER/results.csv present")
    return label, Path(folder)


def main(argv: list[str] | None = None) -> int:
    p = OneLineErrors(prog="python -m synthetic.authors", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a run folder of the authors or authors-gpu preset (with results.csv)")
    p.add_argument("--out", type=Path, default=None, help="folder for the table and figure (default: RUN)")
    p.add_argument("--variant", action="append", default=[], metavar="LABEL=FOLDER",
                   help="a run of another design shown beside RUN (repeatable), e.g. 'b_dec 0=runs/topk_zeros'")
    args = p.parse_args(argv)
    try:
        variants = [parse_variant(v) for v in args.variant]
    except ValueError as e:
        print(f"synthetic.authors: {e}", file=sys.stderr)
        return 2
    if not (args.run / "results.csv").is_file():
        print(f"synthetic.authors: {args.run / 'results.csv'} does not exist: run the authors preset first",
              file=sys.stderr)
        return 2
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    for path in write(args.run, args.out, variants):
        print(f"synthetic.authors: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
