"""Training streams from the cache: its peak resident memory does not grow with the dataset.

A child process trains one epoch over a .npy cache 4x larger than a memory budget, with a
4,096-token shuffle buffer, after a warm-up run of the same code over an 8,192-token cache; its peak anonymous
memory (RssAnon, sampled after every step; the mapped cache's page-cache pages are not the training's) above its
value before training (torch, the SAE and Adam already resident) must stay under the budget.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

D_IN, N_TOKENS = 64, 393_216  # 96 MiB of float32
BUDGET_MB = 24

CHILD = textwrap.dedent("""
    import sys
    from geomsae.data import open_source
    from geomsae.train import TrainConfig, train

    def status(key):
        for ln in open("/proc/self/status"):
            if ln.startswith(key):
                return int(ln.split()[1]) / 1024  # MiB
    src = open_source(sys.argv[1], shuffle_buffer=4096)
    cfg = TrainConfig(steps=src.n_tokens // 2048, batch_size=2048, input_scale_tokens=4096,
                      log_every=50, checkpoint_every=0, progress=False, lr_warmup_steps=0)
    # warm up allocator, kernels, imports and Adam on the same code path over a small cache
    small = open_source(sys.argv[2], shuffle_buffer=4096)
    train({"arch": "relu_l1", "d_sae": 64}, small, TrainConfig(**{**cfg.__dict__, "steps": small.n_tokens // 2048}))
    # anonymous memory only: pages of the memory-mapped cache count in VmRSS/VmHWM while mapped, but they are
    # the kernel's page cache (reclaimable, shared), not memory the training holds; sampled after every step
    base = status("RssAnon:")
    peak = [base]
    res = train({"arch": "relu_l1", "d_sae": 64}, src, cfg,
                callback=lambda step, rec: peak.append(status("RssAnon:")))
    print(res.tokens, base, max(peak), src.peak_buffer_rows)
""")


def test_training_memory_independent_of_dataset_size(tmp_path):
    path = tmp_path / "big.npy"
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(N_TOKENS, D_IN))
    rng = np.random.default_rng(0)
    for i in range(0, N_TOKENS, 65_536):
        arr[i:i + 65_536] = rng.standard_normal((min(65_536, N_TOKENS - i), D_IN), dtype=np.float32)
    arr.flush()
    np.save(tmp_path / "small.npy", arr[:8192])
    del arr
    size_mb = path.stat().st_size / 2**20
    assert size_mb >= 4 * BUDGET_MB
    env_path = str(Path(__file__).resolve().parents[1])
    res = subprocess.run([sys.executable, "-c", CHILD, str(path), str(tmp_path / "small.npy")], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": env_path, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-3000:]
    tokens, base, peak, rows = res.stdout.split()[-4:]
    assert int(tokens) == N_TOKENS  # one whole epoch over the cache was read
    assert int(rows) <= 4096 + 2048
    growth = float(peak) - float(base)
    print(f"peak RSS growth {growth:.1f} MiB over a {size_mb:.0f} MiB cache (budget {BUDGET_MB} MiB)")
    assert growth < BUDGET_MB, f"peak RSS grew by {growth:.1f} MiB while training over a {size_mb:.0f} MiB cache"
