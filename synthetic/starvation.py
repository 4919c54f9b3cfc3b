"""Feature-starvation benchmark on the spiked model (issue 4; SPEC §2, §3, §4, §5).

    python -m synthetic.starvation --preset quick                 # every arm, 5 ρ, 3 seeds: ≈ 8 min, 2 CPU cores
    python -m synthetic.starvation --preset paper --workers 16    # SPEC §4 sizes (see PRESETS for the time)
    python -m synthetic.starvation --preset tiny                  # seconds; what the tests run
    python -m synthetic.starvation --preset quick --report-only   # redo matched.csv, summary.md, figures
    python -m synthetic.starvation --preset quick --estimate-only # time one run, extrapolate the total

Every arm of SPEC §2 (``ARMS``) is trained on x = D z from :func:`synthetic.spiked` for every
coherence ρ and seed; the seed draws the data (D, supports, magnitudes) *and* initialises the
SAE, so arms are compared on the same data. Each (arm, ρ, seed) *cell* sweeps the arm's
sparsity knob: TopK-type arms a fixed grid of k (``topk_ks``); penalty arms ``sweep_points``
values of λ chosen by :func:`next_lambda`, which starts at the arm's ``lam_*`` value and
steps in log λ until the held-out L0 brackets every ``l0_targets`` entry (then bisects the
widest bracket). Every SAE is evaluated on ``n_eval`` held-out tokens of the same model.

Outputs (``out``, default ``runs/starvation_<preset>/``): ``config.json``; ``results.csv``, one
row per trained SAE (columns: ``RESULT_COLUMNS``); ``firing_hist.csv`` (log10 firing-frequency
histogram of every run); ``timing.json``; then :mod:`synthetic.report` writes ``matched.csv``
and ``summary.md`` and :mod:`synthetic.plots` the figures. Determinism: on CPU the same
config gives a byte-identical ``results.csv`` *except* its ``train_time_s`` column (wall
time, kept there so a row is self-contained); ``firing_hist.csv`` and ``matched.csv`` carry
no timing and are byte-identical.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from geomsae.config_cli import add_dataclass_args, from_args
from synthetic.arms import ARMS
from synthetic.report import write_csv
from synthetic.sweep import next_lambda


@dataclass
class StarvationConfig:
    """One starvation benchmark: data, arms, sweeps, training and evaluation."""

    preset: str = "quick"
    """Name of the preset these values came from (recorded in config.json)."""
    n: int = 64
    """Input width d_in of the spiked model (SPEC §4: 256)."""
    m: int = 256
    """Number of true features; also the SAEs' d_sae (SPEC §4: 1024)."""
    k: int = 4
    """Active true features per sample (SPEC §4: 16)."""
    rhos: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.9)
    """Coherences ρ of the spiked dictionary."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds: each draws the data and initialises the SAEs (>= 2 for the verdicts)."""
    arms: tuple[str, ...] = ("relu_l1", "relu_l1_resample", "topk", "topk_auxk", "batchtopk", "jumprelu",
                             "gated", "en", "adaptive_lasso", "aen")
    """Arms to train (names of ARMS)."""
    l0_targets: tuple[float, ...] = (4.0, 6.0)
    """Held-out L0 values at which arms are compared (matched.csv, summary.md)."""
    topk_ks: tuple[int, ...] = (2, 4, 8)
    """k grid of the topk, topk_auxk and batchtopk arms."""
    sweep_points: int = 3
    """Runs per cell of a penalty arm (λ values placed by next_lambda)."""
    lam_relu_l1: float = 0.05
    """First λ of relu_l1 and relu_l1_resample (SAE units: per-element MSE + λ Σ‖W_dec,j‖z_j)."""
    lam_gated: float = 0.05
    """First λ of gated."""
    lam_jumprelu: float = 0.01
    """First λ (L0 coefficient) of jumprelu."""
    lam_en: float = 0.03
    """First λ1 of en."""
    lam_adaptive_lasso: float = 0.005
    """First λ1 of adaptive_lasso."""
    lam_aen: float = 0.005
    """First λ1 of aen."""
    lam2: float = 1e-3
    """λ2 of en and aen (SAE units; canonical λ2' = n·λ2), held fixed while λ1 is swept."""
    adaptive_beta: float = 0.99
    """EMA decay β of the adaptive weights (adaptive_lasso, aen); 0.999 for long runs."""
    adaptive_warmup_frac: float = 0.25
    """Adaptive weights off (w ≡ 1) for this fraction of the steps, ..."""
    adaptive_ramp_frac: float = 0.25
    """... then ramped in linearly over this fraction."""
    jumprelu_theta_init: float = 0.5
    """Initial JumpReLU threshold (inputs are scaled to E‖x‖² = n)."""
    jumprelu_bandwidth: float = 0.1
    """Bandwidth ε of the JumpReLU straight-through estimator."""
    dead_window_tokens: int = 6400
    """Training tokens without firing after which AuxK and resampling treat a latent as dead."""
    resample_every: int = 134
    """Steps between resampling checks of relu_l1_resample (steps//3 + 1: two resamplings, the last
    a third of the run before the end, so resampled latents settle before evaluation)."""
    steps: int = 400
    """Optimizer steps per SAE (training data: steps·batch_size fresh tokens, one epoch)."""
    batch_size: int = 128
    """Tokens per step."""
    lr: float = 1e-2
    """Peak Adam learning rate (linear warm-up over 5 % of the steps, linear decay over the last 20 %)."""
    n_eval: int = 8192
    """Held-out evaluation tokens (same dictionary, fresh codes)."""
    eval_windows: tuple[int, ...] = (1024, 4096)
    """Token counts N for the dead_at_N columns (dead_fraction uses all n_eval tokens)."""
    se_factor: float = 2.0
    """Verdict rule: a difference counts when it exceeds se_factor standard errors."""
    workers: int = 2
    """Worker processes (one torch thread each); 1 runs in-process."""
    device: str = "cpu"
    """Torch device for training ('cpu' is bit-reproducible; 'cuda' for the paper preset)."""
    out: str | None = None
    """Output folder; None means runs/starvation_<preset>."""

    def __post_init__(self) -> None:
        for name in ("n", "m", "k", "steps", "batch_size", "n_eval", "sweep_points", "workers",
                     "dead_window_tokens", "resample_every"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"{name} == {v!r}, must be an integer >= 1")
        if not self.k <= self.m:
            raise ValueError(f"k == {self.k}, must be in [1, m={self.m}]")
        if not self.rhos or not all(0.0 <= r < 1.0 for r in self.rhos):
            raise ValueError(f"rhos == {self.rhos!r}, must be a non-empty list of numbers in [0, 1)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds == {self.seeds!r}, must be distinct integers >= 0")
        unknown = sorted(set(self.arms) - set(ARMS))
        if not self.arms or unknown:
            raise ValueError(f"arms == {self.arms!r}: unknown {unknown}; choose from {list(ARMS)}")
        if not self.l0_targets or not all(t > 0 for t in self.l0_targets):
            raise ValueError(f"l0_targets == {self.l0_targets!r}, must be numbers > 0")
        if not self.topk_ks or not all(1 <= kk <= self.m for kk in self.topk_ks):
            raise ValueError(f"topk_ks == {self.topk_ks!r}, each must be in [1, m={self.m}]")
        if not self.eval_windows or not all(1 <= w <= self.n_eval for w in self.eval_windows):
            raise ValueError(f"eval_windows == {self.eval_windows!r}, each must be in [1, n_eval={self.n_eval}]")
        for name in ("adaptive_warmup_frac", "adaptive_ramp_frac"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} == {getattr(self, name)!r}, must be in [0, 1]")
        if not self.se_factor > 0:
            raise ValueError(f"se_factor == {self.se_factor!r}, must be > 0")

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else Path("runs") / f"starvation_{self.preset}"


