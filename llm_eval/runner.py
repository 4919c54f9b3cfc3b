"""What the real-model runs share (issue 7): the activation caches, the model, the ablations, and the
sweep of :mod:`llm_eval.starvation` (steps 1–3 of its docstring); :mod:`llm_eval.long` builds on it."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geomsae.activations import TIMING, harvest, token_contexts
from geomsae.data import open_source
from geomsae.fidelity import lm_fidelity
from geomsae.lm import load_model
from geomsae.saes.base import SAEOutput
from geomsae.study import (
    ARMS,
    Cell,
    Member,
    Run,
    sweep,
    tables,
    train_and_evaluate,
    train_round,
)
from geomsae.study.stack import train_config
from geomsae.training.stream import mean_activation
from llm_eval import plots
from llm_eval import report as rep
from llm_eval.config import LLMStarvationConfig

EXTRA_COLUMNS = [*tables.EVAL_METRICS, "ce_clean", "ce_patched", "ce_zero", "ce_mean", "ce_recovered_zero",
                 "ce_recovered_mean", "kl", *tables.TRAIN_METRICS, "train_tokens", "train_time_s", "train_tokens_per_s"]


def result_columns(cfg: LLMStarvationConfig) -> list[str]:
    """Columns of results.csv, in order."""
    return tables.result_columns((), cfg.eval_windows, EXTRA_COLUMNS)


class Runner:
    """Holds what the runs share: the caches, the model (loaded on first need), the ablations."""

    def __init__(self, cfg: LLMStarvationConfig) -> None:
        self.cfg = cfg
        self.out, self.res = cfg.out_dir, cfg.results_dir
        self._lm: Any = None
        self.runs: dict[tuple, tuple[dict[str, Any], list[int]]] = {}
        self.t0 = time.perf_counter()
        self.timing: dict[str, Any] = {}
        tp = self.res / "timing.json"
        if tp.exists():
            self.timing = json.loads(tp.read_text())

    # ------------------------------------------------------------------ shared pieces
    def lm(self) -> Any:
        if self._lm is None:

            self._lm = load_model(self.cfg.model, device=self.cfg.device, dtype=self.cfg.model_dtype)
        return self._lm

    def harvest(self) -> tuple[Path, Path]:

        paths = []
        for split, name in (("train", "acts_train"), ("heldout", "acts_eval")):
            folder = self.out / name
            hc = self.cfg.harvest_config(split)
            if not (folder / "manifest.json").is_file():
                loaded = self.lm()
                harvest(hc, folder, model=loaded.model, tokenizer=loaded.tokenizer)
            else:
                harvest(hc, folder)  # checks that the finished cache is the one asked for
            if (folder / TIMING).is_file():  # the harvest's own measurement (its last run, if it was resumed)
                t = json.loads((folder / TIMING).read_text())
                self.timing[f"harvest_{split}"] = {"tokens": t["tokens_this_run"], "wall_s": t["wall_s"],
                                                   "tokens_per_s": t["tokens_per_s"]}
                self._save_timing()
            paths.append(folder)
        return paths[0], paths[1]

    def ce_contexts(self) -> torch.Tensor:

        return token_contexts(self.cfg.harvest_config("heldout"), self.lm().tokenizer, self.cfg.ce_contexts)

    def ablations(self, contexts: torch.Tensor, mean: torch.Tensor) -> dict[str, float]:
        """CE of the clean, zero- and mean-ablated model on the CE contexts (cached in out/ablations.json)."""

        path = self.out / "ablations.json"
        key = {"ce_contexts": int(contexts.shape[0]), "ctx_len": int(contexts.shape[1])}
        if path.exists():
            doc = json.loads(path.read_text())
            if doc.get("key") == key:
                return doc["values"]

        class _Identity(torch.nn.Module):  # a stand-in SAE: the model-only passes need none
            def __init__(self, b: torch.Tensor) -> None:
                super().__init__()
                self.b_dec = torch.nn.Parameter(b.clone(), requires_grad=False)

            def forward(self, x: torch.Tensor) -> Any:

                return SAEOutput(x, x, x)

        res = lm_fidelity(self.lm().model, _Identity(mean), contexts, self.cfg.layer, self.cfg.hook,
                          mean_activation=mean)
        values = {k: res[k] for k in ("ce_clean", "ce_zero", "ce_mean")}
        path.write_text(json.dumps({"key": key, "values": values}, indent=1) + "\n")
        return values

    def _save_timing(self) -> None:
        self.res.mkdir(parents=True, exist_ok=True)
        (self.res / "timing.json").write_text(json.dumps(self.timing, indent=2) + "\n")

    # ------------------------------------------------------------------ one stack
    def sae_dir(self, m: Member) -> Path:
        """Run folder of one SAE: out/saes/<arm>_s<seed>_<param><value>."""
        param = ARMS[m.arm].param
        v = int(m.value) if param == "k" else float(m.value)
        return self.out / "saes" / f"{m.arm}_s{m.seed}_{param}{v:g}"

    def train_stack(self, stack: list[Member], acts: Path, eval_acts: Path, ctx: torch.Tensor, mean: torch.Tensor,
                    abl: dict[str, float]) -> list[Run]:
        """Train one stack over the shared cache, evaluate and splice each member, save each row at once."""

        cfg = self.cfg
        tcfg = train_config(cfg, data_seed=cfg.data_seed, log_every=max(1, cfg.steps // 20),
                            checkpoint_every=max(1, cfg.steps // 4), out=None, progress=True)

        def fidelity(m: Member, res: Any, row: dict[str, Any]) -> dict[str, Any]:
            fid = lm_fidelity(self.lm().model, res.sae, ctx, cfg.layer, cfg.hook, mean_activation=mean,
                              ablations={"ce_zero": abl["ce_zero"], "ce_mean": abl["ce_mean"]})
            return {"ce_clean": fid["ce_clean"], "ce_patched": fid["ce_patched"], "ce_zero": fid["ce_zero"],
                    "ce_mean": fid["ce_mean"], "ce_recovered_zero": fid["ce_recovered_zero"],
                    "ce_recovered_mean": fid["ce_recovered_mean"], "kl": fid["kl_patched"], "train_tokens": res.tokens,
                    "train_tokens_per_s": res.tokens / max(row["train_time_s"], 1e-9)}

        return train_and_evaluate(stack, cfg, d_sae=cfg.d_sae, train_source=acts, eval_source=eval_acts, tcfg=tcfg,
                                  extras=fidelity, outs=[self.sae_dir(m) for m in stack], resume=True,
                                  on_run=self._record)

    def _record(self, run: Run) -> None:
        r = run.row
        self.runs[run.member.key] = (r, run.hist)
        self._write()
        print(f"llm_eval: {r['arm']} seed {r['seed']} {r['param']}={r['value']:g}: L0 {r['l0']:.1f}, "
              f"FVU {r['fvu']:.3f}, dead {100 * r['dead_fraction']:.1f} %, CE recovered "
              f"(mean abl.) {r['ce_recovered_mean']:.3f} ({time.perf_counter() - self.t0:.0f} s)",
              file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ everything
    def run(self) -> Path:
        """Harvest, sweep, evaluate every SAE, then write the report; returns the results folder."""
        self.run_sweep()
        report(self.cfg)
        return self.res

    def run_sweep(self) -> dict[tuple, tuple[dict[str, Any], list[int]]]:
        """Harvest, sweep and evaluate every SAE (results.csv, no report); {run key: (row, histogram)}."""
        cfg = self.cfg
        self.res.mkdir(parents=True, exist_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.res / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        acts, eval_acts = self.harvest()

        mean = mean_activation(open_source(acts))
        ctx = self.ce_contexts()
        abl = self.ablations(ctx, mean)
        known = tables.load_runs(self.res, ())
        self.runs = dict(known)
        self.t0 = time.perf_counter()
        job = partial(self.train_stack, acts=acts, eval_acts=eval_acts, ctx=ctx, mean=mean, abl=abl)
        cells = [Cell(a, (), s) for s in cfg.seeds for a in cfg.arms]
        sweep(cfg, cells, lambda ms: train_round(ms, job, stack_size=cfg.stack_size), known=known)
        if self.runs:
            self._write()
        return self.runs

    def _write(self) -> None:
        keys = tables.write_runs(self.res, self.runs, result_columns(self.cfg), (), self.cfg.arms)
        rows = [self.runs[k][0] for k in keys]
        self.timing["training"] = {"saes": len(rows),
                                   "median_tokens_per_s": round(float(np.median([r["train_tokens_per_s"] for r in rows])), 1),
                                   "total_train_s": round(sum(r["train_time_s"] for r in rows), 1)}
        self._save_timing()


def report(cfg: LLMStarvationConfig, figures_dir: str | Path | None = None) -> list[Path]:
    """matched.csv, verdicts.csv and summary.md in cfg.results_dir, from its results.csv, and the
    figures (into ``figures_dir``, default the same folder)."""
    rep.write(cfg)
    return plots.make_all(cfg, figures_dir)
