"""``geomsae train``: train one SAE on activations.

    geomsae train --arch aen --data acts/ --d-sae 4096 --steps 20000 --batch-size 4096 \\
        --lr 4e-4 --seed 0 --out runs/aen --lam1 5e-3 --lam2 1e-3 [--resume]

Options come from :class:`geomsae.train.TrainConfig` and the chosen architecture's config
dataclass, picked by ``--arch NAME`` (a simple_parsing subgroup); ``geomsae train --arch
NAME --help`` lists NAME's own fields with their defaults, ``geomsae train --help`` the
architectures and the names of their options.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from simple_parsing import subgroups

from geomsae.commands.common import format_table, tune_malloc
from geomsae.config_cli import ArgumentParser, field_docs
from geomsae.saes import ARCHS, config_class
from geomsae.training.config import TrainConfig

_SAE_COMMON = ("d_in", "d_sae", "input_norm")  # d_in from the data, d_sae an option, input_norm via TrainConfig


@functools.cache
def arch_options(arch: str) -> type:
    """The command-line view of ``config_class(arch)``: a dataclass of its fields besides
    d_in, d_sae and input_norm, with their types, defaults and docstrings but not the
    checks, which run when the SAE is built (they need d_in, known once the data is open)."""
    cls = config_class(arch)
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    fields = [(f.name, hints[f.name], dataclasses.field(default=f.default, metadata={"help": docs[f.name]}))
              for f in dataclasses.fields(cls) if f.init and f.name not in _SAE_COMMON]
    view = dataclasses.make_dataclass(cls.__name__, fields, frozen=True)
    view.__doc__ = f"Options of --arch {arch} (the fields of {cls.__name__} but d_in, d_sae and input_norm)."
    return view


def _flags(arch: str) -> list[str]:
    return ["--" + f.name.replace("_", "-") for f in dataclasses.fields(arch_options(arch))]


@dataclass
class ArchChoice:
    """Which SAE to train."""

    arch: Any = subgroups({name: arch_options(name) for name in ARCHS})
    """SAE architecture (required); --arch NAME --help lists its options."""


def _arch_value(args: Sequence[str]) -> str | None:
    """The value given to ``--arch`` (the last one wins, as in argparse): "" for ``--arch`` without a
    value, None when ``--arch`` is absent."""
    value = None
    for i, a in enumerate(args):
        if a == "--arch":
            value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("-") else ""
        elif a.startswith("--arch="):
            value = a.split("=", 1)[1]
    return value


class TrainParser(ArgumentParser):
    """The ``geomsae train`` parser: ``--arch`` required; an option of another architecture is
    named as such; ``--help`` without ``--arch`` lists every architecture's options."""

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
                         **kw: Any) -> tuple[argparse.Namespace, list[str]]:
        args = list(sys.argv[1:] if args is None else args)
        arch_value = _arch_value(args)
        if arch_value is None:
            if "-h" in args or "--help" in args:
                self._help_without_arch()
            self.error("the following arguments are required: --arch")
        if arch_value == "":
            self.error("argument --arch: expected one argument")
        if arch_value not in ARCHS:  # simple_parsing's own parser would print usage
            self.error(f"argument --arch: invalid choice: {arch_value!r} (choose from {', '.join(ARCHS)})")
        ns, extra = super().parse_known_args(args, namespace, **kw)
        arch = ns.subgroups["sae.arch"]
        mine = _flags(arch)
        for a in extra:
            flag = a.split("=", 1)[0]
            if any(flag in _flags(other) for other in ARCHS):
                raise ValueError(f"{flag} is not an option of arch {arch!r} (its options: {' '.join(mine)})")
        # the architecture fields given on the command line, the only ones a resumed run must match
        dests = {self._option_string_actions[f].dest for a in args
                 if (f := a.split("=", 1)[0]) in self._option_string_actions}
        ns.sae_given = tuple(f.name for f in dataclasses.fields(arch_options(arch)) if f"sae.arch.{f.name}" in dests)
        return ns, extra

    def _help_without_arch(self) -> None:
        p = ArgumentParser(prog=self.prog, description=self.description, allow_abbrev=False,
                           epilog=architectures_help(), formatter_class=self.formatter_class)
        _add_run_options(p).add_argument("--arch", required=True, choices=list(ARCHS), help="SAE architecture")
        p.add_arguments(TrainConfig, dest="train")
        p.print_help()
        self.exit()


