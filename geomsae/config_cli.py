"""Dataclass configs that drive both the Python API and the command line, through simple_parsing.

A config is a plain dataclass whose fields each carry a docstring (a string literal on the
line after the field, as in sparsify). `simple_parsing <https://github.com/lebrice/SimpleParsing>`_
turns the fields into options whose ``--help`` text is that docstring and builds the
dataclass back from the command line, so its ``__post_init__`` checks run for CLI and API
users alike. :class:`ArgumentParser` fixes the spelling shared by every geomsae command
line: ``--kebab-case`` flags (``--k``, never ``-k``), booleans as ``--flag/--no-flag``,
``none`` for an optional value, ``%`` in a docstring printed as is.
:func:`parse_config` is the one-call form for experiment runners.

:func:`add_dataclass_args` and :func:`from_args` are the hand-written argparse layer this
module replaced; they stay only until the experiment runners that still call them move to
:func:`parse_config`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, TypeVar

import simple_parsing
from simple_parsing import ConflictResolution, DashVariant
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


class ArgumentParser(simple_parsing.ArgumentParser):
    """A ``simple_parsing.ArgumentParser`` with geomsae's option spelling (see the module doc).

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


# ------------------------------------------------------------- legacy (argparse by hand)
@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Map each field of dataclass ``cls`` (and its bases) to its docstring."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            src = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(src).body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:] + [None]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _base_type(tp: Any) -> tuple[Any, bool]:
    """Strip ``Optional``; return (type, optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def add_dataclass_args(
    parser: argparse.ArgumentParser, cls: type, *, exclude: tuple[str, ...] = (), prefix: str = ""
) -> None:
    """Legacy (use :func:`parse_config`): one ``--option`` per field of ``cls`` (help = field docstring)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        tp, optional = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        flag = "--" + prefix + f.name.replace("_", "-")
        help_ = (docs.get(f.name, "") + f" (default: {default!r})").replace("%", "%%")  # argparse formats help with %
        kw: dict[str, Any] = dict(dest=prefix.replace("-", "_") + f.name, default=default, help=help_)
        origin = typing.get_origin(tp)
        if tp is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif origin in (tuple, list):
            inner = typing.get_args(tp)[0]
            group.add_argument(flag, nargs="+", type=inner, **kw)
        elif tp in (int, float, str):
            group.add_argument(flag, type=_parse_none_or(tp) if optional else tp, **kw)
        elif typing.get_origin(tp) is typing.Literal:
            group.add_argument(flag, choices=list(typing.get_args(tp)), **kw)
        else:
            group.add_argument(flag, type=str, **kw)


def from_args(cls: type, ns: argparse.Namespace, *, prefix: str = "", **overrides: Any) -> Any:
    """Legacy (use :func:`parse_config`): build ``cls`` from a namespace filled by :func:`add_dataclass_args`."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = prefix.replace("-", "_") + f.name
        if f.init and hasattr(ns, key):
            val = getattr(ns, key)
            tp, _ = _base_type(hints[f.name])
            if typing.get_origin(tp) is tuple and isinstance(val, list):
                val = tuple(val)
            kwargs[f.name] = val
    kwargs.update(overrides)
    return cls(**kwargs)
