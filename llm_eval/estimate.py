"""The planned cost of a long-run preset (``--estimate-only``; docs/method.md §7.7).

Training: tokens × 10·d_in·d_sae FLOPs per SAE (the dense roofline of one step, geomsae.study.cost) ÷
a measured FLOP rate; the harvest: tokens ÷ a measured harvest rate. The rates are read from a
committed ``timing.json`` — this preset's own once it has run, else the smollm2-cpu run's
(same model and layer, so its harvest rate applies; its training rate, measured at d_sae 2304
with ``TrainConfig.decoder='auto'``, is turned into FLOP/s and assumed to hold at this d_sae).
The sparse decoder (``decoder='auto'``) computes only the L0 nonzero codes' columns, so at L0 32
of 4608 the decoder's share (about a third of the dense count) nearly vanishes: the dense count is
an upper bound, and the bound without the decoder's share is printed beside it.
"""

from __future__ import annotations

import json

from geomsae.study.cost import CPU_GEMM_FLOPS, train_flops_per_token
from llm_eval.config import PRESETS, LLMStarvationConfig
from llm_eval.long import long_members, sweep_config

D_IN = {"smollm2-135m": 576}
"""Residual width of the named models (others: read from the harvested cache when present)."""
FALLBACK_FLOPS = CPU_GEMM_FLOPS
"""fp32 GEMM rate of the 2-core machine (:data:`geomsae.study.cost.CPU_GEMM_FLOPS`), used when no run has been timed."""


def _d_in(cfg: LLMStarvationConfig) -> int:
    man = cfg.out_dir / "acts_train" / "manifest.json"
    if man.exists():
        return int(json.loads(man.read_text())["d_in"])
    if cfg.model in D_IN:
        return D_IN[cfg.model]
    raise ValueError(f"model == {cfg.model!r}: d_in unknown before its harvest; named models: {sorted(D_IN)}")


def rates(cfg: LLMStarvationConfig) -> tuple[float, float, str]:
    """(harvest tokens/s, training FLOP/s, where they come from)."""
    own, ref = cfg.results_dir / "timing.json", PRESETS["smollm2-cpu"]
    for path, c in ((own, cfg), (ref.results_dir / "timing.json", ref)):
        if not path.exists():
            continue
        t = json.loads(path.read_text())
        h = t.get("harvest_train", {}).get("tokens_per_s")
        if t.get("long_training"):  # SAE-tokens per second of each stack, averaged over the stacks
            lt = list(t["long_training"].values())
            flops = sum(x["sae_tokens_per_s"] for x in lt) / len(lt) * train_flops_per_token(_d_in(c), c.d_sae)
        elif "training" in t:
            flops = t["training"]["median_tokens_per_s"] * train_flops_per_token(_d_in(c), c.d_sae)
        else:
            flops = None
        if h and flops:
            return float(h), float(flops), f"{path} ({c.preset})"
    return 1_454.0, FALLBACK_FLOPS, "geomsae.study.cost.CPU_GEMM_FLOPS (no timing.json found)"


def estimate(cfg: LLMStarvationConfig) -> str:
    """Lines stating the planned tokens, FLOPs and hours of the run."""
    d_in = _d_in(cfg)
    harvest_rate, flops, src = rates(cfg)
    per_tok = train_flops_per_token(d_in, cfg.d_sae)
    sw = sweep_config(cfg)
    n_sweep = len(sw.arms) * sw.sweep_points * len(sw.seeds) if any(a in cfg.curve_arms for a in sw.arms) else 0
    n_long = len(long_members(cfg, {a: 1.0 for a in cfg.curve_arms}))
    sweep_tok, long_tok = cfg.steps * cfg.batch_size, cfg.curve_steps * cfg.batch_size
    harvest_s = (cfg.train_tokens + cfg.eval_tokens) / harvest_rate
    sweep_s = n_sweep * sweep_tok * per_tok / flops
    long_s = n_long * long_tok * per_tok / flops
    evals = n_long * len(cfg.curve_points) + n_sweep
    eval_s = evals * cfg.eval_tokens * 4 * d_in * cfg.d_sae / flops  # encode + decode forward, no backward
    dec_share = 0.4 * (1 - 32 / cfg.d_sae)  # the decoder's forward and backward: ~4 of the 10 FLOPs per weight
    total = harvest_s + sweep_s + long_s + eval_s
    h = 3600
    return "\n".join([
        f"Planned cost of {cfg.preset} (d_in {d_in}, d_sae {cfg.d_sae}; 10·d_in·d_sae = {per_tok / 1e6:.1f} MFLOP/token):",
        f"- rates from {src}: harvest {harvest_rate:,.0f} tokens/s, training {flops / 1e9:.1f} GFLOP/s "
        f"(= {flops / per_tok:,.0f} tokens/s per SAE at this size)",
        f"- harvest: {cfg.train_tokens + cfg.eval_tokens:,} tokens -> {harvest_s / h:.2f} h",
        f"- sweep: {n_sweep} SAEs × {sweep_tok:,} tokens = {n_sweep * sweep_tok * per_tok / 1e15:.2f} PFLOP -> "
        f"{sweep_s / h:.2f} h",
        f"- long runs: {n_long} SAEs × {long_tok:,} tokens ({long_tok / cfg.train_tokens:.2f} epochs) = "
        f"{n_long * long_tok * per_tok / 1e15:.2f} PFLOP -> {long_s / h:.2f} h",
        f"- evaluations: {evals} × {cfg.eval_tokens:,} held-out tokens -> {eval_s / h:.2f} h (+ CE passes)",
        f"- total: {total / h:.1f} h at the dense count; the sparse decoder (decoder='auto', L0 32 of "
        f"{cfg.d_sae}) removes up to {100 * dec_share:.0f} % of the training FLOPs: "
        f"{(total - dec_share * (sweep_s + long_s)) / h:.1f} h if it did so fully.",
    ])
