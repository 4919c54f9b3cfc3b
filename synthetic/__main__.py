"""Write a synthetic dataset as the .npy pair that ``geomsae train`` and ``geomsae eval --true-dict`` read.

    python -m synthetic spiked --rho 0.9 --n 64 --m 256 --k 4 --n-samples 65536 --out data/spiked
    python -m synthetic sharkey --n 64 --m 256 --out data/sharkey
    python -m synthetic zipf_hierarchy --out data/zipf

Every keyword of the generator (``synthetic.spiked``, ``synthetic.sharkey``,
``synthetic.zipf_hierarchy``) is an option; the folder gets activations.npy, dictionary.npy,
codes.npz and config.json (see :func:`synthetic.save_npy_pair`).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from geomsae.config_cli import OneLineErrors
from geomsae.durable import check_out_folder
from synthetic import generators, save_npy_pair

GENERATORS = {"spiked": generators.spiked, "sharkey": generators.sharkey, "zipf_hierarchy": generators.zipf_hierarchy}


def main(argv: list[str] | None = None) -> int:
    p = OneLineErrors(prog="python -m synthetic", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="kind", required=True, metavar="GENERATOR")
    for name, fn in GENERATORS.items():
        sp = sub.add_parser(name, help=(inspect.getdoc(fn) or "").splitlines()[0])
        sp.add_argument("--out", required=True, help="output folder")
        sp.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
        for par in inspect.signature(fn).parameters.values():
            kind = type(par.default)
            flag = "--" + par.name.replace("_", "-")
            if kind is bool:
                sp.add_argument(flag, action=argparse.BooleanOptionalAction, default=par.default)
            else:
                sp.add_argument(flag, type=kind, default=par.default, help=f"(default: {par.default!r})")
    args = vars(p.parse_args(argv))
    kind, out, overwrite = args.pop("kind"), args.pop("out"), args.pop("overwrite")
    try:
        check_out_folder(out)
        for f in ("cfg.json", "sae.safetensors", "manifest.json", "checkpoints"):
            if (Path(out) / f).exists():
                raise ValueError(f"--out {out!r} holds {f} (an SAE, a run or an activation cache), not a "
                                 "synthetic dataset: choose another folder")
        if (Path(out) / "activations.npy").exists() and not overwrite:
            raise ValueError(f"--out {out!r} already holds a dataset (activations.npy): choose another folder, or "
                             "pass --overwrite to replace it")
        data = GENERATORS[kind](**args)
        acts, dic = save_npy_pair(data, out)
    except (ValueError, OSError) as exc:
        print(f"python -m synthetic {kind}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{acts} {data.activations.shape}, {dic} {data.dictionary.shape}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
