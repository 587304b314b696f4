"""Config dataclasses drive the CLI (CleanRL style).

Write a config as a dataclass with a docstring under each field::

    @dataclass
    class TrainVAEConfig:
        data_dir: str = "runs/carracing/episodes"
        \"\"\"Folder of episode .npz files written by `wmkit worldmodels collect`.\"\"\"
        epochs: int = 1
        \"\"\"Passes over the data (the paper uses 1).\"\"\"

``parse_config(TrainVAEConfig, argv)`` builds an argparse parser whose ``--help`` shows those docstrings,
parses ``argv`` and returns a filled dataclass. ``field_docs(cls)`` returns the docstrings (the book
uses it to render config tables), ``to_dict``/``from_dict`` round-trip a config through JSON.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Map each field of dataclass ``cls`` (and its bases) to the docstring written under it."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def _resolve(tp: Any) -> tuple[Any, bool]:
    """Strip Optional[...]; return (base type, optional?)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _str2bool(s: str) -> bool:
    v = s.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {s!r}")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--field-name`` option per dataclass field, with the field's docstring as help."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, optional = _resolve(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        help_text = (docs.get(f.name, "") + f" (default: {default!r})").replace("%", "%%")
        kwargs: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs.update(type=_str2bool, metavar="BOOL", nargs="?", const=True)
        elif origin is typing.Literal:
            choices = typing.get_args(tp)
            kwargs.update(type=type(choices[0]), choices=choices)
        elif origin in (list, tuple):
            (inner, *_) = typing.get_args(tp) or (str,)
            kwargs.update(type=inner, nargs="+")
        elif tp in (int, float, str):
            kwargs.update(type=tp)
        else:
            raise TypeError(f"config field {cls.__name__}.{f.name} has unsupported type {tp!r}")
        if optional:
            base = kwargs["type"]
            kwargs["type"] = lambda s, base=base: None if s.lower() == "none" else base(s)
        parser.add_argument(flag, **kwargs)


def parse_config(cls: type[T], argv: list[str] | None = None, prog: str | None = None,
                 description: str | None = None, **overrides: Any) -> T:
    """Parse ``argv`` into a ``cls`` instance. Unknown flags raise a clear argparse error."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description or inspect.cleandoc(cls.__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, cls)
    ns = parser.parse_args(argv)
    return from_dict(cls, {**overrides, **vars(ns)})


def to_dict(cfg: Any) -> dict:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict) -> T:
    """Rebuild a config; unknown keys raise (a typo in a saved config must not pass silently)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
    hints = typing.get_type_hints(cls)
    fixed = {}
    for k, v in data.items():
        tp, _ = _resolve(hints[k])
        fixed[k] = tuple(v) if typing.get_origin(tp) is tuple and isinstance(v, list) else v
    return cls(**fixed)
