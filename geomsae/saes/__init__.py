"""The SAE zoo (docs/method.md §2): one module per architecture and a registry.

>>> sae = make("aen", d_in=512, d_sae=4096, lam1=5e-3, lam2=1e-3)

Every architecture subclasses :class:`BaseSAE` and is built from its own config dataclass
(``config_class(arch)``), whose fields drive the command line as well.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from geomsae.saes.adaptive_lasso import AdaptiveLassoConfig, AdaptiveLassoSAE
from geomsae.saes.aen import AENConfig, AENSAE
from geomsae.saes.base import (
    BaseSAE,
    CanonicalPenalty,
    LossOutput,
    SAEConfig,
    SAEOutput,
    fold_input_scale,
)
from geomsae.saes.batchtopk import BatchTopKConfig, BatchTopKSAE
from geomsae.saes.en import ENConfig, ENSAE
from geomsae.saes.gated import GatedConfig, GatedSAE
from geomsae.saes.jumprelu import JumpReLUConfig, JumpReLUSAE
from geomsae.saes.relu_l1 import ReLUL1Config, ReLUL1SAE
from geomsae.saes.topk import TopKConfig, TopKSAE

ARCHS: dict[str, type[BaseSAE]] = {
    cls.arch: cls
    for cls in (ReLUL1SAE, TopKSAE, BatchTopKSAE, JumpReLUSAE, GatedSAE, ENSAE, AdaptiveLassoSAE, AENSAE)
}
"""Registry: architecture name → class."""


def _cls(arch: str) -> type[BaseSAE]:
    try:
        return ARCHS[arch]
    except (KeyError, TypeError):
        raise ValueError(f"arch == {arch!r}, must be one of {sorted(ARCHS)}") from None


def config_class(arch: str) -> type[SAEConfig]:
    """The config dataclass of architecture ``arch``."""
    return _cls(arch).config_class


def make(arch: str, d_in: int, d_sae: int, **cfg: Any) -> BaseSAE:
    """Build a freshly initialised SAE (seed with ``torch.manual_seed`` beforehand).

    ``cfg`` holds the fields of ``config_class(arch)`` besides d_in and d_sae; an unknown
    key raises ValueError naming it.
    """
    cls = _cls(arch)
    names = {f.name for f in dataclasses.fields(cls.config_class) if f.init}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} for arch {arch!r}; allowed: {sorted(names - {'d_in', 'd_sae'})}")
    return cls(cls.config_class(d_in=d_in, d_sae=d_sae, **cfg))


__all__ = [
    "ARCHS", "make", "config_class", "BaseSAE", "SAEConfig", "SAEOutput", "LossOutput",
    "CanonicalPenalty", "fold_input_scale",
    "ReLUL1SAE", "ReLUL1Config", "TopKSAE", "TopKConfig", "BatchTopKSAE", "BatchTopKConfig",
    "JumpReLUSAE", "JumpReLUConfig", "GatedSAE", "GatedConfig", "ENSAE", "ENConfig",
    "AdaptiveLassoSAE", "AdaptiveLassoConfig", "AENSAE", "AENConfig",
]
