"""The compute model every plan in the project uses (docs/method.md §7.6).

A training step costs about 10·d_in·d_sae FLOPs per token and SAE with the dense decoder:
encoder forward 2, decoder forward 2, decoder backward 4 (gradients wrt codes and weights),
encoder weight gradient 2, all times d_in·d_sae.
"""

from __future__ import annotations

CPU_GEMM_FLOPS = 85e9
"""fp32 GEMM rate the plans assume on the 2-core development machine (AMD EPYC, torch, 2 threads,
(4096×512)@(512×4096): medians of 86–100 GFLOP/s measured across sessions; README "Performance" has the
side-by-side runs). A plan that has timed its own runs (timing.json) uses that rate instead."""


def train_flops_per_token(d_in: int, d_sae: int) -> float:
    """FLOPs of one training token of one SAE of shape (d_in, d_sae), dense decoder: 10·d_in·d_sae."""
    for name, v in (("d_in", d_in), ("d_sae", d_sae)):
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise ValueError(f"{name} == {v!r}, must be an integer >= 1")
    return 10.0 * d_in * d_sae
