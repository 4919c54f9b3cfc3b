"""geomsae: train sparse autoencoders on activations, and check their codes against the exact solution.

Each command module (geomsae.commands) exposes ``add_parser(subparsers, name, summary)`` and
``run(args) -> int``; its options come from the same dataclasses as the Python API, through
simple_parsing (geomsae.config_cli). Only the command being run is imported: ``geomsae --help``
lists the commands without importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from geomsae.config_cli import ArgumentParser, OneLineErrors

COMMANDS: dict[str, tuple[str, str]] = {
    "solve": ("solve", "exact sparse codes with certified duality gaps (try --demo)"),
    "train": ("train", "train an SAE on activations"),
    "eval": ("evaluate", "evaluate a trained SAE on activations"),
    "compare": ("compare", "compare trained SAEs' encoders with the exact solver"),
    "harvest": ("harvest", "harvest LM activations into a sharded cache"),
    "export": ("export", "write a trained SAE as a SAELens or sparsify folder"),
    "import": ("import_sae", "read a SAELens or sparsify SAE folder into a geomsae SAE folder"),
}
"""Command name → (module under geomsae.commands, one-line summary shown by ``geomsae --help``)."""


def _command_parser(*, parser_class: type[ArgumentParser] = ArgumentParser, **kwargs: Any) -> ArgumentParser:
    """Parser of one command: a :class:`geomsae.config_cli.ArgumentParser`, or the subclass
    a command asks for with ``subparsers.add_parser(name, parser_class=...)``."""
    return parser_class(**kwargs)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command (``command`` None), or of ``command`` alone with the others listed by name
    and summary only (their modules, and torch, not imported)."""
    parser = OneLineErrors(prog="geomsae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_command_parser)
    for name, (module, summary) in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(f"geomsae.commands.{module}").add_parser(sub, name, summary)
        else:
            sub.add_parser(name, help=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else None  # the top-level parser takes no option but --help
    parser = build_parser(command or "")
    try:
        args = parser.parse_args(argv)  # builds the configs: their checks raise ValueError here
        if not getattr(args, "command", None):
            parser.print_help()
            return 2
        return int(args.run(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: what a command keeps on stopping (train: a checkpoint) it says itself
        print(f"geomsae {command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError) as exc:  # OSError: FileNotFoundError, IsADirectoryError, PermissionError, ...
        msg = str(exc) if not isinstance(exc, OSError) or not exc.filename else \
            f"{exc.strerror or exc}: {str(exc.filename)!r}"
        print(f"geomsae {command}: error: {' '.join(msg.split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
