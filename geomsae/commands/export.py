"""``geomsae export RUN --format saelens|sparsify --out DIR``: a trained SAE as a folder other tools load.

    geomsae export runs/aen --format saelens --out export/aen     # SAE.load_from_disk("export/aen")
    geomsae export runs/topk --format sparsify --out export/topk  # SparseCoder.load_from_disk("export/topk")

SAELens (v6) takes every architecture: relu_l1, en, adaptive_lasso and aen as its standard
ReLU SAE, topk as TopK, jumprelu and batchtopk (its inference threshold) as JumpReLU, gated as
Gated. sparsify takes topk only. The folder computes the same reconstruction from raw
activations: the dataset's input scale is folded into the weights (decoder atoms of unit norm,
codes in raw units). ``geomsae import`` reads it back into the same SAE.
"""

from __future__ import annotations

import argparse
from typing import Any

from geomsae.interop import ExportConfig


def add_parser(subparsers: Any, name: str, summary: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=summary,
                              description=__doc__, allow_abbrev=False)
    p.add_argument("sae", metavar="RUN", help="SAE folder (cfg.json + sae.safetensors), e.g. a train --out")
    p.add_argument("--out", required=True, metavar="DIR", help="new folder to write (must not exist or be empty)")
    p.add_arguments(ExportConfig, dest="cfg")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from geomsae.interop import export_sae

    out = export_sae(args.sae, args.out, args.cfg)
    files = ", ".join(sorted(f.name for f in out.iterdir()))
    print(f"wrote {out} ({args.cfg.format}): {files}")
    return 0