def architectures_help() -> str:
    """One line per architecture: its name and its options (``--help`` without ``--arch``)."""
    lines = ["architectures (--arch NAME --help shows NAME's options with their help and defaults):"]
    for name in ARCHS:
        flags = [f"{f}/--no-{f[2:]}" if t is bool else f
                 for f, t in zip(_flags(name), typing.get_type_hints(arch_options(name)).values())]
        lines.append(f"  {name:<15} {' '.join(flags)}")
    return "\n".join(lines)


def _add_run_options(p: argparse.ArgumentParser) -> Any:
    run = p.add_argument_group("run")
    run.add_argument("--data", required=True, metavar="PATH",
                     help="activations: a .npy (tokens, d_in), a .safetensors file, "
                     "or a shard folder with manifest.json")
    run.add_argument("--d-sae", type=int, required=True, metavar="M", help="number of latents")
    run.add_argument("--data-key", default=None, metavar="NAME",
                     help="tensor name inside a .safetensors file holding several")
    run.add_argument("--verify", choices=["open", "lazy", "none"], default="lazy",
                     help="when to check shard sha256 sums ('lazy': at each shard's first read)")
    run.add_argument("--shuffle-buffer", type=int, default=None, metavar="TOKENS",
                     help="rows held in memory while shuffling (default: about 1 GiB of float32)")
    run.add_argument("--eval-fraction", type=float, default=0.0, metavar="F",
                     help="hold out this last fraction of the tokens and evaluate on it after training")
    run.add_argument("--resume", action="store_true",
                     help="continue from the newest readable checkpoint in --out (after a kill, Ctrl-C or SIGTERM)")
    return run


def add_parser(subparsers: Any, name: str, summary: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, parser_class=TrainParser, help=summary,
                              description=__doc__.splitlines()[0], allow_abbrev=False)
    _add_run_options(p)
    p.add_arguments(TrainConfig, dest="train")
    p.add_arguments(ArchChoice, dest="sae")
    p.set_defaults(run=run)
    return p


def sae_spec(args: argparse.Namespace, d_in: int) -> dict[str, Any]:
    """{"arch", "d_in", "d_sae", **the architecture fields given} from parsed arguments (the
    others keep the config's defaults, or a resumed run's values)."""
    opts = args.sae.arch
    return {"arch": args.subgroups["sae.arch"], "d_in": d_in, "d_sae": args.d_sae,
            **{k: getattr(opts, k) for k in args.sae_given}}


def run(args: argparse.Namespace) -> int:
    from geomsae.data import open_source, train_eval_split
    from geomsae.train import NonFiniteLossError, train

    cfg: TrainConfig = args.train
    if cfg.device == "cpu":
        tune_malloc()
    if cfg.out is None:
        raise ValueError("--out is required: the folder for the SAE, metrics.jsonl and checkpoints")
    src = open_source(args.data, key=args.data_key, verify=args.verify, shuffle_buffer=args.shuffle_buffer)
    eval_src = None
    if args.eval_fraction:
        src, eval_src = train_eval_split(src, args.eval_fraction)
    spec = sae_spec(args, src.d_in)
    from geomsae.training.signals import stop_on_sigterm

    with stop_on_sigterm():  # before and after the training loop too, SIGTERM stops like Ctrl-C (exit 143)
        try:
            result = train(spec, src, cfg, resume=args.resume)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: a checkpoint was saved (TrainingStopped)
            print("geomsae train: interrupted (run again with --resume to continue)", file=sys.stderr)
            return 128 + (getattr(exc, "signum", None) or 2)
        except NonFiniteLossError as exc:
            print(f"geomsae train: error: {exc}", file=sys.stderr)
            return 3
        if result.out is None:  # a rank > 0 of a data-parallel run (torchrun): rank 0 saves and reports
            return 0
        m = result.metrics
        summary = {k: m[k] for k in ("step", "tokens", "loss", "fvu", "l0", "dead_fraction") if k in m}
        print(f"geomsae train: saved {str(result.out)!r} (input scale {result.input_scale:.6g}); last batch: "
              + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
        if eval_src is not None:
            from geomsae.evaluate import evaluate

            res = evaluate(result.sae, eval_src, batch_size=cfg.batch_size, device=result.sae.W_dec.device)
            (result.out / "eval.json").write_text(json.dumps(res.to_json(), indent=1) + "\n")
            print(format_table(res, title=f"held-out evaluation ({res.n_tokens} tokens)"))
        return 0
