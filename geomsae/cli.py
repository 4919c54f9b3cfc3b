"""The ``geomsae`` command line: one sub-command per module in :mod:`geomsae.commands`.

Each command module exposes ``add_parser(subparsers)`` and ``run(args) -> int``; options
come from the same dataclasses as the Python API (see :mod:`geomsae.config_cli`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module under geomsae.commands; imported lazily so `geomsae --help` is fast.
COMMANDS = {
    "solve": "solve",
    "train": "train",
    "eval": "evaluate",
    "compare": "compare",
    "harvest": "harvest",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geomsae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"geomsae.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"geomsae.commands.{module}":
                continue  # command not built yet
            raise
        mod.add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"geomsae {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