PRESETS: dict[str, StarvationConfig] = {
    # Seconds: two arms, two ρ, two seeds, tiny sizes (the tests).
    "tiny": StarvationConfig(preset="tiny", n=16, m=32, k=2, rhos=(0.0, 0.7), seeds=(0, 1),
                             arms=("relu_l1", "aen"), l0_targets=(2.0, 3.0), topk_ks=(1, 2, 4), sweep_points=3,
                             steps=60, batch_size=64, n_eval=1024, eval_windows=(256,), dead_window_tokens=640,
                             resample_every=21, workers=1),
    # Every arm, 5 ρ, 3 seeds in <= 10 min on 2 CPU cores (measured: see the module docstring).
    "quick": StarvationConfig(preset="quick"),
    # SPEC §4 sizes. Measured on CPU (1 thread): ≈ 25 ms/step → ≈ 2 min per SAE, 555 SAEs ≈ 19 h
    # on one core; use --workers or --device cuda. See --estimate-only.
    "paper": StarvationConfig(preset="paper", n=256, m=1024, k=16, l0_targets=(16.0, 24.0), topk_ks=(8, 16, 32),
                              lam_relu_l1=0.05, lam_gated=0.1, lam_jumprelu=0.01, lam_en=0.03,
                              lam_adaptive_lasso=0.01, lam_aen=0.01, lam2=2.5e-4, adaptive_beta=0.999,
                              steps=5000, batch_size=512, lr=3e-3, n_eval=65_536,
                              eval_windows=(1024, 8192, 65_536), dead_window_tokens=256_000, resample_every=1667,
                              sweep_points=4),
}


