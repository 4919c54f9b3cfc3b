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
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from geomsae import metrics
from geomsae.config_cli import OneLineErrors
from geomsae.config_cli import parse_config as parse_dataclass
from geomsae.metrics import outlier_severity
from geomsae.study import (
    ARMS,
    Cell,
    Member,
    Run,
    sweep,
    tables,
    train_and_evaluate,
    train_round,
    write_report,
)
from geomsae.study.cost import CPU_GEMM_FLOPS, train_flops_per_token
from geomsae.study.stack import train_config, train_members
from geomsae.train_utils import resolve_device, start_b_dec
from synthetic import authors, plots
from synthetic.config import PRESETS, StarvationConfig
from synthetic.generators import spiked, spiked_dictionary
from synthetic.report import STUDY
from synthetic.stream import SpikedStream

CELL_KEYS = ("rho",)
EXTRA_COLUMNS = [*tables.EVAL_METRICS, *tables.TRUE_DICT_METRICS, *tables.TRUE_CODE_METRICS,
                 "support_precision", "support_recall", "support_f1", *tables.TRAIN_METRICS, "gamma", "gamma_start"]
TIMING_COLUMNS = ["train_time_s"]


def result_columns(cfg: StarvationConfig) -> list[str]:
    """Columns of results.csv, in order."""
    return tables.result_columns(CELL_KEYS, cfg.eval_windows, EXTRA_COLUMNS + TIMING_COLUMNS)


# --------------------------------------------------------------------------- data and one stack
class Data(NamedTuple):
    x_train: Any
    """(steps·batch_size, n) float32 training activations: a tensor, or a :class:`synthetic.stream.SpikedStream`
    of them (``stream_chunk``)."""
    x_eval: torch.Tensor
    """(n_eval, n) float32 held-out activations."""
    z_eval: np.ndarray
    """(n_eval, m) float32 true codes of the held-out tokens."""
    D: np.ndarray
    """(n, m) true dictionary, atoms as columns."""


def make_data(n: int, m: int, k: int, rho: float, n_train: int, n_eval: int, seed: int,
              float_jitter: float = 0.0) -> Data:
    """The spiked data of one (ρ, seed): the first n_train samples train, the rest evaluate.

    ``float_jitter`` > 0 multiplies each training element by (1 + float_jitter·ε), ε ~ N(0, 1) drawn
    from its own generator (seeded by ``seed``), so the held-out data and the truth are unchanged."""
    d = spiked(n=n, m=m, k=k, rho=rho, n_samples=n_train + n_eval, seed=seed)
    x = torch.from_numpy(np.ascontiguousarray(d.activations, dtype=np.float32))
    z_eval = d.codes[n_train:].toarray().astype(np.float32)
    x_train = x[:n_train].clone()
    if float_jitter > 0:  # in row chunks: the same numbers as one draw, without four float64 copies of the data
        rng = np.random.default_rng([seed, 0x6A17])
        for i in range(0, n_train, _JITTER_ROWS):
            part = x_train[i:i + _JITTER_ROWS]
            eps = rng.standard_normal(tuple(part.shape))
            part.copy_((part.double() * torch.from_numpy(1.0 + float_jitter * eps)).float())
    return Data(x_train, x[n_train:].clone(), z_eval, d.dictionary)


_JITTER_ROWS = 1 << 16


_CACHE: OrderedDict[tuple, Data] = OrderedDict()
_CACHE_BYTES = 1 << 30  # keep the newest cells' data up to 1 GiB per process (a stack needs its cells')


def stream_data(n: int, m: int, k: int, rho: float, n_train: int, n_eval: int, seed: int, chunk: int,
                device: str | None = None) -> Data:
    """The data of one (ρ, seed) with the training samples streamed (:class:`synthetic.stream.SpikedStream`,
    chunks of ``chunk`` rows, drawn by torch on ``device`` when given): the held-out samples, the truth and D are
    ``spiked(n_samples=n_eval, seed)``, the training samples fresh draws on that D. Other numbers than
    :func:`make_data`'s, from the same model."""
    d = spiked(n=n, m=m, k=k, rho=rho, n_samples=n_eval, seed=seed)
    return Data(SpikedStream(d.dictionary, k, n_train, seed, chunk, device=device),
                torch.from_numpy(np.ascontiguousarray(d.activations, dtype=np.float32)),
                d.codes.toarray().astype(np.float32), d.dictionary)


