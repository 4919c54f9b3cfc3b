"""Stacks: S SAEs of one architecture and shape as one module with a leading member dimension.

>>> saes = [make("aen", d_in=64, d_sae=256, lam1=l) for l in (1e-3, 3e-3, 1e-2)]
>>> stack = stack_saes(saes)          # W_enc (3, 256, 64), b_dec (3, 64), ema (3, 256), ...
>>> out = stack(x)                    # x (B, 64) shared, or (3, B, 64): out.codes (3, B, 256)
>>> stack.loss(x, out).loss           # (3,) one loss per member; backprop their sum
>>> saes = unstack_sae(stack)         # back to S ordinary SAEs

Every architecture's math is written once, for both forms: parameters and buffers gain a
leading dimension S, encoder and decoder products become batched matrix products, losses
and per-step statistics are per member. Members may differ in any config field except the
shapes (``d_in``, ``d_sae``) and ``input_norm``: the architecture reads a hyper-parameter
with :meth:`BaseSAE.hp`, which gives the common value, or an (S,) tensor when the members
differ (see :class:`StackedConfig`). Each member's gradient is that of its own loss, because
the members share no parameter: the gradient of the summed loss, sliced at member i, is
member i's gradient.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from geomsae.saes.base import BaseSAE, SAEConfig

_SHARED = ("d_in", "d_sae", "input_norm")


class StackedConfig:
    """Read-only view of the S member configs of a stack.

    ``cfg.name`` is the members' common value when they agree; when they differ it is an
    (S,) tensor (float32 for numbers, int64 for integers, bool for flags) and a field that is
    neither (a string, a None beside numbers) raises ValueError naming it. ``members`` holds
    the configs themselves.
    """

    def __init__(self, members: Sequence[SAEConfig]) -> None:
        self.members = tuple(members)
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._cache:
            return self._cache[name]
        vals = [getattr(c, name) for c in self.members]
        if all(v == vals[0] and type(v) is type(vals[0]) for v in vals):
            out: Any = vals[0]
        elif all(isinstance(v, bool) for v in vals):
            out = torch.tensor(vals, dtype=torch.bool)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            out = torch.tensor(vals, dtype=torch.int64)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out = torch.tensor(vals, dtype=torch.float32)
        else:
            raise ValueError(f"the members of this stack differ in {name!r} ({vals!r}); "
                             "only numbers and flags may differ")
        self._cache[name] = out
        return out

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"StackedConfig({len(self.members)} x {type(self.members[0]).__name__})"


def stack_saes(members: Sequence[BaseSAE]) -> BaseSAE:
    """One module holding copies of ``members`` (same class, shapes and input_norm) stacked.

    Parameters and buffers are ``torch.stack``-ed in the members' registration order, so the
    stack's ``state_dict`` and ``parameters()`` follow the members' own order.
    """
    if not members:
        raise ValueError("members is empty: a stack needs at least one SAE")
    first = members[0]
    cls = type(first)
    for i, m in enumerate(members):
        if type(m) is not cls:
            raise ValueError(f"members[{i}] is a {type(m).__name__}, the stack holds {cls.__name__}")
        if m.n_stack:
            raise ValueError(f"members[{i}] is already a stack")
        for name in _SHARED:
            if getattr(m.cfg, name) != getattr(first.cfg, name):
                raise ValueError(f"members[{i}] has {name} == {getattr(m.cfg, name)!r}, "
                                 f"members[0] has {getattr(first.cfg, name)!r}: a stack shares it")
    st = cls.__new__(cls)
    nn.Module.__init__(st)
    st.cfg = StackedConfig([copy.deepcopy(m.cfg) for m in members])  # type: ignore[assignment]
    for name, p in first.named_parameters(recurse=False):
        st.register_parameter(name, nn.Parameter(torch.stack([m._parameters[name].detach() for m in members]),
                                                 requires_grad=p.requires_grad))
    for name in first._buffers:
        st.register_buffer(name, torch.stack([m._buffers[name] for m in members]))
    st.n_stack = len(members)
    st.rng_states = None
    st.train(first.training)
    return st


@torch.no_grad()
def unstack_sae(stack: BaseSAE, i: int | None = None) -> Any:
    """The members of ``stack`` as ordinary SAEs (copies), or only member ``i``."""
    if not stack.n_stack:
        raise ValueError("unstack_sae needs a stack (built by stack_saes)")
    if i is not None and not (isinstance(i, int) and 0 <= i < stack.n_stack):
        raise ValueError(f"i == {i!r}, must be in [0, {stack.n_stack - 1}]")
    state = stack.state_dict()
    cls = type(stack)
    out = []
    for j in range(stack.n_stack) if i is None else [i]:
        with torch.random.fork_rng(devices=[]):  # building draws a random init; keep the caller's RNG
            m = cls(copy.deepcopy(stack.cfg.members[j])).to(stack.W_dec.device)
        m.load_state_dict({k: v[j].clone() for k, v in state.items()})
        m.train(stack.training)
        out.append(m)
    return out if i is None else out[0]

