"""Feature starvation on a real language model (issue 7; SPEC §3, §4, §5).

    python -m llm_eval.starvation --preset smollm2-cpu              # SmolLM2-135M, 2 CPU cores (see below)
    python -m llm_eval.starvation --preset pythia70m --model ./pythia-70m --text data/pile-sample
    python -m llm_eval.starvation --preset llama8b --model ./Llama-3.1-8B --text data/pile-sample
    python -m llm_eval.starvation --preset smollm2-cpu --report-only  # redo matched.csv, summary.md, figures

Steps, each resumable (run the same command again after a crash or Ctrl-C):

1. harvest ``train_tokens`` activations of the training documents and ``eval_tokens`` of the
   held-out documents (:func:`geomsae.activations.harvest`, BOS and massive-activation tokens
   dropped) into ``out/acts_train`` and ``out/acts_eval``;
2. for every seed and arm (:data:`synthetic.arms.ARMS`), train SAEs along the arm's
   sparsity knob — the ``topk_ks`` grid, or ``sweep_points`` values of λ placed by
   :func:`synthetic.sweep.next_lambda` to bracket the ``l0_targets`` — with
   :func:`geomsae.train.train` (inputs scaled to E‖x‖² = d_in, the scale folded into the saved
   weights) into ``out/saes/<arm>_s<seed>_<param><value>``;
3. evaluate each on the held-out activations (:func:`geomsae.evaluate.evaluate`) and splice it
   into the model on ``ce_contexts`` held-out contexts (:func:`geomsae.fidelity.lm_fidelity`:
   CE loss recovered against zero and mean ablation — the mean of the training activations —
   and the KL to the clean logits); append the row to ``results.csv`` at once;
4. write ``matched.csv``, ``verdicts.csv``, ``summary.md`` (:mod:`llm_eval.report`) and the
   figures (:mod:`llm_eval.plots`) into ``results`` (default ``llm_eval/results/<preset>``, the
   small files that are committed; activations and SAEs stay in ``out``).

A row already in results.csv is never recomputed, so an interrupted run continues where it was.
``config.json`` beside the results records the configuration; ``timing.json`` the throughputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geomsae.config_cli import add_dataclass_args, from_args
from llm_eval.config import PRESETS, LLMStarvationConfig
from synthetic.arms import ARMS
from synthetic.report import write_csv
from synthetic.sweep import next_lambda

BASE_COLUMNS = ["arm", "arch", "seed", "param", "value", "hparams", "l0", "fvu", "dead_fraction"]
OTHER_COLUMNS = ["dense_fraction", "dense_fraction_001", "l2_ratio", "rel_bias", "shrinkage", "ce_clean", "ce_patched",
                 "ce_zero", "ce_mean", "ce_recovered_zero", "ce_recovered_mean", "kl", "train_tokens", "train_time_s",
                 "train_tokens_per_s"]


def result_columns(cfg: LLMStarvationConfig) -> list[str]:
    """Columns of results.csv, in order."""
    return BASE_COLUMNS + [f"dead_at_{w}" for w in sorted(cfg.eval_windows)] + OTHER_COLUMNS


class Runner:
    """Holds what the runs share: the caches, the model (loaded on first need), the ablations."""

    def __init__(self, cfg: LLMStarvationConfig) -> None:
        self.cfg = cfg
        self.out, self.res = cfg.out_dir, cfg.results_dir
        self._lm: Any = None
        self.timing: dict[str, Any] = {}
        tp = self.res / "timing.json"
        if tp.exists():
            self.timing = json.loads(tp.read_text())

    # ------------------------------------------------------------------ shared pieces
    def lm(self) -> Any:
        if self._lm is None:
            from geomsae.lm import load_model

            self._lm = load_model(self.cfg.model, device=self.cfg.device, dtype=self.cfg.model_dtype)
        return self._lm

    def harvest(self) -> tuple[Path, Path]:
        from geomsae.activations import TIMING, harvest

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
        from geomsae.activations import token_contexts

        return token_contexts(self.cfg.harvest_config("heldout"), self.lm().tokenizer, self.cfg.ce_contexts)

    def ablations(self, contexts: torch.Tensor, mean: torch.Tensor) -> dict[str, float]:
        """CE of the clean, zero- and mean-ablated model on the CE contexts (cached in out/ablations.json)."""
        from geomsae.fidelity import lm_fidelity

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
                from geomsae.saes.base import SAEOutput

                return SAEOutput(x, x, x)

        res = lm_fidelity(self.lm().model, _Identity(mean), contexts, self.cfg.layer, self.cfg.hook,
                          mean_activation=mean)
        values = {k: res[k] for k in ("ce_clean", "ce_zero", "ce_mean")}
        path.write_text(json.dumps({"key": key, "values": values}, indent=1) + "\n")
        return values

    def _save_timing(self) -> None:
        self.res.mkdir(parents=True, exist_ok=True)
        (self.res / "timing.json").write_text(json.dumps(self.timing, indent=2) + "\n")

    # ------------------------------------------------------------------ one SAE
    def train_one(self, arm_name: str, seed: int, value: float, acts: Path, eval_acts: Path, ctx: torch.Tensor,
                  mean: torch.Tensor, abl: dict[str, float]) -> tuple[dict[str, Any], list[int]]:
        from geomsae.evaluate import evaluate
        from geomsae.fidelity import lm_fidelity
        from geomsae.train import TrainConfig, train

        cfg, arm = self.cfg, ARMS[arm_name]
        fields = {**arm.fixed(cfg), arm.param: int(value) if arm.param == "k" else float(value)}
        name = f"{arm_name}_s{seed}_{arm.param}{fields[arm.param]:g}"
        tcfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, lr_warmup_steps=max(1, cfg.steps // 20),
                           seed=seed, input_norm="dataset", dead_window_tokens=cfg.dead_window_tokens,
                           log_every=max(1, cfg.steps // 20), checkpoint_every=max(1, cfg.steps // 4),
                           out=str(self.out / "saes" / name), device=cfg.device, autocast=cfg.autocast, progress=True)
        t0 = time.perf_counter()
        res = train({"arch": arm.arch, "d_sae": cfg.d_sae, **fields}, acts, tcfg, resume=True)
        train_s = time.perf_counter() - t0
        sae = res.sae.eval()
        ev = evaluate(sae, eval_acts, windows=tuple(sorted(cfg.eval_windows)), device=cfg.device)
        fid = lm_fidelity(self.lm().model, sae, ctx, cfg.layer, cfg.hook, mean_activation=mean,
                          ablations={"ce_zero": abl["ce_zero"], "ce_mean": abl["ce_mean"]})
        row: dict[str, Any] = {
            "arm": arm_name, "arch": arm.arch, "seed": seed, "param": arm.param, "value": fields[arm.param],
            "hparams": json.dumps(fields, sort_keys=True, separators=(",", ":")),
            "l0": ev["l0"], "fvu": ev["fvu"], "dead_fraction": ev["dead_fraction"],
            "dense_fraction": ev["dense_fraction"], "dense_fraction_001": ev["dense_fraction_001"],
            "l2_ratio": ev["l2_ratio"], "rel_bias": ev["rel_bias"], "shrinkage": abs(ev["rel_bias"] - 1.0),
            "ce_clean": fid["ce_clean"], "ce_patched": fid["ce_patched"], "ce_zero": fid["ce_zero"],
            "ce_mean": fid["ce_mean"], "ce_recovered_zero": fid["ce_recovered_zero"],
            "ce_recovered_mean": fid["ce_recovered_mean"], "kl": fid["kl_patched"], "train_tokens": res.tokens,
            "train_time_s": train_s, "train_tokens_per_s": res.tokens / max(train_s, 1e-9),
        }
        for w in cfg.eval_windows:
            row[f"dead_at_{w}"] = ev[f"dead_fraction_at_{w}"]
        return row, list(ev["firing_histogram"]["counts"])

    # ------------------------------------------------------------------ everything
    def run(self) -> Path:
        cfg = self.cfg
        self.res.mkdir(parents=True, exist_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.res / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        acts, eval_acts = self.harvest()
        from geomsae.data import open_source

        mean = _mean_activation(open_source(acts))
        ctx = self.ce_contexts()
        abl = self.ablations(ctx, mean)
        rows, hists = _load_rows(self.res, cfg)
        t0 = time.perf_counter()
        for seed in cfg.seeds:
            for arm_name in cfg.arms:
                arm = ARMS[arm_name]

                def one(v: float) -> dict[str, Any]:
                    key = (arm_name, seed, float(v))
                    if key not in rows:
                        row, hist = self.train_one(arm_name, seed, v, acts, eval_acts, ctx, mean, abl)
                        rows[key], hists[key] = row, hist
                        self._write(rows, hists)
                        print(f"llm_eval: {arm_name} seed {seed} {arm.param}={v:g}: L0 {row['l0']:.1f}, "
                              f"FVU {row['fvu']:.3f}, dead {100 * row['dead_fraction']:.1f} %, CE recovered "
                              f"(mean abl.) {row['ce_recovered_mean']:.3f} ({time.perf_counter() - t0:.0f} s)",
                              file=sys.stderr, flush=True)
                    return rows[key]

                if arm.start is None:
                    for k in sorted(set(cfg.topk_ks)):
                        one(float(k))
                else:
                    lo, hi = min(cfg.l0_targets), max(cfg.l0_targets)
                    v: float | None = float(f"{arm.start(cfg):.3g}")
                    tried: list[float] = []
                    while v is not None and v not in tried and len(tried) < cfg.sweep_points:
                        tried.append(v)
                        one(v)
                        v = next_lambda([(t, rows[(arm_name, seed, t)]["l0"]) for t in tried], lo, hi)
        self._write(rows, hists)
        report(cfg)
        return self.res

    def _write(self, rows: dict, hists: dict) -> None:
        keys = sorted(rows, key=lambda k: (self.cfg.arms.index(k[0]) if k[0] in self.cfg.arms else 99, k[1], k[2]))
        write_csv(self.res / "results.csv", result_columns(self.cfg), [rows[k] for k in keys])
        n_bins = len(next(iter(hists.values())))
        cols = ["arm", "seed", "value"] + [f"bin_{i}" for i in range(n_bins)]
        write_csv(self.res / "firing_hist.csv", cols,
                  [{"arm": k[0], "seed": k[1], "value": rows[k]["value"], **{f"bin_{i}": h for i, h in
                                                                           enumerate(hists[k])}} for k in keys])
        speeds = [rows[k]["train_tokens_per_s"] for k in keys]
        self.timing["training"] = {"saes": len(keys), "median_tokens_per_s": round(float(np.median(speeds)), 1),
                                   "total_train_s": round(sum(rows[k]["train_time_s"] for k in keys), 1)}
        self._save_timing()


def _mean_activation(src: Any, n_tokens: int = 262_144) -> torch.Tensor:
    """(d_in,) mean of the first ``n_tokens`` training activations (the mean-ablation value)."""
    total, n = torch.zeros(src.d_in, dtype=torch.float64), 0
    for x in src.batches(8192, shuffle=False, epochs=1):
        total += x.double().sum(0)
        n += x.shape[0]
        if n >= n_tokens:
            break
    return (total / n).float()


def _load_rows(res: Path, cfg: LLMStarvationConfig) -> tuple[dict, dict]:
    """Rows of an earlier run's results.csv (and histograms), keyed by (arm, seed, value)."""
    from synthetic.report import read_csv

    rows: dict = {}
    hists: dict = {}
    if not (res / "results.csv").exists():
        return rows, hists
    for r in read_csv(res / "results.csv"):
        key = (r["arm"], int(r["seed"]), float(r["value"]))
        rows[key] = r
    for h in read_csv(res / "firing_hist.csv"):
        key = (h["arm"], int(h["seed"]), float(h["value"]))
        hists[key] = [int(h[c]) for c in h if c.startswith("bin_")]
    return rows, hists


def report(cfg: LLMStarvationConfig) -> list[Path]:
    """matched.csv, verdicts.csv, summary.md and the figures from results.csv."""
    from llm_eval import plots
    from llm_eval import report as rep

    rep.write_report(cfg)
    return plots.make_all(cfg)


def parse_config(argv: list[str] | None = None) -> tuple[LLMStarvationConfig, argparse.Namespace]:
    """Preset, then every field overridable as --kebab-case."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default="smollm2-cpu")
    known, _ = pre.parse_known_args(argv)
    p = argparse.ArgumentParser(prog="python -m llm_eval.starvation", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report-only", action="store_true", help="redo matched.csv, summary.md and the figures")
    add_dataclass_args(p, LLMStarvationConfig)
    p.set_defaults(**dataclasses.asdict(PRESETS[known.preset]))
    ns = p.parse_args(argv)
    return from_args(LLMStarvationConfig, ns), ns


def main(argv: list[str] | None = None) -> int:
    cfg, ns = parse_config(argv)
    if ns.report_only:
        for path in report(cfg):
            print(path)
        return 0
    Runner(cfg).run()
    print(f"llm_eval: results in {cfg.results_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