def cell_data(cfg: StarvationConfig, rho: float, seed: int) -> Data:
    """:func:`make_data` (or, with ``stream_chunk``, :func:`stream_data`) of one cell, cached per process."""
    base = (cfg.n, cfg.m, cfg.k, float(rho), cfg.steps * cfg.batch_size, cfg.n_eval, seed)
    device = cfg.device if cfg.stream_on_device else None
    key = (*base, "stream", cfg.stream_chunk, device) if cfg.stream_chunk else (*base, cfg.float_jitter)
    if key not in _CACHE:
        _CACHE[key] = (stream_data(*base, cfg.stream_chunk, device) if cfg.stream_chunk
                       else make_data(*base, cfg.float_jitter))
        size = lambda d: d.x_train.nbytes + d.x_eval.nbytes + d.z_eval.nbytes
        while len(_CACHE) > 1 and sum(size(d) for d in _CACHE.values()) > _CACHE_BYTES:
            _CACHE.popitem(last=False)
    return _CACHE[key]


def synthetic_train_config(cfg: StarvationConfig) -> Any:
    """The TrainConfig of every SAE of the benchmark (seeds come per member)."""
    return train_config(cfg, input_scale_tokens=min(65_536, cfg.steps * cfg.batch_size), log_every=cfg.steps,
                        b_dec_init=cfg.b_dec_init,
                        checkpoint_every=0, out=None, progress=False)


def _truth_columns(data: Data, sae: Any) -> dict[str, Any]:
    """Support precision / recall / F1 of the Hungarian-matched atoms, a latent in the support where it fires
    by the folded rule (z_j‖d_j‖ > FIRE_REL · RMS(x), docs/method.md §3), as everywhere else."""
    sae = sae.cpu()
    with torch.no_grad():
        folded = sae.encode(data.x_eval) * sae.W_dec.norm(dim=0)
    tol = metrics.FIRE_REL * metrics.rms_norm(data.x_eval)
    prf = metrics.support_prf(data.z_eval, folded, metrics.hungarian_match(data.D, sae.W_dec.detach().double()),
                              tol=tol)
    return {"support_precision": prf["precision"], "support_recall": prf["recall"], "support_f1": prf["f1"]}


def centering_columns(data: Data, tcfg: Any, seed: int) -> dict[str, float]:
    """The outlier severity γ = ‖μ‖/‖σ‖ of the cell's held-out data (:func:`geomsae.metrics.outlier_severity`;
    arXiv 2605.31518), and ``gamma_start``, the same data's γ about the decoder bias the SAE started from
    (:func:`geomsae.train_utils.start_b_dec` on the member's own training stream): γ for a zero start, near 0
    for a mean start."""
    b0 = start_b_dec(data.x_train, dataclasses.replace(tcfg, seed=seed, data_seed=seed))
    return {"gamma": outlier_severity(data.x_eval), "gamma_start": outlier_severity(data.x_eval, b0)}


