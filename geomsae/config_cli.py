"""Dataclass configs that drive both the Python API and the command line.

A config is a plain dataclass whose fields each carry a docstring (a string literal on
the line after the field, as in sparsify / simple_parsing). :func:`add_dataclass_args`
turns the fields into ``--kebab-case`` options whose ``--help`` text is that docstring,
and :func:`from_args` builds the dataclass back from the parsed namespace, so the
dataclass's ``__post_init__`` checks run for CLI and API users alike.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import lru_cache
from typing import Any


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


def _parse_optional(conv: Any) -> Any:
    def parse(s: str) -> Any:
        return None if s.lower() in {"none", "null", ""} else conv(s)

    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


def add_dataclass_args(
    parser: argparse.ArgumentParser, cls: type, *, exclude: tuple[str, ...] = (), prefix: str = ""
) -> None:
    """Add one ``--option`` per field of ``cls`` to ``parser`` (help = field docstring)."""
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
            group.add_argument(flag, type=_parse_optional(tp) if optional else tp, **kw)
        elif typing.get_origin(tp) is typing.Literal:
            group.add_argument(flag, choices=list(typing.get_args(tp)), **kw)
        else:
            group.add_argument(flag, type=str, **kw)


def from_args(cls: type, ns: argparse.Namespace, *, prefix: str = "", **overrides: Any) -> Any:
    """Build ``cls`` from a namespace filled by :func:`add_dataclass_args`."""
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
