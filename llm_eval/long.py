"""Starvation over training on a real model (issue 13; docs/method.md §7.7).

    python -m llm_eval.starvation --preset smollm2-long                  # the run; rerun it to resume
    python -m llm_eval.starvation --preset smollm2-long --estimate-only  # the planned cost, nothing run
    python -m llm_eval.starvation --preset smollm2-long --report-only    # summary.md and figure from curves.csv

Steps, each resumable (stop at any time, run the same command again):

1. the harvest of :class:`llm_eval.starvation.Runner` (``out/acts_train``, ``out/acts_eval``);
2. a short sweep (``steps`` per SAE) of the penalty arms among ``curve_arms`` aiming at held-out
   L0 = ``curve_l0`` (:meth:`Runner.run_sweep`, rows in ``results/sweep/results.csv``);
   :func:`pick_value` puts each arm's knob at ``curve_l0`` (k = curve_l0 for TopK arms);
3. the long runs (``curve_steps`` each, stacked by architecture, ``out/long/<arm>_s<seed>_…``),
   evaluated on the held-out activations after each step of
   :func:`geomsae.study.curves.eval_steps` (:func:`geomsae.study.evaluation.evaluation_row`;
   CE loss recovered at the last point); each evaluation is a row of ``curves.csv`` written at
   once, and a row already there is never recomputed;
4. ``summary.md`` (:mod:`llm_eval.curve_report`), headed ``PARTIAL: k of n evaluation points``
   until every point of every run is in, and the figure (:func:`llm_eval.plots.curves_figure`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

from geomsae.data import open_source
from geomsae.fidelity import lm_fidelity
from geomsae.study import ARMS, Member
from geomsae.study.arms import arm_fields, arm_spec, hparams_json
from geomsae.study.curves import eval_steps
from geomsae.study.evaluation import evaluation_row
from geomsae.study.stack import stacks, train_config
from geomsae.study.sweep import bracketing_pair, round_lambda
from geomsae.study.tables import read_csv
from geomsae.train_stack import train_stack
from geomsae.training.stream import mean_activation
from llm_eval import curve_report
from llm_eval.config import LLMStarvationConfig
from llm_eval.curve_report import CURVES  # the evaluation rows, one per run and point
from llm_eval.runner import Runner

TIMING_EVERY = 25
"""Training steps between writes of timing.json (a stack's steps and seconds, the total wall time)."""


def pick_value(points: list[tuple[float, float]], target: float) -> float:
    """λ at held-out L0 = ``target`` from a sweep's (λ, L0) points: log λ interpolated linearly in
    log L0 between the bracketing pair (:func:`geomsae.study.sweep.bracketing_pair`), else the λ
    whose L0 is nearest in log; rounded to 3 significant digits."""
    if not points:
        raise ValueError("no sweep points to pick a value from")
    pts = sorted(points)
    pair = bracketing_pair(pts, target)
    if pair is None:
        return min(pts, key=lambda p: abs(math.log(max(p[1], 1e-3) / target)))[0]
    (la, a), (lb, b) = pts[pair[0]], pts[pair[1]]
    a, b = max(a, 1e-3), max(b, 1e-3)
    if a == b:
        return la
    t = (math.log(target) - math.log(a)) / (math.log(b) - math.log(a))
    return round_lambda(math.exp(math.log(la) + t * (math.log(lb) - math.log(la))))


def long_members(cfg: LLMStarvationConfig, values: dict[str, float]) -> list[Member]:
    """The long runs: every curve arm at its value, with every seed or the first."""
    return [Member(a, (), s, values[a]) for a in cfg.curve_arms
            for s in (cfg.curve_seeds if a in cfg.curve_all_seeds else cfg.curve_seeds[:1])]


def sweep_config(cfg: LLMStarvationConfig) -> LLMStarvationConfig:
    """The short sweep: the penalty arms of curve_arms, the first seed, L0 target curve_l0, the shared cache."""
    arms = tuple(a for a in cfg.curve_arms if ARMS[a].param != "k")
    return dataclasses.replace(cfg, arms=arms or ("relu_l1",), seeds=cfg.curve_seeds[:1], l0_targets=(cfg.curve_l0,),
                               topk_ks=(int(round(cfg.curve_l0)),), curve_tokens=0, out=str(cfg.out_dir),
                               results=str(cfg.results_dir / "sweep"))


class LongRunner:
    """The sweep, then the long runs with their evaluation points; resumable at every stage."""

    step_hook: Callable[[int], None] | None = None
    """Called after every long-run training step as ``step_hook(step)`` (tests stop a run with it;
    set it on the class as a staticmethod)."""

    def __init__(self, cfg: LLMStarvationConfig) -> None:
        self.cfg = cfg
        self.res, self.out = cfg.results_dir, cfg.out_dir
        self.base = Runner(sweep_config(cfg))
        self.steps = eval_steps(cfg.curve_steps, cfg.curve_points)
        self.curves: dict[tuple, dict[str, Any]] = {}
        self.steps_trained = 0
        self._t_start: float | None = None  # set by run(): the wall clock of this (re)start
        self._wall0 = 0.0  # wall seconds of the earlier (re)starts, from timing.json
        self.timing: dict[str, Any] = {}
        if (self.res / "timing.json").exists():
            self.timing = json.loads((self.res / "timing.json").read_text())
        if (self.res / CURVES).exists():
            for r in read_csv(self.res / CURVES):
                self.curves[(r["arm"], int(r["seed"]), int(r["point"]))] = r

    # ------------------------------------------------------------------ pieces
    def values(self) -> dict[str, float]:
        """Each curve arm's knob: k = curve_l0 for TopK arms, else picked from the sweep rows."""
        if any(ARMS[a].param != "k" for a in self.cfg.curve_arms):
            runs = self.base.run_sweep()  # harvests first
        else:
            self.base.harvest()
            runs = {}
        out = {}
        for a in self.cfg.curve_arms:
            if ARMS[a].param == "k":
                out[a] = float(int(round(self.cfg.curve_l0)))
            else:
                pts = [(r["value"], r["l0"]) for r, _ in runs.values() if r["arm"] == a]
                out[a] = pick_value(pts, self.cfg.curve_l0)
        return out

    def sae_dir(self, m: Member) -> Path:
        param = ARMS[m.arm].param
        v = int(m.value) if param == "k" else float(m.value)
        return self.out / "long" / f"{m.arm}_s{m.seed}_{param}{v:g}"

    def done(self, m: Member) -> bool:
        return all((m.arm, m.seed, j) in self.curves for j in range(len(self.steps)))

    def _save_timing(self) -> None:
        if self._t_start is not None:  # the wall time of every (re)start so far, this one up to now
            self.timing["wall_s_total"] = round(self._wall0 + time.perf_counter() - self._t_start, 1)
        self.res.mkdir(parents=True, exist_ok=True)
        (self.res / "timing.json").write_text(json.dumps(self.timing, indent=2) + "\n")

    def _write(self) -> None:
        curve_report.write_curves(self.cfg, self.curves)
        curve_report.write_summary(self.cfg, self.curves, self.timing)

    # ------------------------------------------------------------------ one stack
    def train(self, stack: list[Member], eval_acts: Path, acts: Path, fidelity: Callable[[Any], dict[str, float]]) -> None:
        cfg = self.cfg
        settings = dataclasses.replace(cfg, steps=cfg.curve_steps)
        tcfg = train_config(settings, data_seed=cfg.data_seed, log_every=max(1, cfg.curve_steps // 50),
                            checkpoint_every=max(1, cfg.curve_steps // cfg.curve_checkpoints), out=None,
                            progress=True)
        eval_s = [0.0]

        def on_eval(step: int, tokens: int, saes: list[Any]) -> None:
            t0 = time.perf_counter()
            j = self.steps.index(step)
            for m, sae in zip(stack, saes):
                if (m.arm, m.seed, j) in self.curves:
                    continue
                fields = arm_fields(settings, m.arm, m.value)
                row: dict[str, Any] = {"arm": m.arm, "seed": m.seed, "param": ARMS[m.arm].param,
                                       "value": fields[ARMS[m.arm].param], "point": j, "step": step,
                                       "tokens_seen": tokens, "hparams": hparams_json(fields)}
                metrics, _ = evaluation_row(sae, eval_acts, windows=tuple(cfg.eval_windows), device=cfg.device)
                row.update(metrics)
                if j == len(self.steps) - 1:
                    row.update(fidelity(sae))
                row["eval_time_s"] = time.perf_counter() - t0
                self.curves[(m.arm, m.seed, j)] = row
                print(f"llm_eval.long: {m.arm} seed {m.seed} at {tokens:,} tokens: L0 {row['l0']:.1f}, "
                      f"FVU {row['fvu']:.3f}, dead {100 * row['dead_fraction']:.2f} %, "
                      f"< 1e-4 {100 * row['rare_fraction_1e4']:.2f} %", file=sys.stderr, flush=True)
            self._write()
            eval_s[0] += time.perf_counter() - t0

        name = "+".join(f"{m.arm}_s{m.seed}" for m in stack)
        t = self.timing.setdefault("long_training", {}).setdefault(name, {"steps": 0, "train_s": 0.0,
                                                                           "sae_tokens_per_s": 0.0})
        steps0, train_s0 = t["steps"], t["train_s"]

        def record() -> None:  # on disk as training goes, so a killed run (SIGKILL: no finally) loses little
            t["steps"] = steps0 + trained[0]
            t["train_s"] = round(train_s0 + time.perf_counter() - t0 - eval_s[0], 1)
            t["sae_tokens_per_s"] = round(t["steps"] * cfg.batch_size * len(stack) / max(t["train_s"], 1e-9), 1)
            self._save_timing()

        def callback(step: int, _recs: Any) -> None:
            self.steps_trained += 1
            trained[0] += 1
            if trained[0] % TIMING_EVERY == 0:
                record()
            if self.step_hook is not None:
                self.step_hook(step)

        trained = [0]
        specs = [arm_spec(settings, m.arm, m.value, cfg.d_sae) for m in stack]
        t0 = time.perf_counter()
        try:
            train_stack(specs, acts, tcfg, seeds=[m.seed for m in stack], outs=[self.sae_dir(m) for m in stack],
                        resume=True, callback=callback, eval_steps=self.steps, on_eval=on_eval)
        finally:
            record()

    # ------------------------------------------------------------------ everything
    def run(self) -> Path:
        cfg = self.cfg
        self._wall0, self._t_start = float(self.timing.get("wall_s_total", 0.0)), time.perf_counter()
        self.res.mkdir(parents=True, exist_ok=True)
        (self.res / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        try:
            values = self.values()
            self.timing.update({k: v for k, v in self.base.timing.items() if k.startswith("harvest")})
            (self.res / "values.json").write_text(json.dumps(values, indent=1) + "\n")
            acts, eval_acts = self.out / "acts_train", self.out / "acts_eval"
            members = long_members(cfg, values)
            todo = [m for m in members if not self.done(m)]
            if todo:
                fidelity = self._fidelity(acts)
                for stack in stacks(todo, cfg.stack_size):
                    self.train(stack, eval_acts, acts, fidelity)
        finally:
            self._save_timing()
            if self.curves:
                self._write()

        curve_report.report(cfg)
        return self.res

    def _fidelity(self, acts: Path) -> Callable[[Any], dict[str, float]]:
        """CE loss recovered (against zero and mean ablation) and KL of one SAE spliced into the model."""
        mean = mean_activation(open_source(acts))
        ctx = self.base.ce_contexts()
        abl = self.base.ablations(ctx, mean)

        def fidelity(sae: Any) -> dict[str, float]:
            fid = lm_fidelity(self.base.lm().model, sae, ctx, self.cfg.layer, self.cfg.hook, mean_activation=mean,
                              ablations={"ce_zero": abl["ce_zero"], "ce_mean": abl["ce_mean"]})
            return {k: fid[k] for k in ("ce_clean", "ce_patched", "ce_zero", "ce_mean", "ce_recovered_zero",
                                        "ce_recovered_mean")} | {"kl": fid["kl_patched"]}

        return fidelity


def main(cfg: LLMStarvationConfig, *, report_only: bool = False) -> int:
    """The long runs (or, with ``report_only``, their summary from curves.csv); ``--estimate-only`` is
    :func:`llm_eval.estimate.estimate`, dispatched by :func:`llm_eval.starvation.main`."""
    if report_only:
        for path in curve_report.report(cfg):
            print(path)
        return 0
    LongRunner(cfg).run()
    print(f"llm_eval.long: results in {cfg.results_dir}", file=sys.stderr)
    return 0


__all__ = ["LongRunner", "pick_value", "long_members", "sweep_config", "main", "CURVES"]
