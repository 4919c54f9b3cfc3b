"""The validated sparse-coding problem (:class:`Problem`, built by :func:`prepare`) and the input checks and
conversions shared by every public solver entry point.

All solvers work internally in float64 torch tensors on the input's device; results are
handed back in the caller's array type (numpy in → numpy out, torch in → torch out on the
same device) and floating dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

# Columns whose norm is below this are treated as zero atoms and rejected.
MIN_COLUMN_NORM = 1e-12


@dataclass
class Problem:
    """One batch of problems F(z; x) = ½‖x − b − Dz‖² + λ1 Σ w_j|z_j| + (λ2/2)‖z‖²."""

    Y: Tensor
    """(B, n) float64: the centred inputs x − b."""
    D: Tensor
    """(n, m) float64 dictionary, atoms as columns."""
    lam1: float
    """λ1 >= 0 (canonical F units)."""
    lam2: float
    """λ2 >= 0 (canonical F units)."""
    W: Tensor
    """(1, m) or (B, m) float64 positive weights."""
    nonneg: bool
    """Constrain z >= 0."""
    squeeze: bool
    """The input X was one vector (n,), so outputs lose their batch axis."""
    as_numpy: bool
    """The input X was a numpy array."""
    out_dtype: Any
    """torch dtype of the input, used for the returned codes."""

    @property
    def B(self) -> int:
        return self.Y.shape[0]

    @property
    def m(self) -> int:
        return self.D.shape[1]

    def rows(self, sel: Tensor | slice) -> "Problem":
        """The sub-problem made of the rows ``sel`` of the batch."""
        W = self.W if self.W.shape[0] == 1 else self.W[sel]
        return Problem(self.Y[sel], self.D, self.lam1, self.lam2, W, self.nonneg, False, self.as_numpy, self.out_dtype)


def as_tensor(name: str, a: Any, device: Any = None) -> Tensor:
    if isinstance(a, Tensor):
        t = a.detach()
    elif isinstance(a, np.ndarray) or np.isscalar(a) or isinstance(a, (list, tuple)):
        arr = np.asarray(a)
        if arr.dtype == object:
            raise TypeError(f"{name} must be a numeric array, got an object array")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(a).__name__}")
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} has dtype {t.dtype}, must be floating point (float16/32/64)")
    if t.dtype in (torch.int32, torch.int64):
        raise TypeError(f"{name} has dtype {t.dtype}, must be floating point (float16/32/64)")
    if device is not None:
        t = t.to(device)
    return t.to(torch.float64)


def check_finite(name: str, t: Tensor) -> None:
    """Raise ValueError naming ``name`` and the first bad entry if ``t`` has NaN or Inf."""
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name} contains NaN or Inf (first at index {where}: {t[where].item()})")


def check_lams(lam1: Any, lam2: Any) -> tuple[float, float]:
    for name, v in (("lam1", lam1), ("lam2", lam2)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
        if not math.isfinite(float(v)) or float(v) < 0:
            raise ValueError(f"{name} == {v!r}, must be a finite number >= 0")
    if float(lam1) == 0.0 and float(lam2) == 0.0:
        raise ValueError("lam1 == 0 and lam2 == 0: the problem has neither an l1 nor an l2 term; need lam1 > 0 or lam2 > 0")
    return float(lam1), float(lam2)


def check_tol(tol: Any, max_iter: Any) -> None:
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol == {tol!r}, must be a finite number > 0")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter == {max_iter!r}, must be an integer >= 1")


def prepare(
    X: Any, D: Any, *, lam1: Any, lam2: Any, weights: Any = None, bias: Any = None, nonneg: bool = True
) -> Problem:
    """Validate the inputs of one problem family and convert them to float64 tensors.

    Raises ValueError (or TypeError for non-arrays) naming the bad value and the allowed range.
    """
    lam1, lam2 = check_lams(lam1, lam2)
    if not isinstance(nonneg, (bool, np.bool_)):
        raise TypeError(f"nonneg must be a bool, got {nonneg!r}")
    as_numpy = not isinstance(X, Tensor)
    out_dtype = X.dtype if isinstance(X, Tensor) else torch.from_numpy(np.zeros(0, dtype=np.asarray(X).dtype)).dtype
    Xt = as_tensor("X", X)
    Dt = as_tensor("D", D, device=Xt.device)
    if Dt.ndim != 2:
        raise ValueError(f"D has shape {tuple(Dt.shape)}, must be 2-D (n, m) with atoms as columns")
    n, m = Dt.shape
    if Xt.ndim not in (1, 2):
        raise ValueError(f"X has shape {tuple(Xt.shape)}, must be (B, n) or (n,)")
    squeeze = Xt.ndim == 1
    if squeeze:
        Xt = Xt[None]
    if Xt.shape[1] != n:
        raise ValueError(f"X has shape {tuple(Xt.shape)}: its last dimension {Xt.shape[1]} must equal D's rows n={n}")
    if Xt.shape[0] == 0:
        raise ValueError("X has no rows (B == 0)")
    check_finite("X", Xt)
    check_finite("D", Dt)
    norms = Dt.norm(dim=0)
    if bool((norms < MIN_COLUMN_NORM).any()):
        j = int(torch.nonzero(norms < MIN_COLUMN_NORM)[0])
        raise ValueError(f"D column {j} has norm {norms[j].item():.3g}: zero atoms are not allowed (norm must be >= {MIN_COLUMN_NORM})")
    if bias is not None:
        bt = as_tensor("bias", bias, device=Xt.device)
        if bt.shape != (n,):
            raise ValueError(f"bias has shape {tuple(bt.shape)}, must be (n,) = ({n},)")
        check_finite("bias", bt)
        Y = Xt - bt
    else:
        Y = Xt
    if weights is None:
        W = torch.ones(1, m, dtype=torch.float64, device=Xt.device)
    else:
        W = as_tensor("weights", weights, device=Xt.device)
        shape = tuple(W.shape)
        if W.ndim == 1:
            W = W[None]
        if W.ndim != 2 or W.shape[1] != m or W.shape[0] not in (1, Xt.shape[0]):
            raise ValueError(f"weights has shape {shape}, must be (m,) = ({m},) or (B, m) = ({Xt.shape[0]}, {m})")
        check_finite("weights", W)
        if bool((W <= 0).any()):
            raise ValueError(f"weights must be > 0, got min weight {W.min().item():.3g}")
    return Problem(Y.contiguous(), Dt.contiguous(), lam1, lam2, W.contiguous(), bool(nonneg), squeeze, as_numpy, out_dtype)


def prepare_codes(name: str, Z: Any, prob: Problem) -> Tensor:
    """Check a code array (B, m) or (m,) against ``prob`` and convert it to float64."""
    Zt = as_tensor(name, Z, device=prob.Y.device)
    if Zt.ndim == 1:
        Zt = Zt[None]
    if Zt.shape != (prob.B, prob.m):
        raise ValueError(f"{name} has shape {tuple(Zt.shape)}, must be (B, m) = ({prob.B}, {prob.m})")
    check_finite(name, Zt)
    return Zt


def to_output(t: Tensor, prob: Problem, *, dtype: Any = None) -> Any:
    """Hand a (B, …) result back in the caller's array type, dropping B if X was a vector."""
    if prob.squeeze:
        t = t[0]
    t = t.to(prob.out_dtype if dtype is None else dtype)
    return t.cpu().numpy() if prob.as_numpy else t