def train_stack_job(cfg: StarvationConfig, stack: list[Member]) -> list[Run]:
    """Train and evaluate one stack, each member on its own cell's data (one torch thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = {(m.cell[0], m.seed): cell_data(cfg, m.cell[0], m.seed) for m in stack}
        mine = [data[(m.cell[0], m.seed)] for m in stack]
        tcfg = synthetic_train_config(cfg.for_arm(stack[0].arm))
        outs = stack_folders(cfg, stack) if cfg.checkpoint_every else None
        if outs is not None:
            tcfg = dataclasses.replace(tcfg, checkpoint_every=cfg.checkpoint_every)
        runs = train_and_evaluate(
            stack, cfg, d_sae=cfg.m, train_source=[d.x_train for d in mine], eval_source=[d.x_eval for d in mine],
            tcfg=tcfg, cell_keys=CELL_KEYS, true_dicts=[d.D for d in mine], true_codes=[d.z_eval for d in mine],
            extras=lambda m, res, row: _truth_columns(data[(m.cell[0], m.seed)], res.sae),
            outs=outs, resume=outs is not None)
        gammas = {key: centering_columns(d, tcfg, key[1]) for key, d in data.items()}  # once per (ρ, seed)
        for r in runs:
            r.row.update(gammas[(r.member.cell[0], r.member.seed)])
        return runs
    finally:
        torch.set_num_threads(threads)


def stack_folders(cfg: StarvationConfig, stack: list[Member]) -> list[Path]:
    """The run folder of each member with ``checkpoint_every``: out/stacks/<stack id>/<arm>_rho<ρ>_s<seed>_<value>.

    The stack id hashes its members and length, so a rerun that forms the same stack resumes its checkpoints,
    and a stack formed otherwise (another --workers or --stack-size) starts in folders of its own."""
    import hashlib

    steps = cfg.steps_for(stack[0].arm)
    sid = hashlib.sha256(repr((steps, [m.key for m in stack])).encode()).hexdigest()[:12]
    return [cfg.out_dir / "stacks" / f"{stack[0].arm}_{sid}" / f"{m.arm}_rho{m.cell[0]:g}_s{m.seed}_{m.value:g}"
            for m in stack]


# --------------------------------------------------------------------------- the whole benchmark
RESULT_NEUTRAL = ("out", "workers", "checkpoint_every")
"""Config fields that do not change a run's results (where it is written; how many processes train its
stacks, which are bit-identical across worker counts on CPU; how often a stack is checkpointed, a resumed
stack continuing exactly), so :func:`same_config` ignores them."""


def same_config(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a saved config.json describes the run ``current`` (both as JSON dicts). A field the saved
    config lacks (it predates the field) counts as that field's default, which reproduces the older
    behaviour; :data:`RESULT_NEUTRAL` fields are ignored, :data:`EXTENDABLE` ones may have grown; any other
    difference, or a saved field unknown now, makes them different."""
    defaults = json.loads(json.dumps(dataclasses.asdict(StarvationConfig())))
    if set(saved) - set(current):
        return False
    for k in EXTENDABLE:
        old, new = saved.get(k, defaults[k]), current[k]
        if (old > new) if isinstance(new, (int, float)) else not set(old) <= set(new):
            return False
    old_arms = set(saved.get("arms", defaults["arms"]))
    old_steps, new_steps = set(saved.get("arm_steps", defaults["arm_steps"])), set(current["arm_steps"])
    if not old_steps <= new_steps or any(e.split("=")[0].strip() in old_arms for e in new_steps - old_steps):
        return False  # an arm already trained keeps its length; an added arm may bring its own
    return all(saved.get(k, defaults.get(k)) == v for k, v in current.items()
               if k not in RESULT_NEUTRAL and k not in EXTENDABLE and k != "arm_steps")


EXTENDABLE = ("sweep_points", "rhos", "seeds", "arms", "topk_ks")
"""Config fields a resumed run may extend (never shrink): a trained SAE depends only on its own cell (arm, ρ,
seed) and λ or k, not on how many λ its cell may try nor on which other cells, arms or k the design has, so a
rerun with more ``sweep_points`` (a number, raised) or more ``rhos`` / ``seeds`` / ``arms`` / ``topk_ks``
(lists, supersets) keeps every finished SAE: the old cells replay their rounds exactly and the new cells start
theirs (a longer length run of a few more arms goes into the same folder). ``arm_steps`` may gain entries for
the added arms only: an arm already trained keeps its length."""


def resume_rows(out: Path, cfg_json: str) -> dict[tuple, tuple[dict[str, Any], list[int]]]:
    """The runs already in ``out`` (results.csv + firing_hist.csv, written after every stack) when its
    config.json is ``cfg_json``; {} for a fresh folder. Raises FileExistsError when ``out`` holds runs of
    another config, so a run never mixes with, or overwrites, a different design's results."""
    if not (out / "results.csv").exists():
        return {}
    saved = out / "config.json"
    if not saved.exists() or not same_config(json.loads(saved.read_text()), json.loads(cfg_json)):
        raise FileExistsError(f"{out} holds the results of another configuration ({saved}); give another --out "
                              "or remove that folder")
    known = tables.load_runs(out, CELL_KEYS)
    print(f"synthetic.starvation: resuming {out}: {len(known)} SAEs already trained", file=sys.stderr)
    return known


def available_memory() -> int | None:
    """Bytes of memory available now (Linux /proc/meminfo MemAvailable); None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def data_peak_bytes(cfg: StarvationConfig) -> int:
    """Peak bytes one worker needs to draw one cell's data in memory (0 with ``stream_chunk``): the float64
    product, its float32 copy and the training clone (16 bytes per element), and the sparse codes (12 per nonzero)."""
    if cfg.stream_chunk:
        return 0
    rows = max(cfg.steps_for(a) for a in cfg.arms) * cfg.batch_size + cfg.n_eval
    return rows * (16 * cfg.n + 12 * cfg.k)


def check_memory(cfg: StarvationConfig, available: int | None = None) -> None:
    """Refuse, before anything is drawn, a design whose workers cannot even draw one cell's data each (a worker
    holds the data of every cell of its stack, so passing this is necessary, not sufficient: the standard
    preset's workers held 8.8 GB each against 2.2 GB here)."""
    available = available_memory() if available is None else available
    need = data_peak_bytes(cfg) * cfg.workers
    if available is not None and need > available:
        raise MemoryError(f"drawing the training data in memory needs at least {need / 2**30:.1f} GiB "
                          f"({cfg.workers} worker(s) x {data_peak_bytes(cfg) / 2**30:.1f} GiB), and "
                          f"{available / 2**30:.1f} GiB is available: pass --stream-chunk 65536 to draw it "
                          "while training (synthetic/stream.py), or fewer --workers or --steps")


