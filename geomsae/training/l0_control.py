"""Holding a penalty SAE at a target L0 while it trains (docs/method.md §7.8).

A penalty SAE's L0 follows its λ1 only loosely: the same λ1 lands at other L0 values for
other lengths, learning-rate schedules or adaptive-weight schedules (smollm2-long: AEN went
L0 256 → 76 → 17 at 1, 3 and 10 M tokens at one λ1). With ``TrainConfig.target_l0`` the
trainer adjusts λ1 while it trains:

    ema ← β·ema + (1 − β)·L0_batch          (the first step: ema = L0_batch)
    λ1  ← λ1 · ((ema + 1)/(target + 1))^rate

after every optimizer step until the last ``freeze`` fraction of the steps (default 10 %), where
λ1 stays fixed, so the final weights are trained at one objective; that λ1 is the one saved in the SAE's
config (cfg.json), and ``geomsae compare`` solves it. L0_batch is the training batch's L0 by the
folded firing rule of docs/method.md §3 (z_j‖d_j‖ > FIRE_REL·RMS(x), x the batch as trained on).
The +1 keeps the update finite at L0 0. The update is multiplicative, so λ1 stays positive, and
it is an integral controller: a constant offset of L0 keeps moving λ1 until it is gone.

At a fixed λ1 a penalty SAE's L0 keeps falling as it trains, so what the frozen tail costs is
measured: on the spiked model (n 32, m 128, k 4, 4,000 steps × 128 tokens, target 8, λ1 started 10×
too high and too low) relu_l1, en and aen ended at held-out L0 6.95–8.11 with the last 25 % frozen
(up to 13 % short) and 7.73–8.08 with the last 10 % frozen, hence the default.

The controlled field is the architecture's sparsity coefficient (:data:`PENALTY_FIELD`); TopK
and BatchTopK set L0 through k, so a target is refused for them. A stack may hold members with
different targets (or none). The state (λ1 and the EMA per member) is written with every
checkpoint and read back on resume, so a resumed run continues exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from geomsae.metrics import FIRE_REL
from geomsae.saes import ARCHS
from geomsae.saes.stacking import StackedConfig

PENALTY_FIELD: dict[str, str] = {"relu_l1": "lam", "gated": "lam", "jumprelu": "lam", "en": "lam1",
                                 "adaptive_lasso": "lam1", "aen": "lam1"}
"""The config field a target L0 adjusts, per architecture (jumprelu: its L0 coefficient)."""
COUNTERS = ("l0_control_lam", "l0_control_ema")
"""The controller's state in a checkpoint's counters (per member: λ1, and the EMA, nan before the first step)."""


def controlled_field(arch: str) -> str:
    """The field a target L0 adjusts for ``arch``; ValueError where no penalty sets L0."""
    if arch not in PENALTY_FIELD:
        raise ValueError(f"target_l0 does not apply to arch {arch!r}: its L0 is set by k (choose k), not by a "
                         f"penalty; target_l0 applies to {sorted(PENALTY_FIELD)}")
    return PENALTY_FIELD[arch]


def folded_batch_l0(sae: Any, x: Tensor, codes: Tensor) -> list[float]:
    """L0 of one training batch per member by the folded firing rule (one host sync).

    :param x: (B, d_in) or, for a stack, (B, d_in) shared or (S, B, d_in) per member, as trained on.
    :param codes: (B, d_sae) or (S, B, d_sae).
    """
    with torch.no_grad():
        norms = sae.W_dec.norm(dim=-2)  # (d_sae,) or (S, d_sae): column norms
        xs = x.float()
        if codes.ndim == 3 and xs.ndim == 2:
            xs = xs.unsqueeze(0).expand(codes.shape[0], -1, -1)
        rms = (xs - xs.mean(-2, keepdim=True)).pow(2).sum(-1).mean(-1).sqrt()  # () or (S,)
        thr = (FIRE_REL * rms).unsqueeze(-1).unsqueeze(-1) if codes.ndim == 3 else FIRE_REL * rms
        fire = codes.float() * norms.unsqueeze(-2) > thr
        l0 = fire.sum(-1).double().mean(-1)
    return [float(v) for v in l0.reshape(-1).cpu()]


class L0Controller:
    """The rule of the module docstring for the members of one run (one member for a solo SAE)."""

    def __init__(self, targets: Sequence[float | None], lams: Sequence[float], steps: int, *, rate: float,
                 beta: float, freeze: float) -> None:
        if len(targets) != len(lams):
            raise ValueError(f"{len(targets)} targets for {len(lams)} members")
        self.targets = [None if t is None else float(t) for t in targets]
        self.lams = [float(v) for v in lams]
        self.emas = [math.nan] * len(lams)
        self.rate, self.beta = float(rate), float(beta)
        self.frozen_after = math.floor((1.0 - freeze) * steps)
        """λ1 is updated after optimizer steps 1 … frozen_after and fixed after that."""

    @property
    def active(self) -> bool:
        return any(t is not None for t in self.targets)

    def update(self, step: int, l0: Sequence[float]) -> bool:
        """Fold the batch L0 of optimizer step ``step`` (1-based) into the EMAs and move λ1; True when λ1 moved."""
        if step > self.frozen_after:
            return False
        moved = False
        for i, (t, v) in enumerate(zip(self.targets, l0)):
            if t is None:
                continue
            if not math.isfinite(v):
                raise ValueError(f"the training batch's L0 is {v} at step {step} (member {i}): cannot control it")
            self.emas[i] = v if math.isnan(self.emas[i]) else self.beta * self.emas[i] + (1.0 - self.beta) * v
            self.lams[i] *= ((self.emas[i] + 1.0) / (t + 1.0)) ** self.rate
            moved = True
        return moved

    def counters(self, i: int) -> dict[str, float]:
        """Member ``i``'s state as checkpoint counters (float64, exact)."""
        return {COUNTERS[0]: self.lams[i], COUNTERS[1]: self.emas[i]}

    def restore(self, i: int, counters: dict[str, Any]) -> None:
        """Read member ``i``'s state back from a checkpoint's counters; ValueError when they lack it."""
        missing = [k for k in COUNTERS if k not in counters]
        if missing:
            raise ValueError(f"the checkpoint lacks the L0 controller's state {missing}: it was written by a run "
                             "without target_l0; resume without it or start a new run")
        self.lams[i], self.emas[i] = float(counters[COUNTERS[0]]), float(counters[COUNTERS[1]])


