"""``python -m figures [--quick] [--only NAME ...] [--force] [--out DIR]``: regenerate every figure."""

from __future__ import annotations

import sys

from figures import build
from geomsae.config_cli import OneLineErrors


def main(argv: list[str] | None = None) -> int:
    p = OneLineErrors(prog="python -m figures", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="retrain everything at quick sizes (<= 10 min on 2 CPU cores) into figures/quick/")
    p.add_argument("--only", nargs="+", default=None, help="only these sources (e.g. starvation proofs_check)")
    p.add_argument("--force", action="store_true",
                   help="retrain even when a run or committed evidence with the same config exists (hours without --quick)")
    p.add_argument("--out", default=None, help="output folder (default: figures/, or figures/quick/ with --quick)")
    args = p.parse_args(argv)
    try:
        built = build(args.out, quick=args.quick, only=args.only, force=args.force)
    except (ValueError, OSError) as exc:
        print(f"python -m figures: error: {exc}", file=sys.stderr)
        return 2
    for name, paths in built.items():
        for path in paths:
            print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
