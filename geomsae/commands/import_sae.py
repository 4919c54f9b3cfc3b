"""``geomsae import DIR --out RUN``: a SAELens or sparsify SAE folder as a geomsae SAE folder.

    geomsae import path/to/saelens_sae --out runs/public             # then: geomsae eval / compare runs/public
    geomsae import path/to/sparsify/layers.6 --out runs/sparsify-l6

SAELens (v6) 'standard' SAEs become relu_l1, 'topk' topk, 'jumprelu' jumprelu, 'gated' gated;
sparsify TopK SAEs become topk. A folder written by ``geomsae export`` comes back as the SAE
that was exported (architecture, config, input scale, state). A standard SAE's l1 coefficient
is not saved by SAELens: pass it with --l1-coefficient, or ``geomsae compare`` calibrates λ1
to the encoder's L0 (as for TopK) and says so.
"""

from __future__ import annotations

import argparse
from typing import Any

from geomsae.interop import ImportConfig


def add_parser(subparsers: Any, name: str, summary: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=summary,
                              description=__doc__, allow_abbrev=False)
    p.add_argument("src", metavar="DIR", help="SAELens folder (cfg.json + sae_weights.safetensors) or sparsify "
                   "folder (cfg.json + sae.safetensors)")
    p.add_argument("--out", required=True, metavar="RUN", help="new geomsae SAE folder (must not exist or be empty)")
    p.add_arguments(ImportConfig, dest="cfg")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from geomsae.checkpoint import load_sae, read_cfg
    from geomsae.interop import import_sae
    from geomsae.interop.folders import STATE_FILE

    out = import_sae(args.src, args.out, args.cfg)
    sae, info = load_sae(out), read_cfg(out)["imported_from"]
    how = "exported by geomsae" if info["exported_by_geomsae"] else f"a {info['format']} {info['kind']} SAE"
    note = ""
    if not info.get("state_restored", True):
        lost = "step counters" + (" and adaptive weights" if sae.arch in ("aen", "adaptive_lasso") else "")
        note = f" ({STATE_FILE} missing: {lost} not restored)"
    if not info["penalty_known"]:
        note += "; penalty unknown: geomsae compare will calibrate λ1 to its L0"
    print(f"wrote {out}: {sae.arch} d_in {sae.cfg.d_in}, d_sae {sae.cfg.d_sae} from {how}{note}")
    return 0
