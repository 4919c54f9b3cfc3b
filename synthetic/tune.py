"""Tune AEN within the authors' grid on a validation draw, then report it on a fresh draw (issue 12 item 5).

    python -m synthetic.starvation --preset aen-grid --out runs/aen_grid_val          # 12 grid arms, ρ 0.9, seeds 0-2
    python -m synthetic.tune runs/aen_grid_val --rho 0.9 --l0-target 4 --metric fvu  # prints the chosen settings
    python -m synthetic.starvation --preset quick --rhos 0.9 --seeds 10 11 12 --out runs/aen_tuned \\
        --adaptive-gamma G --adaptive-q Q --lam2 L                                    # the settings printed above

A seed draws the spiked data, so seeds 10-12 are data the choice never saw (the held-out draw). The
choice is :func:`geomsae.study.tuning.select` on the validation run's matched.csv.
"""

from __future__ import annotations

import json
from pathlib import Path

from geomsae.config_cli import OneLineErrors
from geomsae.study.arms import AEN_GRID, aen_grid_name
from geomsae.study.tables import read_csv
from geomsae.study.tuning import select


def main(argv: list[str] | None = None) -> int:
    p = OneLineErrors(prog="python -m synthetic.tune", description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="the validation run folder (matched.csv, config.json)")
    p.add_argument("--rho", type=float, required=True)
    p.add_argument("--l0-target", type=float, required=True)
    p.add_argument("--metric", default="fvu", help="a matched metric, e.g. fvu or dead_fraction")
    p.add_argument("--higher-is-better", action="store_true")
    args = p.parse_args(argv)
    cfg = json.loads((args.run / "config.json").read_text())
    names = {aen_grid_name(g, q, f): (g, q, f) for g, q, f in AEN_GRID}
    choice = select(read_csv(args.run / "matched.csv"), list(names), l0_target=args.l0_target, metric=args.metric,
                    higher_is_better=args.higher_is_better, cell={"rho": args.rho})
    g, q, f = names[choice.arm]
    print(json.dumps({"arm": choice.arm, "score": choice.score, "ranking": choice.ranking,
                      "flags": f"--adaptive-gamma {g:g} --adaptive-q {q:g} --lam2 {f * cfg['lam2']:g}"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