METRIC_COLUMNS = ["l0", "fvu", "dead_fraction"]  # dead_at_{N} follow, then OTHER_METRICS
OTHER_METRICS = ["dense_fraction", "dense_fraction_001", "mmcs", "recovery_rate", "recovery_chance", "mcc",
                 "support_precision", "support_recall", "support_f1", "l2_ratio", "rel_bias", "shrinkage"]
TIMING_COLUMNS = ["train_time_s"]


def result_columns(cfg: StarvationConfig) -> list[str]:
    """Columns of results.csv, in order."""
    dead = [f"dead_at_{w}" for w in sorted(cfg.eval_windows)]
    return (["arm", "arch", "rho", "seed", "param", "value", "hparams"] + METRIC_COLUMNS + dead + OTHER_METRICS
            + TIMING_COLUMNS)


# --------------------------------------------------------------------------- one run
class Data(NamedTuple):
    x_train: torch.Tensor
    """(steps·batch_size, n) float32 training activations."""
    x_eval: torch.Tensor
    """(n_eval, n) float32 held-out activations."""
    z_eval: np.ndarray
    """(n_eval, m) float32 true codes of the held-out tokens."""
    D: np.ndarray
    """(n, m) true dictionary, atoms as columns."""
    recovery_chance: float
    """Recovery rate of a dictionary made of the mean atom alone (SPEC's cos > 0.9 rule)."""


@lru_cache(maxsize=2)
def make_data(n: int, m: int, k: int, rho: float, n_train: int, n_eval: int, seed: int) -> Data:
    """The spiked data of one (ρ, seed): the first n_train samples train, the rest evaluate."""
    from geomsae import metrics
    from synthetic.generators import spiked

    d = spiked(n=n, m=m, k=k, rho=rho, n_samples=n_train + n_eval, seed=seed)
    x = torch.from_numpy(np.ascontiguousarray(d.activations, dtype=np.float32))
    mean_atom = d.dictionary.mean(axis=1, keepdims=True)
    chance = metrics.recovery_rate(d.dictionary, mean_atom) if np.linalg.norm(mean_atom) > 0 else 0.0
    z_eval = d.codes[n_train:].toarray().astype(np.float32)
    return Data(x[:n_train].clone(), x[n_train:].clone(), z_eval, d.dictionary, chance)


def train_sae(cfg: StarvationConfig, arm_name: str, value: float, data: Data, seed: int) -> tuple[Any, dict[str, Any]]:
    """Train one SAE of ``arm_name`` with its knob at ``value`` on ``data``; (SAE on the CPU in eval mode, fields)."""
    from geomsae.train import TrainConfig, train

    arm = ARMS[arm_name]
    fields = {**arm.fixed(cfg), arm.param: int(value) if arm.param == "k" else float(value)}
    tcfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                       lr_warmup_steps=max(1, cfg.steps // 20), seed=seed, input_norm="dataset",
                       input_scale_tokens=min(65_536, data.x_train.shape[0]), dead_window_tokens=cfg.dead_window_tokens,
                       log_every=cfg.steps, checkpoint_every=0, out=None, device=cfg.device, progress=False)
    res = train({"arch": arm.arch, "d_sae": cfg.m, **fields}, data.x_train, tcfg)
    return res.sae.cpu().eval(), fields


