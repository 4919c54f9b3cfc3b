"""Run every proofs_check statement and write the report.

    python -m proofs_check            # full grid (a few minutes on 2 cores)
    python -m proofs_check --quick    # reduced grid (well under a minute)

Writes proofs_check/report.md, proofs_check/config.json and proofs_check/figures/*.png
(or under --out). Exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from geomsae.config_cli import OneLineErrors
from geomsae.durable import check_out_folder
from proofs_check._common import Config
from proofs_check.report import make_figures, run_all, write_report

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = OneLineErrors(prog="python -m proofs_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced grid (well under a minute)")
    ap.add_argument("--seed", type=int, default=0, help="seed of every generator and random direction")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for report.md, config.json and figures/")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = ap.parse_args(argv)
    try:
        check_out_folder(args.out)  # before minutes of work, not after
    except ValueError as exc:
        print(f"python -m proofs_check: error: {exc}", file=sys.stderr)
        return 2
    cfg = Config.quick(args.seed) if args.quick else Config(seed=args.seed)
    t0 = time.perf_counter()
    res = run_all(cfg, quick=args.quick, progress=not args.no_progress)
    figs = make_figures(args.out / "figures", quick=args.quick, results=res)
    path = write_report(res, args.out, figs)
    n = sum(len(v) for v in res.checks.values())
    failed = [c.name for v in res.checks.values() for c in v if c.holds is False]
    for key, s in res.seconds.items():
        print(f"{key:20s} {s:7.1f} s")
    print(f"{n} checks, {len(failed)} failed; report {path}; total {time.perf_counter() - t0:.1f} s")
    for name in failed:
        print("FAILED:", name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