def make_controller(sae: Any, cfg: Any, targets: Sequence[float | None] | None = None) -> L0Controller | None:
    """The controller of a run (None without a target): ``targets`` per member of a stack, else ``cfg.target_l0``
    for every member. Raises ValueError for an architecture without a penalty field (TopK: use k)."""
    n = sae.n_stack or 1
    targets = list(targets) if targets is not None else [cfg.target_l0] * n
    if len(targets) != n:
        raise ValueError(f"target_l0s has {len(targets)} entries, the stack has {n} members")
    if all(t is None for t in targets):
        return None
    bad = [t for t in targets if t is not None and not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0)]
    if bad:
        raise ValueError(f"target_l0 == {bad[0]!r}, must be a finite number > 0")
    field = controlled_field(_arch(sae))
    members = sae.cfg.members if sae.n_stack else [sae.cfg]
    ctl_steps = math.floor((1.0 - cfg.l0_control_freeze) * cfg.steps)
    for c in members:
        ramp = getattr(c, "warmup_steps", 0) + getattr(c, "ramp_steps", 0)
        if ramp > ctl_steps:  # the weights would keep tightening the penalty after λ1 froze
            raise ValueError(f"the adaptive weights reach full strength at step warmup_steps + ramp_steps == {ramp}, "
                             f"after λ1 freezes at step {ctl_steps} ((1 - l0_control_freeze) * steps): lower "
                             "warmup_steps and ramp_steps, or train longer")
    return L0Controller(targets, [getattr(c, field) for c in members], cfg.steps, rate=cfg.l0_control_rate,
                        beta=cfg.l0_control_beta, freeze=cfg.l0_control_freeze)


def _arch(sae: Any) -> str:
    return next(name for name, cls in ARCHS.items() if type(sae) is cls)


def apply(sae: Any, ctl: L0Controller) -> None:
    """Write the controller's λ1 into the SAE's config (each member's for a stack), where the loss reads it."""
    field = controlled_field(_arch(sae))
    if sae.n_stack:
        sae.cfg = StackedConfig([m if t is None else dataclasses.replace(m, **{field: lam})
                                 for m, t, lam in zip(sae.cfg.members, ctl.targets, ctl.lams)])
    elif ctl.targets[0] is not None:
        sae.cfg = dataclasses.replace(sae.cfg, **{field: ctl.lams[0]})


def resume(sae: Any, ctl: L0Controller | None, counters: Sequence[dict[str, Any]]) -> None:
    """Read the controlled members' state back from their checkpoints' counters (one dict per member) and put
    their λ1 into the SAE (both trainers call this when they resume)."""
    if ctl is None:
        return
    for i, c in enumerate(counters):
        if ctl.targets[i] is not None:
            ctl.restore(i, c)
    apply(sae, ctl)


def log_fields(ctl: L0Controller | None, i: int) -> dict[str, float]:
    """Member ``i``'s λ1 and EMA for its metrics.jsonl record ({} without a controller or target): the λ1 trajectory."""
    if ctl is None or ctl.targets[i] is None:
        return {}
    return {"l0_control_lam": ctl.lams[i], "l0_control_ema": ctl.emas[i]}


def control_step(sae: Any, ctl: L0Controller | None, step: int, x: Tensor, codes: Tensor) -> None:
    """After optimizer step ``step`` (1-based): read the batch's L0 and move λ1 (both trainers call this)."""
    if ctl is None or step > ctl.frozen_after:
        return
    if ctl.update(step, folded_batch_l0(sae, x, codes)):
        apply(sae, ctl)
