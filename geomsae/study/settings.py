"""The settings every study runner shares: arms, their sparsity knobs, the sweep, training, verdicts.

:class:`StudySettings` holds every field that :mod:`geomsae.study` reads (the arms of
:data:`geomsae.study.arms.ARMS`, the sweep of :mod:`geomsae.study.sweep`, the stacked training
of :mod:`geomsae.study.stack`, the verdicts of :mod:`geomsae.study.verdicts`). Each runner's
config inherits it and adds where its activations come from (``synthetic.starvation``:
the spiked model; ``llm_eval.config``: a language model's harvested activations), so one
field means the same thing in every runner. The defaults are the quick synthetic sizes
(n = 64, m = 256); a runner may give a field another default by redeclaring it, without a
docstring (the one here applies).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from geomsae.study.arms import ARMS


def _check_int(obj: object, names: tuple[str, ...], low: int = 1) -> None:
    for name in names:
        v = getattr(obj, name)
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= low):
            raise ValueError(f"{name} == {v!r}, must be an integer >= {low}")


@dataclass
class StudySettings:
    """Arms, sweep, stacked training and verdict rule of one starvation study (shared by every runner)."""

    preset: str = "quick"
    """Name of the preset these values came from (recorded in config.json)."""
    arms: tuple[str, ...] = ("relu_l1", "relu_l1_resample", "topk", "topk_tied", "topk_auxk", "batchtopk", "jumprelu",
                             "gated", "en", "adaptive_lasso", "aen")
    """Arms to train (names of geomsae.study.arms.ARMS)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of the SAEs' initialisation (>= 2 for the verdicts); what else a seed draws is the runner's."""
    l0_targets: tuple[float, ...] = (4.0, 6.0)
    """Held-out L0 values at which arms are compared (matched.csv, summary.md)."""
    topk_ks: tuple[int, ...] = (3, 4, 5, 6, 7, 8)
    """k grid of the topk, topk_auxk and batchtopk arms (trained in one round)."""
    sweep_points: int = 6
    """Runs per cell of a penalty arm: λ values placed in rounds by geomsae.study.sweep."""
    bracket_points: int = 2
    """λ values of a penalty arm's first round, spaced geometrically around its lam_* start."""
    bracket_factor: float = 4.0
    """Ratio between the largest and smallest λ of the first round (more than 1)."""
    stack_size: int = 64
    """Most SAEs trained in one geomsae.train_stack call. At the quick sizes one member holds
    about 1 MB of weights and Adam moments and 0.5 MB of activations per step, so 64 stay under
    0.1 GB; lower it where one SAE is large (the LLM presets)."""
    lam_relu_l1: float = 0.05
    """First λ of relu_l1 and relu_l1_resample (SAE units: per-element MSE + λ Σ‖W_dec,j‖z_j)."""
    lam_gated: float = 0.05
    """First λ of gated."""
    lam_jumprelu: float = 0.01
    """First λ (L0 coefficient) of jumprelu."""
    lam_en: float = 0.03
    """First λ1 of en."""
    lam_adaptive_lasso: float = 0.005
    """First λ1 of adaptive_lasso."""
    lam_aen: float = 0.005
    """First λ1 of aen."""
    lam2: float = 1e-3
    """λ2 of en and aen (SAE units; canonical λ2' = d_in·λ2), held fixed while λ1 is swept."""
    adaptive_beta: float = 0.99
    """EMA decay β of the adaptive weights (adaptive_lasso, aen): a window of ~100 steps for short
    runs; 0.999 for long ones."""
    adaptive_gamma: float = 1.0
    """Exponent γ of the adaptive weights (ref/ema_j)^γ of aen and adaptive_lasso (the authors' grid: 0.5, 1)."""
    adaptive_q: float = 1.0
    """Top q % of the EMA that sets the reference of the adaptive weights (the authors' grid: 1, 5)."""
    adaptive_warmup_frac: float = 0.25
    """Adaptive weights off (w ≡ 1) for this fraction of the steps, ..."""
    adaptive_ramp_frac: float = 0.25
    """... then ramped in linearly over this fraction."""
    jumprelu_theta_init: float = 0.5
    """Initial JumpReLU threshold (inputs are scaled to E‖x‖² = d_in). log θ moves by about lr per
    step, so a short run keeps θ within a few-fold of this value."""
    jumprelu_bandwidth: float = 0.1
    """Bandwidth ε of the JumpReLU straight-through estimator."""
    jumprelu_threshold_lr_scale: float = 1.0
    """log θ's own learning rate, as a multiple of lr (JumpReLUConfig.threshold_lr_scale). At the quick
    sizes 1 already lets θ train (L0 40 → 2.4 over λ 0.003 → 0.3); 10 kills most latents there."""
    dead_window_tokens: int = 6400
    """Training tokens without firing after which AuxK and resampling treat a latent as dead."""
    resample_every: int = 134
    """Steps between resampling checks of relu_l1_resample (steps//3 + 1 at the quick sizes: two
    resamplings, the last a third of the run before the end, so resampled latents settle)."""
    steps: int = 400
    """Optimizer steps per SAE (the longest, where ``arm_steps`` shortens some arms)."""
    arm_steps: tuple[str, ...] = ()
    """Per-arm training lengths as 'arm=steps' (e.g. 'topk=4000'), each in [1, steps]: each arm trains for
    the length from which the length ablation found it converged (docs/method.md §7.5). Arms not named
    train for ``steps``; every arm reads the same data (the longest run's), a shorter one a shuffled part."""
    batch_size: int = 128
    """Tokens per step."""
    lr: float = 1e-2
    """Peak Adam learning rate (linear warm-up over 5 % of the steps, linear decay over the last 20 %)."""
    eval_windows: tuple[int, ...] = (1024, 4096)
    """Token counts N of the dead_at_N columns (dead_fraction uses every held-out token)."""
    ci_level: float = 0.95
    """Verdict rule: two-sided level of the t confidence interval of AEN's advantage (docs/method.md §7.4)."""
    device: str = "cpu"
    """Torch device for training ('cpu' is bit-reproducible)."""
    autocast: str = "none"
    """SAE training precision: 'none' (float32) or 'bfloat16' (GPU presets)."""

    def __post_init__(self) -> None:
        _check_int(self, ("sweep_points", "bracket_points", "stack_size", "steps", "batch_size",
                          "dead_window_tokens", "resample_every"))
        unknown = sorted(set(self.arms) - set(ARMS))
        if not self.arms or unknown:
            raise ValueError(f"arms == {self.arms!r}: unknown {unknown}; choose from {list(ARMS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds == {self.seeds!r}, must be distinct integers >= 0")
        if not self.l0_targets or not all(t > 0 for t in self.l0_targets):
            raise ValueError(f"l0_targets == {self.l0_targets!r}, must be numbers > 0")
        if not self.topk_ks or not all(isinstance(k, int) and k >= 1 for k in self.topk_ks):
            raise ValueError(f"topk_ks == {self.topk_ks!r}, must be integers >= 1")
        if not self.eval_windows or not all(w >= 1 for w in self.eval_windows):
            raise ValueError(f"eval_windows == {self.eval_windows!r}, must be integers >= 1")
        if not self.bracket_factor > 1.0:
            raise ValueError(f"bracket_factor == {self.bracket_factor!r}, must be > 1")
        if not (self.adaptive_gamma > 0 and 0 < self.adaptive_q <= 100):
            raise ValueError(f"adaptive_gamma == {self.adaptive_gamma!r} and adaptive_q == {self.adaptive_q!r}: "
                             "need gamma > 0 and q in (0, 100]")
        for name in ("adaptive_warmup_frac", "adaptive_ramp_frac"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} == {getattr(self, name)!r}, must be in [0, 1]")
        if not 0.5 <= self.ci_level < 1:
            raise ValueError(f"ci_level == {self.ci_level!r}, must be in [0.5, 1)")
        if self.autocast not in ("none", "bfloat16"):
            raise ValueError(f"autocast == {self.autocast!r}, must be 'none' or 'bfloat16'")
        self._arm_steps = _parse_arm_steps(self.arm_steps, self.arms, self.steps)

    def steps_for(self, arm: str) -> int:
        """The optimizer steps of ``arm``'s SAEs (``arm_steps``, else ``steps``)."""
        return self._arm_steps.get(arm, self.steps)

    def for_arm(self, arm: str) -> "StudySettings":
        """These settings as ``arm``'s SAEs see them: ``steps`` = :meth:`steps_for` (so its warm-up, lr decay
        and adaptive-weight schedule scale with its own length), ``arm_steps`` cleared."""
        steps = self.steps_for(arm)
        return self if steps == self.steps else dataclasses.replace(self, steps=steps, arm_steps=())


def _parse_arm_steps(entries: tuple[str, ...], arms: tuple[str, ...], steps: int) -> dict[str, int]:
    """{arm: steps} from 'arm=steps' strings; ValueError naming the bad entry."""
    out: dict[str, int] = {}
    for e in entries:
        name, sep, value = str(e).partition("=")
        if not sep or not value.strip().isdigit():
            raise ValueError(f"arm_steps entry {e!r} must read 'arm=steps', e.g. 'topk=4000'")
        n = int(value)
        if name not in arms:
            raise ValueError(f"arm_steps entry {e!r}: {name!r} is not one of this run's arms {list(arms)}")
        if name in out:
            raise ValueError(f"arm_steps names {name!r} twice")
        if not 1 <= n <= steps:
            raise ValueError(f"arm_steps entry {e!r}: steps {n} must be in [1, steps={steps}]")
        out[name] = n
    return out
