"""Dataclass configs that drive both the Python API and the command line, through simple_parsing.

A config is a plain dataclass whose fields each carry a docstring (a string literal on the
line after the field, as in sparsify). `simple_parsing <https://github.com/lebrice/SimpleParsing>`_
turns the fields into options whose ``--help`` text is that docstring and builds the
dataclass back from the command line, so its ``__post_init__`` checks run for CLI and API
users alike. :class:`ArgumentParser` fixes the spelling shared by every geomsae command
line: ``--kebab-case`` flags (``--k``, never ``-k``), booleans as ``--flag/--no-flag``,
``none`` for an optional value, ``%`` in a docstring printed as is.
:func:`parse_config` is the one-call form for experiment runners.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import simple_parsing
from simple_parsing import ConflictResolution, DashVariant
from simple_parsing.docstring import get_attribute_docstring
from simple_parsing.helpers.custom_actions import BooleanOptionalAction
from simple_parsing.wrappers import DataclassWrapper, FieldWrapper

T = TypeVar("T")


def _optional_scalar(tp: Any) -> Any:
    """``X`` for ``X | None`` with X in (int, float, str), else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and args[0] in (int, float, str):
            return args[0]
    return None


def _parse_none_or(conv: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(s: str) -> Any:
        return None if s.lower() in {"none", "null", ""} else conv(s)

    parse.__name__ = conv.__name__  # argparse names the type in "invalid int value"
    return parse


class _Field(FieldWrapper):
    """One field as one option: ``--kebab-case`` (also for one-letter names), ``--flag/--no-flag``
    for booleans, 'none' for ``X | None``, and a literal '%' in the help."""

    @property
    def option_strings(self) -> list[str]:
        return ["--" + (self.prefix + self.name).replace("_", "-")]

    @property
    def arg_options(self) -> dict[str, Any]:
        if self._arg_options:
            return self._arg_options
        opts = dict(super().arg_options)
        if opts.get("help"):
            opts["help"] = " ".join(opts["help"].split()).replace("%", "%%")  # argparse %-formats help
        if opts.get("action") is BooleanOptionalAction:  # simple_parsing's: --noflag, and --flag takes a value
            opts = {k: opts[k] for k in ("dest", "default", "required", "help") if k in opts}
            opts["action"] = argparse.BooleanOptionalAction
        inner = _optional_scalar(self.type)
        if inner is not None and "type" in opts:
            opts["type"] = _parse_none_or(inner)
        self._arg_options = opts
        return opts


class _Dataclass(DataclassWrapper):
    """A dataclass's options under the title of the class, every field through :class:`_Field`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["field_wrapper_class"] = _Field
        super().__init__(*args, **kwargs)

    @property
    def title(self) -> str:
        return self.dataclass.__qualname__


class HelpFormatter(simple_parsing.SimpleHelpFormatter):
    """simple_parsing's formatter (``(default: ...)`` after each option's help, descriptions kept
    as written), without a default that says nothing: none (None, a required option, an on/off
    switch such as --resume) or one the help already states."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_ = action.help
        if help_ and (action.required or action.default is None or "(default" in help_
                      or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))):
            return help_
        return super()._get_help_string(action)


class OneLineErrors(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line on stderr, ``PROG: error: MESSAGE
    (PROG --help lists the options)``, with exit status 2 — the form of every other geomsae
    error (argparse would print its usage line first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())} ({self.prog} --help lists the options)\n")


class ArgumentParser(OneLineErrors, simple_parsing.ArgumentParser):
    """A ``simple_parsing.ArgumentParser`` with geomsae's option spelling (see the module doc)
    and one-line usage errors (:class:`OneLineErrors`).

    Two dataclasses in one parser must not share a field name: a clash raises at parse time
    instead of being renamed with a prefix behind the user's back.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("add_option_string_dash_variants", DashVariant.DASH)
        kwargs.setdefault("conflict_resolution", ConflictResolution.NONE)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_arguments(self, dataclass: Any, dest: str, *, prefix: str = "", default: Any = None,
                      dataclass_wrapper_class: type = _Dataclass) -> Any:
        return super().add_arguments(dataclass, dest, prefix=prefix, default=default,
                                     dataclass_wrapper_class=dataclass_wrapper_class)

    def _add_arguments(self, *args: Any, **kwargs: Any) -> Any:
        # also the wrappers simple_parsing makes itself, for the dataclass a subgroup chose
        if kwargs.get("dataclass_wrapper_class", DataclassWrapper) is DataclassWrapper:
            kwargs["dataclass_wrapper_class"] = _Dataclass
        return super()._add_arguments(*args, **kwargs)


def parse_config(cls: type[T], argv: Sequence[str] | None, *, defaults: T | None = None, prog: str | None = None,
                 description: str | None = None,
                 add_extra: Callable[[ArgumentParser], Any] | None = None) -> tuple[T, argparse.Namespace]:
    """Parse the fields of dataclass ``cls`` from ``argv`` (``sys.argv[1:]`` when None).

    Every field becomes an option spelled as in the rest of geomsae (``--kebab-case``,
    ``--flag/--no-flag``, ``none`` for optional values) whose help is the field's docstring.

    :param defaults: an instance of ``cls`` (a preset) whose values become the defaults, shown
        by ``--help``; without it the field defaults of ``cls``.
    :param prog: program name for the usage line and errors, e.g. ``"python -m synthetic.starvation"``.
    :param description: text shown by ``--help`` above the options (kept as written).
    :param add_extra: called with the parser before parsing, to add options that are not
        fields of ``cls`` (e.g. ``p.add_argument("--report-only", action="store_true")``);
        their values land on the returned namespace. The dest ``config`` is taken.
    :returns: ``(cfg, ns)``: the ``cls`` instance, its ``__post_init__`` checks passed, and the
        namespace of the extra options.
    :raises SystemExit: code 0 after ``--help``; code 2 after an argparse error (usage and the
        error) or a failed ``__post_init__`` check (the one line ``PROG: error: MESSAGE``).
    """
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_arguments(cls, dest="config", default=defaults)
    if add_extra is not None:
        add_extra(parser)
    try:
        ns = parser.parse_args(argv)
    except ValueError as exc:  # a __post_init__ check: one line, as the geomsae commands print it
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    cfg = ns.config
    del ns.config
    return cfg, ns


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Map each field of dataclass ``cls`` (and its bases) to its docstring, whitespace collapsed
    (what ``--help`` shows; "" for a field without one)."""
    return {f.name: " ".join((get_attribute_docstring(cls, f.name).docstring_below or "").split())
            for f in dataclasses.fields(cls)}
