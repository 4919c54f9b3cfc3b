"""``python -m figures [--quick] [--only NAME ...] [--force] [--out DIR]``: regenerate every figure."""

from __future__ import annotations

import argparse
import sys

from figures import FIGURES_DIR, build


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m figures", description=__doc__)
    p.add_argument("--quick", action="store_true", help="quick presets (<= 10 min on 2 CPU cores)")
    p.add_argument("--only", nargs="+", default=None, help="only these sources (e.g. starvation proofs_check)")
    p.add_argument("--force", action="store_true", help="retrain even when a run with the same config exists")
    p.add_argument("--out", default=str(FIGURES_DIR), help="output folder (default: the figures/ package folder)")
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
