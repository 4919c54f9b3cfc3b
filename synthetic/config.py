"""The spiked-model starvation benchmark's config and presets (run by :mod:`synthetic.starvation`).

Each preset's comment gives its design and its measured (or, where not run, its FLOP-sized) time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from geomsae.study import StudySettings
from geomsae.study.arms import AEN_GRID, aen_grid_name


@dataclass
class StarvationConfig(StudySettings):
    """One starvation benchmark on the spiked model (the arm, sweep and training fields: StudySettings)."""

    n: int = 64
    """Input width d_in of the spiked model (docs/method.md §4: 256)."""
    m: int = 256
    """Number of true features; also the SAEs' d_sae (docs/method.md §4: 1024)."""
    k: int = 4
    """Active true features per sample (docs/method.md §4: 16)."""
    rhos: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.9)
    """Coherences ρ of the spiked dictionary."""
    n_eval: int = 8192
    """Held-out evaluation tokens (same dictionary, fresh codes)."""
    workers: int = 2
    """Worker processes, each training whole stacks (one torch thread each); 1 runs in-process."""
    float_jitter: float = 0.0
    """Relative noise (times a seeded N(0, 1) per element) on the training activations, in [0, 1e-3]: 1e-6
    is the size of the rounding differences between two machines' float kernels, so a rerun with it shows
    which verdicts another machine could move (docs/method.md §7.4). 0: the data as generated."""
    stream_chunk: int = 0
    """Rows per chunk when the training samples are generated while training (synthetic/stream.py), for lengths
    whose data does not fit in memory (the authors' 12.8 M × 256 floats is 13 GB per cell); the held-out data
    and the truth then come from their own draw. 0: every training sample drawn at once, in memory."""
    b_dec_init: str = "mean"
    """The decoder bias at the start of training: "mean" (the mean of the training stream's first tokens, every
    preset) or "zeros". With zeros the shared spike stays in every encoder input, and TopK starves as the
    authors' does (docs/method.md §7.6)."""
    stream_on_device: bool = False
    """With ``stream_chunk``: draw the training samples with torch on ``device`` (synthetic/stream.py
    ``torch_chunk``: the same model, other numbers) instead of numpy on the host, which needs ≈ 76 s per
    cell at the authors' length on this machine's CPU, longer than a GPU needs to train on them."""
    checkpoint_every: int = 0
    """Steps between checkpoints of every SAE of a stack (in out/stacks/), so a stopped run resumes inside a
    stack; the final SAEs are kept there too. 0: no checkpoints (a stopped stack starts again)."""
    out: str | None = None
    """Output folder; None means runs/starvation_<preset>."""

    def __post_init__(self) -> None:
        for name in ("n", "m", "k", "n_eval", "workers"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"{name} == {v!r}, must be an integer >= 1")
        super().__post_init__()
        if not self.k <= self.m:
            raise ValueError(f"k == {self.k}, must be in [1, m={self.m}]")
        if not (isinstance(self.float_jitter, (int, float)) and 0.0 <= self.float_jitter <= 1e-3):
            raise ValueError(f"float_jitter == {self.float_jitter!r}, must be a number in [0, 1e-3]")
        for name in ("stream_chunk", "checkpoint_every"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
                raise ValueError(f"{name} == {v!r}, must be an integer >= 0 (0: off)")
        if self.b_dec_init not in ("mean", "zeros"):
            raise ValueError(f"b_dec_init == {self.b_dec_init!r}, must be 'mean' or 'zeros'")
        if self.stream_on_device and not self.stream_chunk:
            raise ValueError("stream_on_device == True needs stream_chunk > 0 (only streamed samples are drawn on the "
                             "device)")
        if self.stream_chunk and self.float_jitter:
            raise ValueError(f"float_jitter == {self.float_jitter!r} with stream_chunk == {self.stream_chunk}: the "
                             "jitter applies to in-memory data only; set one of them to 0")
        if not self.rhos or not all(0.0 <= r < 1.0 for r in self.rhos):
            raise ValueError(f"rhos == {self.rhos!r}, must be a non-empty list of numbers in [0, 1)")
        if not all(1 <= kk <= self.m for kk in self.topk_ks):
            raise ValueError(f"topk_ks == {self.topk_ks!r}, each must be in [1, m={self.m}]")
        if not all(1 <= w <= self.n_eval for w in self.eval_windows):
            raise ValueError(f"eval_windows == {self.eval_windows!r}, each must be in [1, n_eval={self.n_eval}]")

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else Path("runs") / f"starvation_{self.preset}"


# The start λ of the authors-gpu sweep (per-element units): read off our CPU rows of the authors preset (ρ 0.3 and
# 0.9, figures/data/authors/results.csv), the geometric middle of the λ that gave L0 closest to 16 at the two ρ, so
# that ¼× … 4× spans both (docs/method.md §7.6).
LAM_AEN_GPU = 3.9e-4
LAM_ADAPTIVE_LASSO_GPU = 3.9e-4
LAM_EN_GPU = 3e-3
LAM_RELU_L1_GPU = 2e-3

PRESETS: dict[str, StarvationConfig] = {
    # Seconds: two arms, two ρ, two seeds, tiny sizes (the tests).
    "tiny": StarvationConfig(preset="tiny", n=16, m=32, k=2, rhos=(0.0, 0.7), seeds=(0, 1),
                             arms=("relu_l1", "aen"), l0_targets=(2.0, 3.0), topk_ks=(1, 2, 4), sweep_points=3,
                             steps=60, batch_size=64, n_eval=1024, eval_windows=(256,), dead_window_tokens=640,
                             resample_every=21, workers=1),
    # Every arm, 5 ρ, 3 seeds, 6 λ per penalty cell and k 3–8: 989 SAEs in 5 rounds, 37 stacks (the largest 60).
    # Measured on 2 CPU cores, 2 workers, with another job sharing the cores: 812 s (issue 12; before it,
    # 450 SAEs with 3 λ and k ∈ {2, 4, 8}: 4 min 41 s).
    "quick": StarvationConfig(preset="quick"),
    # The committed verdicts (issue 12): the length design (quick sizes, ρ 0 / 0.5 / 0.9) with topk_tied, 5 seeds,
    # each arm at the length from which the length ablation (figures/length.md) found it stable under doubling:
    # the TopK arms 4000 (topk_tied measured since: stable 4000 → 8000 in all 6 cells), jumprelu 4000, relu_l1 8000,
    # aen 16,000; en, which its cliffs keep from being measured, as aen. One length for all (16,000) would be
    # 7 arms × 15 cells × ~7 SAEs ≈ 735 SAEs × ~12 s ≈ 2.5 h on 2 cores; these lengths cut the TopK, jumprelu
    # and relu_l1 arms 2–4×. Measured: 630 SAEs in 2,405 s on 2 cores, 2 workers; a worker holds the training
    # data of every cell of its stack (0.5 GB each at 16,000 × 128 × 64), 8.8 GB RSS in the first round.
    "standard": StarvationConfig(preset="standard", arms=("relu_l1", "topk", "topk_tied", "topk_auxk", "jumprelu",
                                                          "en", "aen"),
                                 rhos=(0.0, 0.5, 0.9), seeds=(0, 1, 2, 3, 4), steps=16_000,
                                 arm_steps=("relu_l1=8000", "topk=4000", "topk_tied=4000", "topk_auxk=4000",
                                            "jumprelu=4000")),
    # Claim (a) across L0 (issue 24 item 4): the standard design at L0 4, 6, 8, 12 and 16 (the standard run has no
    # bracketing pair at L0 ≥ 12 for any arm, and AEN's sweep there ends in cliffs), with a k grid to 20 and up to
    # 10 λ per cell. arm_steps are the standard preset's until the per-cell doubling rule (docs/method.md §7.5)
    # certifies TopK's, JumpReLU's, tied TopK's and EN's lengths: measure those first with --preset length
    # (--arms topk topk_tied jumprelu --steps 16000; --arms en --steps 32000), then set them here. Planned (--estimate-only):
    # ≤ 1,140 SAEs, 0.60 h at the roofline against the standard run's 0.35 h (measured 40 min), so ≈ 70 min on 2 cores.
    "l0-range": StarvationConfig(preset="l0-range", arms=("relu_l1", "topk", "topk_tied", "topk_auxk", "jumprelu", "en",
                                                          "aen"),
                                 rhos=(0.0, 0.5, 0.9), seeds=(0, 1, 2, 3, 4), steps=16_000,
                                 l0_targets=(4.0, 6.0, 8.0, 12.0, 16.0),
                                 topk_ks=(3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 18, 20), sweep_points=10,
                                 bracket_points=3, bracket_factor=16.0,
                                 arm_steps=("relu_l1=8000", "topk=4000", "topk_tied=4000", "topk_auxk=4000",
                                            "jumprelu=4000")),
    # Length ablation (issue 12 item 4): run with --steps 125 / 500 / 2000 / 4000 (a 32× span that holds the standard
    # length and its doubling) and --out runs/length_<steps>, then python -m synthetic.length. 6 arms × 3 ρ × 3 seeds ×
    # 6 points = 324 SAEs per length; measured on 2 shared cores: 125 steps 93 s, 500 steps ≈ 4 min (see each run's
    # timing.json).
    "length": StarvationConfig(preset="length", arms=("relu_l1", "topk", "topk_auxk", "jumprelu", "en", "aen"),
                               rhos=(0.0, 0.5, 0.9), seeds=(0, 1, 2)),
    # AEN tuned within the authors' grid (issue 12 item 5): the 12 grid arms at ρ 0.9 on the validation draw
    # (seeds 0-2); python -m synthetic.tune picks one, reported on a fresh draw (synthetic/tune.py). 216 SAEs, 1.8 TFLOP.
    "aen-grid": StarvationConfig(preset="aen-grid", rhos=(0.9,), l0_targets=(4.0,),
                                 arms=tuple(aen_grid_name(g, q, f) for g, q, f in AEN_GRID)),
    # The authors' spiked table (docs/method.md §5): n 256, m 1024, k 16, their arms (TopK without AuxK), their length and batch
    # (50,000 steps × 256 tokens = 12.8 M tokens per SAE, 33.5 TFLOP each: 6.6 min at 85 GFLOP/s). Two ρ rows on
    # CPU (--rhos 0.3 0.9). --estimate-only measured 14.9–15.5 ms per SAE-step (one thread; the run itself ≈ 10 ms
    # uncontended), so the design is cut to fit:
    # their TopK at k 16 only (the k of their table) and 3 λ per penalty arm, 4 × 3 + 1 = 13 SAEs per ρ, 26 in
    # all ≈ 2.8 h on 2 workers (with 4 k and 4 λ: 40 SAEs, 4.3 h). The committed run needed --sweep-points 5
    # (the start λ collapsed): 42 SAEs over two sessions. Our summary reports matched L0 (targets 16, 24;
    # TopK only at 16); authors_table.md (synthetic/authors.py) puts our run closest to L0 16 beside theirs, cell
    # by cell, as they picked theirs. 12.8 M × 256 float32 is 13 GB per cell (the generator's float64 product
    # twice that), more than the 24 GiB here: the training samples are streamed in chunks (synthetic/stream.py),
    # and every stack is checkpointed every 2500 steps, so the run resumes inside a stack across sessions.
    "authors": StarvationConfig(preset="authors", n=256, m=1024, k=16, arms=("aen", "adaptive_lasso", "en", "relu_l1",
                                                                            "topk"),
                                seeds=(0,), l0_targets=(16.0, 24.0), topk_ks=(16,), lam_relu_l1=0.05,
                                lam_en=0.03, lam_adaptive_lasso=0.01, lam_aen=0.01, lam2=2.5e-4, adaptive_beta=0.999,
                                steps=50_000, batch_size=256, lr=3e-3, n_eval=65_536,
                                eval_windows=(1024, 8192, 65_536), dead_window_tokens=256_000, resample_every=16_667,
                                sweep_points=3, stack_size=16, stream_chunk=65_536, checkpoint_every=2500),
    # The whole authors' table (5 ρ) on one GPU, sized to ≤ 8 min (not measured: no GPU has been lent). One round of 65
    # SAEs: 5 ρ × (4 penalty arms × 3 λ at ¼, 1 and 4 times a start read off the CPU rows (docs/method.md §7.6) + TopK
    # k 16) = 2.2 PFLOP, ≈ 7 min at 40 % of an H200's 790 TFLOP/s bf16. The 5 arms' stacks train side by side
    # (workers 5): a stack step dispatches ≈ 470 ops whatever its size (CPU profiler), so one process per arm keeps
    # the GPU fed; the samples are drawn on the GPU (stream_on_device), as numpy would need ≈ 76 s per cell.
    "authors-gpu": StarvationConfig(preset="authors-gpu", n=256, m=1024, k=16,
                                    arms=("aen", "adaptive_lasso", "en", "relu_l1", "topk"), seeds=(0,),
                                    l0_targets=(16.0, 24.0), topk_ks=(16,), lam_relu_l1=LAM_RELU_L1_GPU,
                                    lam_en=LAM_EN_GPU, lam_adaptive_lasso=LAM_ADAPTIVE_LASSO_GPU, lam_aen=LAM_AEN_GPU,
                                    lam2=2.5e-4, adaptive_beta=0.999, steps=50_000, batch_size=256, lr=3e-3,
                                    n_eval=65_536, eval_windows=(1024, 8192, 65_536), dead_window_tokens=256_000,
                                    resample_every=16_667, bracket_points=3, bracket_factor=16.0, sweep_points=3,
                                    stack_size=64, workers=5, device="cuda", autocast="bfloat16", stream_chunk=65_536,
                                    stream_on_device=True, checkpoint_every=5000),
    # The centering factorial (issue 24): the authors' design and arms, TopK+AuxK beside TopK, 5,000 steps × 256 tokens
    # (1.28 M tokens per SAE), 2 seeds; run once per start of the decoder bias, each into its own folder:
    #   python -m synthetic.starvation --preset centering --b-dec-init zeros --out runs/centering_zeros
    #   python -m synthetic.starvation --preset centering --b-dec-init mean --out runs/centering_mean
    # then python -m synthetic.centering runs/centering_zeros runs/centering_mean. λ brackets L0 16 (3 λ at ¼, 1, 4×
    # the authors-gpu start, then bisection to 1.25× or the cliff rule, at most 5 per cell). Planned: 5 ρ × 2 seeds ×
    # (2 TopK + 4 arms × ≤ 5 λ) = 220 SAEs per start × 3.4 TFLOP = 740 TFLOP per start (2.4 h at 85 GFLOP/s); at the
    # 15 ms per SAE-step --estimate-only measured on one thread, ≤ 4.6 h per start on one core, so the two starts
    # run side by side (one worker each) over several sessions, checkpointed. --rhos 0.3 0.9 first (the rows of the
    # doubling check): 88 SAEs per start, ≤ 1.8 h; rhos and seeds may be extended on resume.
    "centering": StarvationConfig(preset="centering", n=256, m=1024, k=16,
                                  arms=("aen", "adaptive_lasso", "en", "relu_l1", "topk", "topk_auxk"), seeds=(0, 1),
                                  l0_targets=(16.0,), topk_ks=(16,), lam_relu_l1=LAM_RELU_L1_GPU, lam_en=LAM_EN_GPU,
                                  lam_adaptive_lasso=LAM_ADAPTIVE_LASSO_GPU, lam_aen=LAM_AEN_GPU, lam2=2.5e-4,
                                  adaptive_beta=0.999, steps=5000, batch_size=256, lr=3e-3, n_eval=65_536,
                                  eval_windows=(1024, 8192, 65_536), dead_window_tokens=256_000, resample_every=1667,
                                  bracket_points=3, bracket_factor=16.0, sweep_points=5, stack_size=16, workers=1,
                                  stream_chunk=65_536, checkpoint_every=1000),
    # docs/method.md §4 sizes. Measured on CPU (1 thread): ≈ 25 ms/step → ≈ 2 min per SAE, 555 SAEs ≈ 19 h on one
    # core; use --workers or --device cuda (see --estimate-only). One cell's training data is 2.6 GB
    # (2.56 M × 256 float32) and a stack holds the data of its cells, so stacks of 16 (≈ 4 cells).
    "paper": StarvationConfig(preset="paper", n=256, m=1024, k=16, l0_targets=(16.0, 24.0), topk_ks=(8, 16, 32),
                              lam_relu_l1=0.05, lam_gated=0.1, lam_jumprelu=0.01, lam_en=0.03,
                              lam_adaptive_lasso=0.01, lam_aen=0.01, lam2=2.5e-4, adaptive_beta=0.999,
                              steps=5000, batch_size=512, lr=3e-3, n_eval=65_536,
                              eval_windows=(1024, 8192, 65_536), dead_window_tokens=256_000, resample_every=1667,
                              sweep_points=4, stack_size=16),
}
