"""``geomsae eval``: metrics of a trained SAE on activations.

    geomsae eval runs/aen --data acts/ [--true-dict D.npy] [--n-tokens N] [--json]

Prints a table, or with --json one JSON object on stdout (firing frequencies are left out
of it; --save-freqs writes them to a .npy file).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import numpy as np

_ORDER = ("n_tokens", "fvu", "explained_variance", "l0", "dead_fraction", "dense_fraction",
          "dense_fraction_001", "l2_ratio", "rel_bias", "mmcs", "recovery_rate", "mcc")


def jsonable(res: dict[str, Any]) -> dict[str, Any]:
    """The evaluation dict as strict JSON: no arrays of frequencies, no inf/nan (-> null)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(u) for k, u in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(u) for u in v]
        return v

    return {k: clean(v) for k, v in res.items() if k != "firing_frequencies"}


def format_table(res: dict[str, Any], title: str = "evaluation") -> str:
    keys = [k for k in _ORDER if k in res] + sorted(k for k in res if k.startswith("dead_fraction_at_"))
    width = max(len(k) for k in keys)
    lines = [title, "-" * len(title)]
    for k in keys:
        v = res[k]
        lines.append(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    hist = res.get("firing_histogram")
    if hist:
        counts = hist["counts"]
        lines.append(f"{'firing histogram':<{width}}  dead {counts[0]}, log10(freq) bins of "
                     f"{hist['edges'][2] - hist['edges'][1]:.2f} from {hist['edges'][1]:.0f}: {counts[1:]}")
    return "\n".join(lines)


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="evaluate a trained SAE on activations", description=__doc__.splitlines()[0],
                              allow_abbrev=False)
    p.add_argument("sae", metavar="DIR", help="SAE folder (cfg.json + sae.safetensors), e.g. a train --out")
    p.add_argument("--data", required=True, metavar="PATH", help="activations: .npy, .safetensors or a shard folder")
    p.add_argument("--data-key", default=None, help="tensor name inside a .safetensors file holding several")
    p.add_argument("--true-dict", default=None, metavar="D.npy",
                   help="ground-truth dictionary (d_in, n_true), atoms as columns: adds mmcs, recovery_rate, mcc")
    p.add_argument("--n-tokens", type=int, default=None, metavar="N",
                   help="evaluate on the first N tokens (default: all)")
    p.add_argument("--batch-size", type=int, default=4096, help="tokens per forward pass (default: 4096)")
    p.add_argument("--windows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 10_000_000], metavar="N",
                   help="also report the dead fraction over the first N tokens for each N")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--save-freqs", default=None, metavar="F.npy", help="write the (d_sae,) firing frequencies here")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from geomsae.checkpoint import load_sae
    from geomsae.commands.train import tune_malloc
    from geomsae.data import open_source
    from geomsae.evaluate import evaluate

    if args.device == "cpu":
        tune_malloc()
    sae = load_sae(args.sae, device=args.device)
    src = open_source(args.data, key=args.data_key)
    true_dict = None
    if args.true_dict is not None:
        true_dict = np.load(args.true_dict)
    res = evaluate(sae, src, n_tokens=args.n_tokens, batch_size=args.batch_size, true_dict=true_dict,
                   windows=tuple(args.windows))
    if args.save_freqs:
        np.save(args.save_freqs, res["firing_frequencies"])
    if args.json:
        print(json.dumps({"sae": str(args.sae), "arch": sae.arch, **jsonable(res)}, allow_nan=False))
    else:
        print(format_table(res, title=f"{sae.arch} SAE {args.sae} on {res['n_tokens']} tokens"))
    return 0
