"""Our run of the authors' spiked table beside theirs, cell by cell (docs/method.md §5, §7.6).

    python -m synthetic.starvation --preset authors --rhos 0.3 0.9     # CPU: hours
    python -m synthetic.starvation --preset authors-gpu                # all 5 ρ on one GPU
    python -m synthetic.authors runs/starvation_authors                # -> runs/starvation_authors/authors_table.md

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
from pathlib import Path
from typing import Any

from geomsae.config_cli import OneLineErrors
from geomsae.study.report import md_table
from geomsae.study.tables import read_csv

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
            out.append({"rho": rho, "arm": arm, "ours": ours, "theirs": theirs[arm],
                        "dead_diff": ours[0] - theirs[arm][0], "collapsed": int(float(r.get("collapsed", 0) or 0))})
    return out


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: per ρ a row, per arm a cell 'ours | theirs'; then the flagged cells."""
    cs = cells(rows)
    if not cs:
        return ["No (arm, ρ) of the authors' table was found in this run (arms "
                + ", ".join(ARMS) + f"; ρ {', '.join(map(str, THEIRS))}; seed 0)."]
    fmt = lambda t: f"{t[0]:.1f} / {t[1]:.2f} / {t[2]:.1f}"
    rhos = sorted({c["rho"] for c in cs})
    body = []
    for rho in rhos:
        line = [f"{rho:g}"]
        for arm in ARMS:
            c = next((c for c in cs if c["rho"] == rho and c["arm"] == arm), None)
            line.append("–" if c is None else f"{fmt(c['ours'])}{' (collapsed)' if c['collapsed'] else ''}"
                        f" ‖ {fmt(c['theirs'])}")
        body.append(line)
    far = [c for c in cs if abs(c["dead_diff"]) > FAR]
    lines = ["Each cell: **ours ‖ theirs**, dead % / explained variance / L0 at the run with L0 closest to 16 "
             "(ours: seed 0, held-out data, folded firing rule; theirs: the authors' logs, last training batch).", ""]
    lines += md_table(["ρ", *ARMS], body)
    lines += ["", f"Cells whose dead fraction differs from theirs by more than {FAR:g} points: {len(far)} of {len(cs)}"
              + (": " + ", ".join(f"{c['arm']} at ρ {c['rho']:g} ({c['dead_diff']:+.1f})" for c in far) if far else ".")]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = OneLineErrors(prog="python -m synthetic.authors", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a run folder of the authors or authors-gpu preset (with results.csv)")
    p.add_argument("--out", type=Path, default=None, help="default: RUN/authors_table.md")
    args = p.parse_args(argv)
    if not (args.run / "results.csv").is_file():
        print(f"synthetic.authors: {args.run / 'results.csv'} does not exist: run the authors preset first",
              file=sys.stderr)
        return 2
    lines = ["# The authors' spiked table: ours beside theirs", ""] + table(read_csv(args.run / "results.csv"))
    out = args.out or args.run / "authors_table.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"synthetic.authors: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
