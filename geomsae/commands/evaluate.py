"""``geomsae eval``: metrics of a trained SAE on activations.

    geomsae eval runs/aen --data acts/ [--true-dict D.npy] [--n-tokens N] [--json]

Prints a table, or with --json one JSON object on stdout (firing frequencies are left out
of it; --save-freqs writes them to a .npy file).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from geomsae.commands.common import format_table, read_array, tune_malloc
from geomsae.durable import check_new_file, save_npy


def add_parser(subparsers: Any, name: str, summary: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=summary, description=__doc__.splitlines()[0],
                              allow_abbrev=False)
    p.add_argument("sae", metavar="DIR", help="SAE folder (cfg.json + sae.safetensors), e.g. a train --out")
    p.add_argument("--data", required=True, metavar="PATH", help="activations: .npy, .safetensors or a shard folder")
    p.add_argument("--data-key", default=None, metavar="NAME",
                   help="tensor name inside a .safetensors file holding several")
    p.add_argument("--true-dict", default=None, metavar="D.npy",
                   help="ground-truth dictionary (d_in, n_true), atoms as columns: adds mmcs, recovery_rate, mmcs_1to1 "
                   "and their spike-only chance levels")
    p.add_argument("--true-codes", default=None, metavar="Z.npz",
                   help="ground-truth codes (N, n_true) of the same tokens, in order, as .npy or (scipy-sparse) .npz, "
                   "e.g. the codes.npz of python -m synthetic (needs --true-dict): adds mcc")
    p.add_argument("--n-tokens", type=int, default=None, metavar="N",
                   help="evaluate on the first N tokens (default: all)")
    p.add_argument("--batch-size", type=int, default=4096, metavar="B", help="tokens per forward pass")
    p.add_argument("--windows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 10_000_000], metavar="N",
                   help="also report the dead fraction over the first N tokens for each N")
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="torch device: cpu, cuda, cuda:N or auto")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="do not show the progress bar (on stderr)")
    p.add_argument("--save-freqs", default=None, metavar="F.npy", help="write the (d_sae,) firing frequencies here")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --save-freqs file (never the --data file)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from geomsae.checkpoint import load_sae
    from geomsae.data import open_source
    from geomsae.evaluate import evaluate
    from geomsae.training.runtime import resolve_device

    device = resolve_device(args.device)
    if device.type == "cpu":
        tune_malloc()
    if args.save_freqs:
        check_new_file(args.save_freqs, "--save-freqs", overwrite=args.overwrite, inputs=(args.data,))
    sae = load_sae(args.sae, device=device)
    src = open_source(args.data, key=args.data_key)
    true_dict = None if args.true_dict is None else read_array(args.true_dict, "--true-dict")
    true_codes = None if args.true_codes is None else read_array(args.true_codes, "--true-codes")
    res = evaluate(sae, src, n_tokens=args.n_tokens, batch_size=args.batch_size, true_dict=true_dict,
                   true_codes=true_codes, windows=tuple(args.windows), progress=args.progress)
    if args.save_freqs:
        save_npy(args.save_freqs, res.firing_frequencies)
    if args.json:
        print(json.dumps({"sae": str(args.sae), "arch": sae.arch, **res.to_json()}, allow_nan=False))
    else:
        print(format_table(res, title=f"{sae.arch} SAE {args.sae} on {res.n_tokens} tokens"))
    return 0
