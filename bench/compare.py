"""Benchmark: ``geomsae compare`` on 10,000 tokens, d_in 512, d_sae 4096, and the share spent in the solver.

    python bench/compare.py                  # aen and topk SAEs, trained briefly on a planted model
    python bench/compare.py --archs aen --train-steps 100 --tokens 2000

The SAEs are trained for ``--train-steps`` steps of 1024 tokens on the spiked model
(n = 512, m = 4096, k = 32, ρ = 0.5; :func:`synthetic.spiked`) so that their codes are sparse
as a trained SAE's are, saved with :func:`geomsae.checkpoint.save_sae`, and compared by the
command itself (``geomsae compare RUN --data X.npy --n-tokens N --held-out 1.0``) in this
process, timed from the outside; the report's own timing splits the exact solve (and the
topk λ calibration) from the rest. For an old-against-new comparison run it twice,
alternating checkouts (``PYTHONPATH=<checkout>``), so machine load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from geomsae.checkpoint import save_sae
    from geomsae.cli import main as cli
    from geomsae.train import TrainConfig, train
    from synthetic import spiked

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["aen", "topk"])
    p.add_argument("--tokens", type=int, default=10_000)
    p.add_argument("--train-steps", type=int, default=300)
    args = p.parse_args()
    n, m, k = 512, 4096, 32
    data = spiked(n=n, m=m, k=k, rho=0.5, n_samples=args.train_steps * 1024 + args.tokens, seed=0)
    X = data.activations.astype(np.float32)
    held = X[-args.tokens:]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; d_in {n}, d_sae {m}, {args.tokens} tokens")
    print(f"{'arch':<8} {'train s':>8} {'L0':>6} {'compare s':>10} {'solver s':>9} {'calib. s':>9} "
          f"{'solver share':>13} {'calib share':>12} {'tokens/s':>9} {'max rel gap':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "held.npy", held)
        for arch in args.archs:
            kw = {"k": k} if arch == "topk" else {"lam1": 2e-3, "lam2": 1e-3, "warmup_steps": args.train_steps // 5,
                                                  "ramp_steps": args.train_steps // 5, "beta": 0.99}
            t0 = time.perf_counter()
            res = train({"arch": arch, "d_sae": m, **kw}, X[:-args.tokens],
                        TrainConfig(steps=args.train_steps, batch_size=1024, lr=1e-3, progress=False,
                                    log_every=args.train_steps, checkpoint_every=0))
            t_train = time.perf_counter() - t0
            run = save_sae(res.sae, Path(tmp) / arch)
            out = Path(tmp) / f"cmp_{arch}"
            t0 = time.perf_counter()
            rc = cli(["compare", str(run), "--data", str(Path(tmp) / "held.npy"), "--n-tokens", str(args.tokens),
                      "--held-out", "1.0", "--out", str(out)])
            wall = time.perf_counter() - t0
            assert rc == 0
            timing = json.loads((out / "timing.json").read_text())[0]
            s = json.loads((out / "report.json").read_text())["summary"]
            print(f"{arch:<8} {t_train:>8.1f} {s['l0_encoder']:>6.1f} {wall:>10.1f} {timing['solver_s']:>9.1f} "
                  f"{timing['calibrate_s']:>9.1f} {(timing['solver_s'] + timing['calibrate_s']) / wall:>12.0%} {timing['calibrate_s'] / wall:>12.0%} {args.tokens / wall:>9.0f} {s['exact_max_rel_dual_gap']:>12.1e}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
