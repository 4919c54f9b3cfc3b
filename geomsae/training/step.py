"""One optimizer step of an SAE or a stack, and what it is built from: the SAE, Adam, the moment reset of
resampled latents."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from geomsae.saes import ARCHS, BaseSAE, SAEConfig, make
from geomsae.training.config import TrainConfig
from geomsae.training.runtime import check_fits, resolve_device


def build_sae(spec: Any, d_in: int, cfg: TrainConfig) -> Any:
    """An SAE from an instance, an SAEConfig, or a mapping {"arch": ..., **fields}."""
    if isinstance(spec, BaseSAE):
        sae = spec
    else:
        if isinstance(spec, SAEConfig):
            arch = next((a for a, c in ARCHS.items() if type(spec) is c.config_class), None)
            if arch is None:
                raise ValueError(f"no architecture has the config class {type(spec).__name__}")
            fields = dataclasses.asdict(spec)
        elif isinstance(spec, Mapping) and "arch" in spec:
            fields = {k: v for k, v in spec.items() if k != "arch"}
            arch = spec["arch"]
        else:
            raise ValueError(f"cannot build an SAE from a {type(spec).__name__}: pass an SAE, an SAEConfig "
                             "or a dict with 'arch'")
        fields.setdefault("d_in", d_in)
        if cfg.input_norm == "per_token":
            fields["input_norm"] = "per_token"
        if "d_sae" not in fields:
            raise ValueError(f"the SAE spec for arch {arch!r} lacks 'd_sae'")
        dims = (fields["d_in"], fields["d_sae"])
        if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in dims):  # make() checks the rest
            check_fits(*dims, cfg.batch_size, resolve_device(cfg.device))  # before the allocator fails mid-way
        torch.manual_seed(cfg.seed)
        sae = make(arch, fields.pop("d_in"), fields.pop("d_sae"), **fields)
    if sae.cfg.d_in != d_in:
        raise ValueError(f"the SAE has d_in == {sae.cfg.d_in} but the activations have d_in == {d_in}")
    if cfg.input_norm == "per_token":
        sae.cfg.input_norm = "per_token"
    elif cfg.input_norm == "dataset" and sae.cfg.input_norm == "per_token":
        raise ValueError("input_norm == 'dataset' but the SAE normalises per token (cfg.input_norm == 'per_token'); "
                         "use input_norm='per_token' or 'none'")
    return sae


def reset_moments(opt: torch.optim.Optimizer, sae: Any, mask: Tensor) -> None:
    """Zero the Adam moments of the latents in ``mask`` (d_sae,) without a host sync.

    For a stack, ``mask`` is (S, d_sae) and every parameter has the member dimension first.
    """
    d_sae = sae.cfg.d_sae
    lead = 1 if sae.n_stack else 0
    for name, p in sae.named_parameters():
        st = opt.state.get(p)
        if not st or name == "b_dec":
            continue
        dim = {"W_enc": 0, "b_enc": 0, "W_dec": 1}.get(name)
        if dim is None:
            dim = next((i for i, n in enumerate(p.shape[lead:]) if n == d_sae), None)
            if dim is None:
                continue
        shape = [1] * p.ndim
        shape[lead + dim] = d_sae
        if lead:
            shape[0] = p.shape[0]
        m = mask.reshape(shape)
        for k in ("exp_avg", "exp_avg_sq"):
            st[k].masked_fill_(m, 0.0)


def make_adam(params: list[Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam, fused (one pass per parameter) where this torch build supports it on the device."""
    kw = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.adam_eps)
    try:
        return torch.optim.Adam(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, **kw)


def sae_update(sae: Any, opt: torch.optim.Optimizer, loss: Tensor, clip: Callable[[], Any] | None,
               x: Tensor, out: Any) -> None:
    """One optimizer update of an SAE or a stack after its forward pass, the same for both trainers.

    backward of ``loss`` (a scalar; a stack passes the sum of its members' losses), the decoder's
    parallel-gradient projection, ``clip()`` when given, the Adam step, zeroed gradients, the
    decoder renormalisation, then the SAE's state trackers (:meth:`BaseSAE.on_step_end` on the batch
    ``x`` and its forward output ``out``), resetting Adam's moments of resampled latents.
    """
    loss.backward()
    sae.remove_parallel_grads_()
    if clip is not None:
        clip()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sae.normalize_decoder_()
    with torch.no_grad():
        mask = sae.on_step_end(x, out)
        if mask is not None:
            reset_moments(opt, sae, mask)