def run(cfg: StarvationConfig) -> Path:
    """Sweep every cell in rounds, write the CSVs, then the report and figures; returns the folder."""
    check_memory(cfg)
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
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


def estimate(cfg: StarvationConfig, steps: int = 20, members: int = 4) -> dict[str, float]:
    """Time ``steps`` steps of a stack of ``members`` aen SAEs at the preset's sizes; extrapolate."""
    torch.set_num_threads(1)
    x = torch.randn(steps * cfg.batch_size, cfg.n)
    stack = [Member("aen", (0.0,), s, cfg.lam_aen) for s in range(min(members, cfg.stack_size))]
    tc = dataclasses.replace(synthetic_train_config(cfg), steps=steps, log_every=steps, input_scale_tokens=x.shape[0])
    train_members(stack[:1], cfg, d_sae=cfg.m, source=x[: 2 * cfg.batch_size], tcfg=dataclasses.replace(tc, steps=2))
    _, wall = train_members(stack, cfg, d_sae=cfg.m, source=x, tcfg=tc)
    per_step = wall / steps / len(stack)  # per SAE
    n_runs = sum(_runs_per_cell(cfg, a) for a in cfg.arms) * len(cfg.rhos) * len(cfg.seeds)
    run_steps = sum(_runs_per_cell(cfg, a) * cfg.steps_for(a) for a in cfg.arms) * len(cfg.rhos) * len(cfg.seeds)
    n_train = max(cfg.steps_for(a) for a in cfg.arms) * cfg.batch_size
    out = {"s_per_step": per_step, "s_per_run": per_step * run_steps / n_runs, "runs_max": n_runs,
           "hours_one_worker": per_step * run_steps / 3600,
           "hours_all_workers": per_step * run_steps / 3600 / cfg.workers,
           "roofline_hours": planned_flops(cfg) / CPU_GEMM_FLOPS / 3600,
           # in memory per cell: the training samples (unless streamed), the held-out samples and their codes
           "data_gb_per_cell": ((0 if cfg.stream_chunk else n_train * cfg.n) + cfg.n_eval * (cfg.n + cfg.m)) * 4 / 1e9}
    if cfg.stream_chunk:  # the time to draw one cell's stream once (each stack draws its cells' streams once)

        device = cfg.device if cfg.stream_on_device else None
        D = spiked_dictionary(np.random.default_rng(0), cfg.n, cfg.m, 0.5, False)
        sync = torch.cuda.synchronize if device is not None and torch.device(device).type == "cuda" else (lambda: None)
        SpikedStream(D, cfg.k, n_train, 0, cfg.stream_chunk, device=device).chunk_rows(0)  # warm-up (first kernels)
        sync()
        t0 = time.perf_counter()
        SpikedStream(D, cfg.k, n_train, 0, cfg.stream_chunk, device=device).chunk_rows(0)
        sync()
        out["stream_s_per_cell"] = (time.perf_counter() - t0) * -(-n_train // cfg.stream_chunk)
    return out


def _runs_per_cell(cfg: StarvationConfig, arm: str) -> int:
    """The most SAEs one (ρ, seed) cell trains for ``arm``: its k grid or its sweep points."""
    return len(set(cfg.topk_ks)) if ARMS[arm].start is None else cfg.sweep_points


def planned_flops(cfg: StarvationConfig) -> float:
    """FLOPs of training every SAE of ``cfg`` (the sweep's maximum): Σ_arms runs × its steps × batch × 10·n·m
    (:mod:`geomsae.study.cost`)."""
    run_steps = sum(_runs_per_cell(cfg, a) * cfg.steps_for(a) for a in cfg.arms) * len(cfg.rhos) * len(cfg.seeds)
    return float(run_steps) * cfg.batch_size * train_flops_per_token(cfg.n, cfg.m)


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