def train_and_evaluate(cfg: StarvationConfig, arm_name: str, value: float, data: Data,
                       seed: int) -> tuple[dict[str, Any], list[int]]:
    """Train one SAE of ``arm_name`` with its knob at ``value``; (results row, firing histogram)."""
    from geomsae import metrics
    from geomsae.evaluate import evaluate

    arm = ARMS[arm_name]
    t0 = time.perf_counter()
    sae, fields = train_sae(cfg, arm_name, value, data, seed)
    ev = evaluate(sae, data.x_eval, true_dict=data.D, windows=tuple(sorted(cfg.eval_windows)))
    with torch.no_grad():
        codes = sae.encode(data.x_eval)
    match = metrics.hungarian_match(data.D, sae.W_dec.detach().double())
    prf = metrics.support_prf(data.z_eval, codes, match)
    elapsed = time.perf_counter() - t0
    row: dict[str, Any] = {
        "arm": arm_name, "arch": arm.arch, "seed": seed, "param": arm.param, "value": fields[arm.param],
        "hparams": json.dumps(fields, sort_keys=True, separators=(",", ":")),
        "l0": ev["l0"], "fvu": ev["fvu"], "dead_fraction": ev["dead_fraction"],
        "dense_fraction": ev["dense_fraction"], "dense_fraction_001": ev["dense_fraction_001"],
        "mmcs": ev["mmcs"], "recovery_rate": ev["recovery_rate"], "recovery_chance": data.recovery_chance,
        "mcc": ev["mcc"], "support_precision": prf["precision"], "support_recall": prf["recall"],
        "support_f1": prf["f1"], "l2_ratio": ev["l2_ratio"], "rel_bias": ev["rel_bias"],
        "shrinkage": abs(ev["rel_bias"] - 1.0), "train_time_s": elapsed,
    }
    for w in cfg.eval_windows:
        row[f"dead_at_{w}"] = ev[f"dead_fraction_at_{w}"]
    return row, list(ev["firing_histogram"]["counts"])


def run_cell(cfg: StarvationConfig, arm_name: str, rho: float, seed: int) -> list[tuple[dict[str, Any], list[int]]]:
    """All runs of one (arm, ρ, seed): the k grid, or the adaptive λ sweep."""
    torch.set_num_threads(1)
    data = make_data(cfg.n, cfg.m, cfg.k, float(rho), cfg.steps * cfg.batch_size, cfg.n_eval, seed)
    arm = ARMS[arm_name]
    out = []
    if arm.start is None:
        values: list[float | None] = list(dict.fromkeys(sorted(cfg.topk_ks)))
        for v in values:
            out.append(train_and_evaluate(cfg, arm_name, v, data, seed))
    else:
        lo, hi = min(cfg.l0_targets), max(cfg.l0_targets)
        v = float(f"{arm.start(cfg):.3g}")
        tried: set[float] = set()
        while v is not None and v not in tried and len(out) < cfg.sweep_points:
            tried.add(v)
            out.append(train_and_evaluate(cfg, arm_name, v, data, seed))
            v = next_lambda([(r["value"], r["l0"]) for r, _ in out], lo, hi)
    for r, _ in out:
        r["rho"] = float(rho)
    return out


# --------------------------------------------------------------------------- the whole benchmark
def _row_key(cfg: StarvationConfig, r: dict[str, Any]) -> tuple:
    return (cfg.arms.index(r["arm"]), r["rho"], r["seed"], r["value"])


