"""The ``geomsae`` command line: one sub-command per module in :mod:`geomsae.commands`.

Each command module exposes ``add_parser(subparsers, name)`` and ``run(args) -> int``; its
options come from the same dataclasses as the Python API, through simple_parsing (see
:mod:`geomsae.config_cli`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from geomsae.config_cli import ArgumentParser, OneLineErrors

# name -> module under geomsae.commands
COMMANDS = {
    "solve": "solve",
    "train": "train",
    "eval": "evaluate",
    "compare": "compare",
    "harvest": "harvest",
    "export": "export",
    "import": "import_sae",
}


def _command_parser(*, parser_class: type[ArgumentParser] = ArgumentParser, **kwargs: Any) -> ArgumentParser:
    """Parser of one command: a :class:`geomsae.config_cli.ArgumentParser`, or the subclass
    a command asks for with ``subparsers.add_parser(name, parser_class=...)``."""
    return parser_class(**kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(prog="geomsae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_command_parser)
    for name, module in COMMANDS.items():
        importlib.import_module(f"geomsae.commands.{module}").add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    command = argv[0] if argv else None  # the top-level parser takes no option but --help
    try:
        args = parser.parse_args(argv)  # builds the configs: their checks raise ValueError here
        if not getattr(args, "command", None):
            parser.print_help()
            return 2
        return int(args.run(args) or 0)
    except (ValueError, OSError, ImportError) as exc:  # OSError: FileNotFoundError, IsADirectoryError, PermissionError, ...
        msg = str(exc) if not isinstance(exc, OSError) or not exc.filename else \
            f"{exc.strerror or exc}: {str(exc.filename)!r}"
        print(f"geomsae {command}: error: {' '.join(msg.split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
