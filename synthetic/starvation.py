"""Feature-starvation benchmark on the spiked model (issue 4; docs/method.md §4, §7); presets: synthetic/config.py.

    python -m synthetic.starvation --preset quick                 # every arm, 5 ρ, 3 seeds, 2 CPU cores
    python -m synthetic.starvation --preset paper --workers 16    # docs/method.md §4 sizes (see synthetic/config.py for the time)
    python -m synthetic.starvation --preset tiny                  # seconds; what the tests run
    python -m synthetic.starvation --preset quick --report-only   # redo matched.csv, summary.md, figures
    python -m synthetic.starvation --preset quick --estimate-only # time a stack, extrapolate the total
    python -m synthetic.starvation --preset standard              # the committed verdicts (issue 12): 5 seeds, converged lengths
    for s in 125 500 2000 4000; do python -m synthetic.starvation --preset length --steps $s --resample-every $((s/3+1)) --out runs/length_$s; done
    python -m synthetic.length runs/length_125 runs/length_500 runs/length_2000 runs/length_4000
    python -m synthetic.starvation --preset authors --rhos 0.3 0.9  # the authors' table rows, their length (CPU: long)
    python -m synthetic.starvation --preset authors-gpu           # the whole authors' table on one GPU

Every arm (:data:`geomsae.study.ARMS`) is trained on x = D z from :func:`synthetic.spiked` for
every coherence ρ and seed; the seed draws the data (D, supports, magnitudes) *and*
initialises the SAE, so arms are compared on the same data. A *cell* (arm, ρ, seed) sweeps
the arm's knob: TopK-type arms the ``topk_ks`` grid, penalty arms ``sweep_points`` λ values
placed in rounds (:mod:`geomsae.study.rounds`). One round trains every cell at once, in
stacks of one architecture (relu_l1 with relu_l1_resample, topk with topk_auxk; every ρ,
seed and λ of the round) of at most ``stack_size`` SAEs, each member on its own cell's data
with its cell's seed, so it equals the solo run; ``workers`` processes train stacks side by
side. Every SAE is evaluated on ``n_eval`` held-out tokens of the same model.

Outputs (``out``, default ``runs/starvation_<preset>/``): ``config.json``; ``results.csv``, one
row per trained SAE (columns: :func:`result_columns`); ``firing_hist.csv``; ``timing.json``;
then ``matched.csv``, ``verdicts.csv``, ``summary.md`` (:func:`geomsae.study.write_report` with
:data:`STUDY`) and the figures (:mod:`synthetic.plots`). Determinism: on CPU the same config
gives a byte-identical ``results.csv`` *except* its ``train_time_s`` column (wall time);
``firing_hist.csv`` and ``matched.csv`` carry no timing and are byte-identical.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from functools import partial
from pathlib import Path

from geomsae import durable
from geomsae.config_cli import OneLineErrors
from geomsae.config_cli import parse_config as parse_dataclass
from geomsae.study import (
    ARMS,
    Cell,
    Member,
    Run,
    sweep,
    tables,
    train_round,
    write_report,
)
from geomsae.training.runtime import resolve_device
from synthetic import authors, plots
from synthetic.budget import check_memory, estimate
from synthetic.cells import CELL_KEYS, result_columns, train_stack_job
from synthetic.config import PRESETS, StarvationConfig
from synthetic.report import STUDY
from synthetic.resume import resume_rows


def run(cfg: StarvationConfig) -> Path:
    """Sweep every cell in rounds, write the CSVs, then the report and figures; returns the folder."""
    check_memory(cfg)
    out = cfg.out_dir
    with durable.folder_lock(out, "synthetic.starvation"):  # one runner per folder
        return _run(cfg, out)


def _run(cfg: StarvationConfig, out: Path) -> Path:
    cfg_json = json.dumps(dataclasses.asdict(cfg), indent=2) + "\n"
    known = resume_rows(out, cfg_json)
    (out / "config.json").write_text(cfg_json)
    cells = [Cell(a, (float(r),), s) for r in cfg.rhos for s in cfg.seeds for a in cfg.arms]
    t0 = time.perf_counter()
    stack_sizes: list[int] = []
    saved = dict(known)

    def done(stack: list[Member], runs: list[Run]) -> None:
        stack_sizes.append(len(stack))
        l0 = [r.row["l0"] for r in runs]
        print(f"  stack of {len(stack)} {ARMS[stack[0].arm].arch} SAEs: L0 {min(l0):.2f}..{max(l0):.2f} "
              f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
        saved.update({r.member.key: (r.row, r.hist) for r in runs})  # every finished stack is on disk at once
        tables.write_runs(out, saved, result_columns(cfg), CELL_KEYS, cfg.arms)

    job = partial(train_stack_job, cfg)
    runs = sweep(cfg, cells, lambda ms: train_round(ms, job, stack_size=cfg.stack_size, workers=cfg.workers,
                                                    on_stack=done, steps_of=cfg.steps_for), known=known)
    wall = time.perf_counter() - t0
    tables.write_runs(out, {r.member.key: (r.row, r.hist) for r in runs}, result_columns(cfg), CELL_KEYS, cfg.arms)
    (out / "timing.json").write_text(json.dumps({
        "wall_s": round(wall, 1), "runs": len(runs), "workers": cfg.workers, "stacks": len(stack_sizes),
        "largest_stack": max(stack_sizes, default=0), "resumed_runs": len(known), "mean_run_s": round(sum(r.row["train_time_s"] for r in runs) / len(runs), 3)},
        indent=2) + "\n")
    report(cfg)
    print(f"synthetic.starvation: {len(runs)} runs in {len(stack_sizes)} stacks, {wall:.0f}s -> {out}", file=sys.stderr)
    return out


def report(cfg: StarvationConfig) -> list[Path]:
    """matched.csv, verdicts.csv, summary.md and the figures from results.csv in cfg.out_dir."""
    write_report(cfg.out_dir, cfg, STUDY)
    if cfg.preset.startswith("authors"):  # their spiked table beside ours (synthetic/authors.py)
        authors.main([str(cfg.out_dir)])
    return plots.make_all(cfg.out_dir, cfg)


def parse_config(argv: list[str] | None = None) -> tuple[StarvationConfig, argparse.Namespace]:
    """Preset, then every StarvationConfig field overridable as --kebab-case; (config, namespace
    holding report_only and estimate_only)."""
    pre = OneLineErrors(add_help=False, prog="python -m synthetic.starvation")
    pre.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    known, _ = pre.parse_known_args(argv)

    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--report-only", action="store_true", help="redo matched.csv, summary.md and the figures")
        p.add_argument("--estimate-only", action="store_true", help="time a stack of SAEs and extrapolate the run time")

    return parse_dataclass(StarvationConfig, argv, defaults=PRESETS[known.preset], prog="python -m synthetic.starvation",
                           description=__doc__.split("\n\n")[0], add_extra=extra)


def main(argv: list[str] | None = None) -> int:
    cfg, ns = parse_config(argv)

    try:  # before anything is drawn or trained
        resolve_device(cfg.device)
    except ValueError as e:
        print(f"synthetic.starvation: {e}: the {cfg.preset} preset trains there (--device cpu runs it on this "
              "machine's CPU, far slower)", file=sys.stderr)
        return 2
    if ns.estimate_only:
        print(json.dumps({k: round(v, 4) for k, v in estimate(cfg).items()}, indent=2))
        return 0
    if ns.report_only:
        for p in report(cfg):
            print(p)
        return 0
    run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
