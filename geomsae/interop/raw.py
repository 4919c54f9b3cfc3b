"""A geomsae SAE as plain raw-space tensors, and back (see :mod:`geomsae.interop.folders` for the
rescaling by the input scale s).

The raw form keeps geomsae's layout (W_enc (d_sae, d_in), W_dec (d_in, d_sae), atoms as
columns) and names what the inference needs::

    pre = W_enc (x − b_dec) + b_enc
    relu:      z = ReLU(pre)                                  relu_l1, en, adaptive_lasso, aen
    topk:      z = TopK_k(ReLU(pre))                          topk
    jumprelu:  z = pre · 1[pre > threshold_j]                 jumprelu; batchtopk at inference
    gated:     z = 1[pre > 0] · ReLU(exp(r_mag) ⊙ (pre − b_enc) + b_mag)
    x̂ = W_dec z + b_dec
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from geomsae.saes import ARCHS, config_class

INFERENCE = {"relu_l1": "relu", "en": "relu", "adaptive_lasso": "relu", "aen": "relu", "topk": "topk",
             "jumprelu": "jumprelu", "batchtopk": "jumprelu", "gated": "gated"}
"""Architecture → the inference function it computes (every geomsae architecture has one)."""
_DERIVED = {"W_enc", "b_enc", "W_dec", "b_dec", "input_scale", "log_threshold", "threshold", "r_mag", "b_mag"}


class RawSAE(NamedTuple):
    """An SAE's inference in raw activation space, codes in raw units (unit-norm atoms for
    unit-norm architectures)."""

    kind: str
    """'relu', 'topk', 'jumprelu' or 'gated' (see the module docstring)."""
    tensors: dict[str, Tensor]
    """W_enc (d_sae, d_in), b_enc (d_sae,), W_dec (d_in, d_sae), b_dec (d_in,), and by kind
    threshold (d_sae,) (jumprelu) or r_mag, b_mag (d_sae,) (gated); float32 on CPU."""
    k: int | None
    """Active latents per token for kind 'topk', else None."""
    per_token: bool
    """True when every token is rescaled to norm √d_in before encoding (undone after decoding)."""


@torch.no_grad()
def to_raw(sae: Any) -> tuple[RawSAE, float, dict[str, Tensor]]:
    """(raw form, input scale s, the geomsae state tensors the raw form does not carry) of a
    loaded single SAE (its dataset scale already folded, as :func:`geomsae.checkpoint.load_sae`
    returns it)."""
    if getattr(sae, "n_stack", None):
        raise ValueError("a stack of SAEs cannot be exported: unstack it first (geomsae.saes.stacking.unstack_sae)")
    s = float(sae.input_scale)
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"input_scale == {s!r}, must be a finite number > 0")
    p = {k: v.detach().to("cpu", torch.float32) for k, v in sae.state_dict().items()}
    t = {"W_enc": p["W_enc"] / s, "b_enc": p["b_enc"] / s, "W_dec": p["W_dec"] * s, "b_dec": p["b_dec"].clone()}
    kind = INFERENCE[sae.arch]
    if sae.arch == "jumprelu":
        t["threshold"] = sae.threshold.detach().to("cpu", torch.float32) / s
    elif sae.arch == "batchtopk":
        t["threshold"] = torch.full((sae.cfg.d_sae,), float(p["threshold"]) / s)
    elif sae.arch == "gated":
        t["r_mag"], t["b_mag"] = p["r_mag"].clone(), p["b_mag"] / s
    rest = {k: v for k, v in p.items() if k not in _DERIVED}
    k = sae.cfg.k if kind == "topk" else None
    return RawSAE(kind, t, k, sae.cfg.input_norm == "per_token"), s, rest


@torch.no_grad()
def from_raw(raw: RawSAE, arch: str, cfg_fields: dict[str, Any], s: float = 1.0,
             state: dict[str, Tensor] | None = None) -> Any:
    """The geomsae SAE ``arch`` with config ``cfg_fields`` (besides d_in, d_sae, input_norm)
    computing ``raw``'s inference; ``s`` the input scale to restore (codes multiplied back by s)
    and ``state`` extra geomsae tensors (e.g. a sidecar's EMA) to load."""
    if INFERENCE.get(arch) != raw.kind:
        raise ValueError(f"arch {arch!r} cannot hold a {raw.kind!r} SAE")
    if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0):
        raise ValueError(f"input scale == {s!r}, must be a finite number > 0")
    t = raw.tensors
    d_sae, d_in = t["W_enc"].shape
    fields = {**cfg_fields, "d_in": d_in, "d_sae": d_sae, "input_norm": "per_token" if raw.per_token else "none"}
    if raw.kind == "topk":
        fields["k"] = raw.k
    cfg = config_class(arch)(**fields)  # its checks name a bad value
    with torch.random.fork_rng(devices=[]):  # building draws a random init; keep the caller's RNG
        sae = ARCHS[arch](cfg)
    new = dict(sae.state_dict())
    for k, v in (state or {}).items():
        if k not in new or k in _DERIVED or tuple(v.shape) != tuple(new[k].shape):
            raise ValueError(f"geomsae state tensor {k!r} {tuple(v.shape)} does not fit arch {arch!r}")
        new[k] = v.to(new[k].dtype)
    new.update(W_enc=t["W_enc"] * s, b_enc=t["b_enc"] * s, W_dec=t["W_dec"] / s, b_dec=t["b_dec"].clone(),
               input_scale=torch.tensor(float(s)))
    if arch == "jumprelu":
        theta = (t["threshold"] * s).clamp_min(0.0)  # θ ≤ 0 acts as 0 on ReLU codes; log 0 = −inf
        new["log_threshold"] = theta.log() / cfg.threshold_lr_scale
    elif arch == "batchtopk":
        th = t["threshold"]
        if not bool((th == th[0]).all()) or float(th[0]) < 0:
            raise ValueError("a batchtopk SAE needs one threshold >= 0 shared by every latent")
        new["threshold"] = th[0] * s
    elif arch == "gated":
        new["r_mag"], new["b_mag"] = t["r_mag"].clone(), t["b_mag"] * s
    sae.load_state_dict(new, strict=True)
    return sae.eval()
