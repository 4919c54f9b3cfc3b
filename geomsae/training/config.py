"""How to train: :class:`TrainConfig` (the options of ``geomsae train`` and :func:`geomsae.train.train`)
and the learning-rate schedule.

lr(t): linear warm-up over ``lr_warmup_steps``, then constant until ``decay_start·steps``,
then linear or cosine decay to 0 at ``steps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass
class TrainConfig:
    """How to train (apart from the SAE's own config)."""

    steps: int = 10_000
    """Optimizer steps in total (a resumed run continues up to this many)."""
    batch_size: int = 4096
    """Tokens per optimizer step."""
    lr: float = 4e-4
    """Peak Adam learning rate."""
    lr_warmup_steps: int = 100
    """Steps of linear learning-rate warm-up from lr/lr_warmup_steps to lr (0: none)."""
    lr_decay: Literal["none", "linear", "cosine"] = "linear"
    """Learning-rate decay to 0 at the last step, starting at decay_start·steps."""
    decay_start: float = 0.8
    """Fraction of the steps after which the learning rate decays (ignored with lr_decay='none')."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam (β1, β2)."""
    adam_eps: float = 1e-8
    """Adam ε."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0: no clipping)."""
    seed: int = 0
    """Seed of the SAE's initialisation, of the data order and of the SAE's own randomness."""
    data_seed: int | None = None
    """Seed of the data order (and of the head used for the input statistics) when it must differ
    from ``seed``, e.g. several init seeds trained on one stream; None: the same as ``seed``."""
    input_norm: Literal["none", "per_token", "dataset"] = "dataset"
    """'dataset': train on s·x with one scale s making E‖s·x‖² = d_in, folded into the saved
    weights; 'per_token': the SAE rescales each token to norm sqrt(d_in) (kept in its config);
    'none': raw activations."""
    input_scale_tokens: int = 65_536
    """Tokens (from the start of the seeded stream) used to estimate the dataset scale s and the mean."""
    b_dec_init: Literal["mean", "zeros"] = "mean"
    """Initial decoder bias: 'mean' of those tokens (in training space, so the SAE starts by
    reconstructing the mean rather than spending latents on it), or 'zeros'."""
    target_l0: float | None = None
    """Hold the training batches' L0 (folded firing rule) at this value by adjusting the penalty coefficient
    (λ1; relu_l1, gated, jumprelu, en, adaptive_lasso, aen) while training, frozen for the last
    ``l0_control_freeze`` of the steps (geomsae/training/l0_control.py); the final λ1 is saved in cfg.json.
    None: λ1 fixed as given. TopK-type SAEs set L0 by k."""
    l0_control_rate: float = 0.01
    """Exponent r of the controller's update λ1 ← λ1·((ema + 1)/(target + 1))^r after each step, in (0, 1]."""
    l0_control_beta: float = 0.9
    """Decay β of the controller's EMA of the batch L0, in [0, 1)."""
    l0_control_freeze: float = 0.1
    """Fraction of the steps at the end with λ1 fixed (the final weights train at one objective), in [0, 1). At a
    fixed λ1 the L0 keeps falling as the SAE trains: a quarter frozen ended up to 13 % below the target on the
    spiked model, a tenth within 4 % (geomsae/training/l0_control.py)."""
    dead_window_tokens: int = 1_000_000
    """A latent counts as dead in the log when it has not fired in this many training tokens."""
    log_every: int = 100
    """Steps between metric records (metrics.jsonl, progress bar); the only host syncs."""
    checkpoint_every: int = 1000
    """Steps between checkpoints in out/checkpoints (0: only at the end and on Ctrl-C)."""
    keep_checkpoints: int = 2
    """Number of newest checkpoints kept, older ones being deleted (0: keep all)."""
    out: str | None = None
    """Output folder (final SAE, metrics.jsonl, checkpoints/); None: keep nothing on disk."""
    device: str = "cpu"
    """Torch device: 'cpu', 'cuda', 'cuda:1', ... or 'auto' (cuda when available)."""
    dtype: Literal["float32"] = "float32"
    """Parameter and activation dtype (only float32 for now)."""
    autocast: Literal["none", "bfloat16"] = "none"
    """Mixed precision: 'bfloat16' runs forward and loss under torch.autocast (parameters, Adam and
    the decoder constraint stay float32); meant for GPUs, where it roughly doubles throughput."""
    compile: bool = False
    """Run the SAE's forward through ``torch.compile`` (default inductor backend; the loss, the
    backward's bookkeeping and Adam stay eager). Pays a compile of tens of seconds on the first
    step; meant for long GPU runs. Same result as eager up to the order of float sums."""
    decoder: Literal["auto", "dense", "sparse"] = "auto"
    """How the SAE decodes in training: 'dense' (z @ W_decᵀ), 'sparse' (only the nonzero codes;
    TopK through its k indices; not for JumpReLU) or 'auto' (sparse on CPU where the measured
    cost model predicts it wins). Same result either way up to the
    order of float sums."""
    progress: bool = True
    """Show a tqdm progress bar (postfix: loss, fvu, l0, dead)."""
    deterministic: bool = True
    """Switch on torch.use_deterministic_algorithms while training (bit-exact CPU reruns)."""

    @property
    def stream_seed(self) -> int:
        """The seed of the data order: ``data_seed``, or ``seed`` when that is None."""
        return self.seed if self.data_seed is None else self.data_seed

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "input_scale_tokens", "dead_window_tokens"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"{name} == {v!r}, must be an integer >= 1")
        if self.data_seed is not None and not (isinstance(self.data_seed, int) and not isinstance(self.data_seed, bool)
                                                and self.data_seed >= 0):
            raise ValueError(f"data_seed == {self.data_seed!r}, must be None or an integer >= 0")
        for name in ("lr_warmup_steps", "checkpoint_every", "keep_checkpoints", "seed"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
                raise ValueError(f"{name} == {v!r}, must be an integer >= 0")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr == {self.lr!r}, must be a finite number > 0")
        if not (isinstance(self.adam_eps, (int, float)) and math.isfinite(self.adam_eps) and self.adam_eps > 0):
            raise ValueError(f"adam_eps == {self.adam_eps!r}, must be a finite number > 0")
        if not (isinstance(self.grad_clip, (int, float)) and math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ValueError(f"grad_clip == {self.grad_clip!r}, must be a finite number >= 0")
        if self.lr_decay not in ("none", "linear", "cosine"):
            raise ValueError(f"lr_decay == {self.lr_decay!r}, must be 'none', 'linear' or 'cosine'")
        if not (isinstance(self.decay_start, (int, float)) and 0 <= self.decay_start <= 1):
            raise ValueError(f"decay_start == {self.decay_start!r}, must be in [0, 1]")
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas == {self.betas!r}, must be two numbers in [0, 1)")
        if self.target_l0 is not None and not (isinstance(self.target_l0, (int, float))
                                               and not isinstance(self.target_l0, bool)
                                               and math.isfinite(self.target_l0) and self.target_l0 > 0):
            raise ValueError(f"target_l0 == {self.target_l0!r}, must be None or a finite number > 0")
        for name, lo, hi, closed in (("l0_control_rate", 0.0, 1.0, True), ("l0_control_beta", 0.0, 1.0, False),
                                     ("l0_control_freeze", 0.0, 1.0, False)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and ((lo < v <= hi) if closed else (lo <= v < hi))
            if not ok:
                raise ValueError(f"{name} == {v!r}, must be in {'(' if closed else '['}{lo:g}, {hi:g}"
                                 f"{']' if closed else ')'}")
        if self.b_dec_init not in ("mean", "zeros"):
            raise ValueError(f"b_dec_init == {self.b_dec_init!r}, must be 'mean' or 'zeros'")
        if self.input_norm not in ("none", "per_token", "dataset"):
            raise ValueError(f"input_norm == {self.input_norm!r}, must be 'none', 'per_token' or 'dataset'")
        if self.dtype != "float32":
            raise ValueError(f"dtype == {self.dtype!r}, only 'float32' is supported")
        if self.decoder not in ("auto", "dense", "sparse"):
            raise ValueError(f"decoder == {self.decoder!r}, must be 'auto', 'dense' or 'sparse'")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile == {self.compile!r}, must be True or False")
        if self.autocast not in ("none", "bfloat16"):
            raise ValueError(f"autocast == {self.autocast!r}, must be 'none' or 'bfloat16'")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based)."""
    f = min(1.0, (step + 1) / cfg.lr_warmup_steps) if cfg.lr_warmup_steps else 1.0
    start = cfg.decay_start * cfg.steps
    if cfg.lr_decay != "none" and step >= start and cfg.steps > start:
        p = (step - start) / (cfg.steps - start)
        f *= 1.0 - p if cfg.lr_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * p))
    return cfg.lr * f
