"""The arms of the starvation comparison (docs/method.md §7.1): an architecture, its fixed settings, its knob.

An arm reads its settings from a :class:`geomsae.study.settings.StudySettings` (the ``lam_*``,
``lam2``, ``adaptive_*``, ``jumprelu_*``, ``resample_every``, ``dead_window_tokens`` and
``steps`` fields), so every runner trains the same arm the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple


class Arm(NamedTuple):
    """One arm of the comparison: an architecture, its fixed settings and its sparsity knob."""

    arch: str
    """Architecture name in :data:`geomsae.saes.ARCHS`."""
    param: str
    """The swept config field ('k' for TopK-type arms, else the l1/L0 coefficient)."""
    fixed: Callable[[Any], dict[str, Any]]
    """Config fields besides ``param``, from the study settings."""
    start: Callable[[Any], float] | None
    """Centre of the first round of the λ sweep; None for a fixed k grid (``topk_ks``)."""


def _adaptive(c: Any) -> dict[str, Any]:
    return dict(beta=c.adaptive_beta, gamma=c.adaptive_gamma, q=c.adaptive_q,
                warmup_steps=int(c.adaptive_warmup_frac * c.steps), ramp_steps=int(c.adaptive_ramp_frac * c.steps))


AEN_GRID = tuple((g, q, f) for g in (0.5, 1.0) for q in (1.0, 5.0) for f in (0.25, 1.0, 4.0))
"""The AEN tuning grid within the authors' (docs/method.md §7.1): γ ∈ {0.5, 1}, q ∈ {1, 5} %, and three
λ2 = f · ``lam2`` with f ∈ {0.25, 1, 4}; arm names ``aen_g{γ}_q{q}_l2x{f}``."""


def aen_grid_name(gamma: float, q: float, factor: float) -> str:
    """The arm name of one AEN grid point, e.g. 'aen_g0.5_q5_l2x4'."""
    return f"aen_g{gamma:g}_q{q:g}_l2x{factor:g}"


ARMS: dict[str, Arm] = {
    "relu_l1": Arm("relu_l1", "lam", lambda c: {}, lambda c: c.lam_relu_l1),
    "relu_l1_resample": Arm("relu_l1", "lam", lambda c: dict(resample=True, resample_every=c.resample_every,
                                                              dead_window=c.dead_window_tokens),
                            lambda c: c.lam_relu_l1),
    "topk": Arm("topk", "k", lambda c: dict(auxk=False, tied_init=False), None),
    "topk_tied": Arm("topk", "k", lambda c: dict(auxk=False, tied_init=True), None),
    "topk_auxk": Arm("topk", "k", lambda c: dict(auxk=True, tied_init=True, dead_window=c.dead_window_tokens), None),
    "batchtopk": Arm("batchtopk", "k", lambda c: dict(auxk=True, tied_init=True, dead_window=c.dead_window_tokens),
                     None),
    "jumprelu": Arm("jumprelu", "lam", lambda c: dict(theta_init=c.jumprelu_theta_init, bandwidth=c.jumprelu_bandwidth,
                                                      threshold_lr_scale=c.jumprelu_threshold_lr_scale),
                    lambda c: c.lam_jumprelu),
    "gated": Arm("gated", "lam", lambda c: {}, lambda c: c.lam_gated),
    "en": Arm("en", "lam1", lambda c: dict(lam2=c.lam2), lambda c: c.lam_en),
    "adaptive_lasso": Arm("adaptive_lasso", "lam1", _adaptive, lambda c: c.lam_adaptive_lasso),
    "aen": Arm("aen", "lam1", lambda c: dict(lam2=c.lam2, **_adaptive(c)), lambda c: c.lam_aen),
}
for _g, _q, _f in AEN_GRID:
    ARMS[aen_grid_name(_g, _q, _f)] = Arm(
        "aen", "lam1", lambda c, g=_g, q=_q, f=_f: {**_adaptive(c), "lam2": f * c.lam2, "gamma": g, "q": q},
        lambda c: c.lam_aen)
"""The arms (docs/method.md §7.1). The TopK switches one at a time: topk (no AuxK, untied init), topk_tied
(tied init W_enc = W_decᵀ, no AuxK), topk_auxk (tied init and AuxK: Gao et al.'s recipe). The AEN grid arms
(:data:`AEN_GRID`) are for tuning AEN within the authors' grid; they are not in the default arm list."""


def arm_fields(settings: Any, arm_name: str, value: float) -> dict[str, Any]:
    """The SAE config fields of ``arm_name`` with its knob at ``value`` (k as an int)."""
    arm = ARMS[arm_name]
    return {**arm.fixed(settings), arm.param: int(value) if arm.param == "k" else float(value)}


def arm_spec(settings: Any, arm_name: str, value: float, d_sae: int) -> dict[str, Any]:
    """``{"arch", "d_sae", **fields}``: what :func:`geomsae.train.train` and ``train_stack`` take."""
    return {"arch": ARMS[arm_name].arch, "d_sae": d_sae, **arm_fields(settings, arm_name, value)}


def hparams_json(fields: dict[str, Any]) -> str:
    """The ``hparams`` cell of results.csv: the fields as compact, key-sorted JSON."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))
