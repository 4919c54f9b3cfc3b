"""Property checks of the statements of docs/method.md §1 on synthetic ground truth, one module per statement.

    lipschitz           global Lipschitz bound min(‖D‖₂/λ2, 1/(2√λ2)) and the 1-Lipschitz fit
    lasso_instability   lasso ratio 1/σ_min(D_S) as ρ → 1, support flips, duplicated atoms, grouping
    jacobian            local Jacobian (D_SᵀD_S + λ2 I)⁻¹ D_Sᵀ and its norm ≤ 1/(2√λ2)
    support_recovery    primal–dual witness prediction against the exact solver's support

Each check returns a :class:`Check` (name, measured, bound, holds, details, kind).
``python -m proofs_check [--quick]`` writes ``proofs_check/report.md``, ``config.json`` and
``figures/*.png``; :data:`FIGURES` and :func:`make_figures` let ``python -m figures`` register them.
"""

from proofs_check._common import Check, Config, verdict
from proofs_check.report import FIGURES, make_figures, run_all, write_report

__all__ = ["FIGURES", "Check", "Config", "make_figures", "run_all", "verdict", "write_report"]
