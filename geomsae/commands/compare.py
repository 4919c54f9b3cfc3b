"""``geomsae compare RUN [RUN ...] --data PATH``: encoder codes vs the exact solution of the same objective.

Writes report.json, report.md and a self-contained report.html (figures inline) into
--out (default: RUN/compare for one run, ./compare for several).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from geomsae.compare import CompareConfig


def load_held_out(data: str, n_tokens: int, held_out: float) -> np.ndarray:
    """The first ``n_tokens`` of the held-out tail (last ``held_out`` fraction) of ``data``."""
    from geomsae.data import open_source, train_eval_split

    src = open_source(data)
    if held_out < 1:
        _, src = train_eval_split(src, held_out)
    xs, seen = [], 0
    for x in src.batches(4096, shuffle=False, epochs=1):
        xs.append(x[: n_tokens - seen].numpy())
        seen += xs[-1].shape[0]
        if seen >= n_tokens:
            break
    return np.concatenate(xs)


def run(args: argparse.Namespace) -> int:
    from geomsae.checkpoint import load_sae, read_cfg
    from geomsae.compare import compare_sae
    from geomsae.compare_report import markdown_table, run_labels, write_reports
    from geomsae.durable import check_out_folder

    cfg: CompareConfig = args.cfg
    out = cfg.out or (str(Path(args.runs[0]) / "compare") if len(args.runs) == 1 else "compare")
    check_out_folder(out)  # before the work, not after it
    for run_dir in args.runs:
        read_cfg(run_dir)  # every run readable before the first is compared
    X = load_held_out(args.data, cfg.n_tokens, cfg.held_out)
    reps = []
    for i, (run_dir, label) in enumerate(zip(args.runs, run_labels(args.runs)), 1):
        if args.progress:
            print(f"[{i}/{len(args.runs)}] {run_dir}: comparing on {X.shape[0]} tokens ...", file=sys.stderr, flush=True)
        run_cfg = cfg
        if read_cfg(run_dir).get("imported_from", {}).get("penalty_known") is False and not cfg.calibrate:
            print(f"{run_dir}: imported without its l1 coefficient: λ1 calibrated to the encoder's L0")
            run_cfg = dataclasses.replace(cfg, calibrate=True)
        rep = dataclasses.replace(compare_sae(load_sae(run_dir), X, run_cfg, progress=args.progress), name=label)
        reps.append(rep)
        t = rep.timing
        print(f"{run_dir}: {rep.penalty.how}\n  {X.shape[0]} tokens in {t.total_s:.1f} s "
              f"({100 * t.solver_share:.0f} % in the exact solver)", flush=True)
    write_reports(reps, out)
    print(markdown_table(reps))
    print(f"wrote {out}/report.json, report.md, report.html")
    return 0


def add_parser(sub: argparse._SubParsersAction, name: str, summary: str) -> None:
    p = sub.add_parser(name, help=summary, description=__doc__)
    p.add_argument("runs", nargs="+", metavar="RUN", help="SAE folders (cfg.json + sae.safetensors)")
    p.add_argument("--data", required=True, metavar="PATH",
                   help="activations: .npy (tokens, d_in), .safetensors or a shard folder")
    p.add_arguments(CompareConfig, dest="cfg")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="do not name the stages and show the solver's bar (on stderr)")
    p.set_defaults(run=run)
