"""The arms of the starvation comparison (SPEC §2): an architecture, its fixed settings, its sparsity knob.

Shared by the synthetic runner (:mod:`synthetic.starvation`) and the real-model runner
(:mod:`llm_eval.starvation`); an arm reads its settings from either runner's config (any
object with the fields used below: ``lam_*``, ``lam2``, ``adaptive_*``, ``jumprelu_*``,
``resample_every``, ``dead_window_tokens``, ``steps``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Arm(NamedTuple):
    """One arm of the comparison: an architecture, its fixed settings and its sparsity knob."""

    arch: str
    """Architecture name in :data:`geomsae.saes.ARCHS`."""
    param: str
    """The swept config field ('k' for TopK-type arms, else the l1/L0 coefficient)."""
    fixed: Callable[[Any], dict[str, Any]]
    """Config fields besides ``param`` (may depend on the benchmark config)."""
    start: Callable[[Any], float] | None
    """First λ of the adaptive sweep; None for a fixed k grid (``topk_ks``)."""


def _adaptive(c: Any) -> dict[str, Any]:
    return dict(beta=c.adaptive_beta, warmup_steps=int(c.adaptive_warmup_frac * c.steps),
                ramp_steps=int(c.adaptive_ramp_frac * c.steps))


ARMS: dict[str, Arm] = {
    "relu_l1": Arm("relu_l1", "lam", lambda c: {}, lambda c: c.lam_relu_l1),
    "relu_l1_resample": Arm("relu_l1", "lam", lambda c: dict(resample=True, resample_every=c.resample_every,
                                                              dead_window=c.dead_window_tokens),
                            lambda c: c.lam_relu_l1),
    "topk": Arm("topk", "k", lambda c: dict(auxk=False, tied_init=False), None),
    "topk_auxk": Arm("topk", "k", lambda c: dict(auxk=True, tied_init=True, dead_window=c.dead_window_tokens), None),
    "batchtopk": Arm("batchtopk", "k", lambda c: dict(auxk=True, tied_init=True, dead_window=c.dead_window_tokens),
                     None),
    "jumprelu": Arm("jumprelu", "lam", lambda c: dict(theta_init=c.jumprelu_theta_init,
                                                      bandwidth=c.jumprelu_bandwidth), lambda c: c.lam_jumprelu),
    "gated": Arm("gated", "lam", lambda c: {}, lambda c: c.lam_gated),
    "en": Arm("en", "lam1", lambda c: dict(lam2=c.lam2), lambda c: c.lam_en),
    "adaptive_lasso": Arm("adaptive_lasso", "lam1", _adaptive, lambda c: c.lam_adaptive_lasso),
    "aen": Arm("aen", "lam1", lambda c: dict(lam2=c.lam2, **_adaptive(c)), lambda c: c.lam_aen),
}
"""The arms (SPEC §2). TopK without AuxK also has an untied encoder init; with AuxK, tied."""