def run(cfg: StarvationConfig) -> Path:
    """Train every cell, write the CSVs, then the report and figures; returns the folder."""
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    cells = [(a, r, s) for r in cfg.rhos for s in cfg.seeds for a in cfg.arms]
    t0 = time.perf_counter()
    results: list[tuple[dict[str, Any], list[int]]] = []

    def done(i: int, cell: tuple, got: list) -> None:
        results.extend(got)
        print(f"[{i}/{len(cells)}] {cell[0]} rho={cell[1]} seed={cell[2]}: {len(got)} runs, "
              f"L0 {[round(r['l0'], 2) for r, _ in got]} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)

    if cfg.workers == 1:
        threads = torch.get_num_threads()
        try:
            for i, c in enumerate(cells, 1):
                done(i, c, run_cell(cfg, *c))
        finally:
            torch.set_num_threads(threads)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(run_cell, cfg, *c): c for c in cells}
            for i, f in enumerate(as_completed(futs), 1):
                done(i, futs[f], f.result())
    wall = time.perf_counter() - t0
    results.sort(key=lambda rh: _row_key(cfg, rh[0]))
    write_csv(out / "results.csv", result_columns(cfg), [r for r, _ in results])
    hist_cols = ["arm", "rho", "seed", "value"] + [f"bin_{i}" for i in range(len(results[0][1]))]
    write_csv(out / "firing_hist.csv", hist_cols,
              [{**{c: r[c] for c in hist_cols[:4]}, **{f"bin_{i}": h for i, h in enumerate(hs)}} for r, hs in results])
    (out / "timing.json").write_text(json.dumps({"wall_s": round(wall, 1), "runs": len(results),
                                                 "workers": cfg.workers, "mean_run_s": round(sum(
                                                     r["train_time_s"] for r, _ in results) / len(results), 3)},
                                                indent=2) + "\n")
    report(cfg)
    print(f"synthetic.starvation: {len(results)} runs in {wall:.0f}s -> {out}", file=sys.stderr)
    return out


def report(cfg: StarvationConfig) -> list[Path]:
    """matched.csv, summary.md and the figures from results.csv in cfg.out_dir."""
    from synthetic import plots, report as rep

    out = cfg.out_dir
    rep.write_report(out, cfg)
    return plots.make_all(out, cfg)


def estimate(cfg: StarvationConfig, steps: int = 20) -> dict[str, float]:
    """Time ``steps`` training steps of one aen SAE at the preset's sizes; extrapolate."""
    from geomsae.train import TrainConfig, train

    torch.set_num_threads(1)
    x = torch.randn(steps * cfg.batch_size, cfg.n)
    tc = TrainConfig(steps=steps, batch_size=cfg.batch_size, progress=False, log_every=steps, checkpoint_every=0,
                     device=cfg.device, input_scale_tokens=x.shape[0])
    train({"arch": "aen", "d_sae": cfg.m, "lam2": cfg.lam2}, x[: 2 * cfg.batch_size], dataclasses.replace(tc, steps=2))
    t = time.perf_counter()
    train({"arch": "aen", "d_sae": cfg.m, "lam2": cfg.lam2}, x, tc)
    per_step = (time.perf_counter() - t) / steps
    n_runs = sum(len(cfg.topk_ks) if ARMS[a].start is None else cfg.sweep_points for a in cfg.arms) * len(
        cfg.rhos) * len(cfg.seeds)
    per_run = per_step * cfg.steps
    return {"s_per_step": per_step, "s_per_run": per_run, "runs_max": n_runs,
            "hours_one_worker": per_run * n_runs / 3600, "hours_all_workers": per_run * n_runs / 3600 / cfg.workers}


def parse_config(argv: list[str] | None = None) -> tuple[StarvationConfig, argparse.Namespace]:
    """Preset, then every StarvationConfig field overridable as --kebab-case."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    known, _ = pre.parse_known_args(argv)
    base = PRESETS[known.preset]
    p = argparse.ArgumentParser(prog="python -m synthetic.starvation", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report-only", action="store_true", help="redo matched.csv, summary.md and the figures")
    p.add_argument("--estimate-only", action="store_true", help="time one SAE and extrapolate the run time")
    add_dataclass_args(p, StarvationConfig)
    p.set_defaults(**dataclasses.asdict(base))
    ns = p.parse_args(argv)
    return from_args(StarvationConfig, ns), ns


def main(argv: list[str] | None = None) -> int:
    cfg, ns = parse_config(argv)
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
