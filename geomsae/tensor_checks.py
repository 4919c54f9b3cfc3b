"""Input conversion and checks shared by :mod:`geomsae.metrics` and :mod:`geomsae.metrics_truth`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def checked_tensor(a: Any, name: str, *, dtype: torch.dtype | None = torch.float64) -> Tensor:
    """Convert to a tensor (float64 unless ``dtype`` is None) and reject NaN/Inf."""
    t = a.detach() if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a))
    if dtype is not None:
        t = t.to(dtype)
    if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return t


def checked_tokens(a: Any, name: str, *, dtype: torch.dtype | None = torch.float64) -> Tensor:
    """(..., d) -> (N, d) float tensor; 1-D input is one token."""
    t = checked_tensor(a, name, dtype=dtype)
    if t.dim() == 0:
        raise ValueError(f"{name} must have shape (N, d), got a scalar")
    return t.reshape(-1, t.shape[-1]) if t.dim() != 1 else t.reshape(1, -1)
