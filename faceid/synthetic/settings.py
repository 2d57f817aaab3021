"""Settings of the GAN and detector runs: each declared once as a dataclass field (default, help, check), from
which its command-line flag, its ``--help`` line and its checkpoint record follow.

A checkpoint stores its run's settings as a plain dict; `from_dict` checks every value's type and range, so
a damaged or hand-edited file is one sentence, never a crash deep in a run.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, asdict, field, fields
from typing import Any, Callable

from ..core.errors import FaceIDError, flag


def option(
    default: Any,
    help: str,
    choices: tuple | None = None,
    valid: tuple[Callable[[Any], bool], str] | None = None,
    shown: str | None = None,
) -> Any:
    """A settings field; `shown` describes a default decided at run time (a None default)."""
    return field(default=default, metadata={"help": help, "choices": choices, "valid": valid, "shown": shown})


def positive(value: Any) -> bool:
    return value > 0


def _base_type(cls, name: str) -> type:
    hint = typing.get_type_hints(cls)[name]
    if typing.get_origin(hint) is list:
        return list
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    return list if typing.get_origin(base) is list else base


def add_flags(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of the settings class `cls` (absent flags stay out of the namespace)."""
    for f in fields(cls):
        if f.name in skip:
            continue
        base = _base_type(cls, f.name)
        shown = f.metadata["shown"] or ("none" if f.default is None else str(f.default))
        kwargs: dict = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": f"{f.metadata['help']} (default: {shown})",
        }
        kwargs["help"] = kwargs["help"].replace("%", "%%")
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif base is list:
            kwargs["action"] = "append"
            kwargs["metavar"] = f.name.upper()
        else:
            kwargs["type"] = base
            if f.metadata["choices"]:
                kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(flag(f.name), **kwargs)


def build(cls, values: dict[str, Any], where: str = "the settings"):
    """An instance of `cls` from a plain dict, every value checked (unknown keys are an error)."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise FaceIDError(f"{where}: unknown setting(s) {', '.join(unknown)}.")
    for name, value in values.items():
        f = known[name]
        if value is None:
            if f.default is not None and f.default is not MISSING:
                raise FaceIDError(f"{where}: setting {name} must not be empty.", name)
            continue
        base = _base_type(cls, name)
        ok = isinstance(value, base) and not (base is not bool and isinstance(value, bool))
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            values = {**values, name: float(value)}
            ok = True
        if base is list:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if not ok:
            raise FaceIDError(f"{where}: setting {name} is {value!r}, not a {base.__name__}.", name)
        if f.metadata["choices"] and value not in f.metadata["choices"]:
            raise FaceIDError(
                f"{where}: setting {name} is {value!r}; choose one of {', '.join(map(str, f.metadata['choices']))}.",
                name,
            )
        valid = f.metadata["valid"]
        if valid is not None and not valid[0](value):
            raise FaceIDError(f"{where}: setting {name} is {value!r}; it must be {valid[1]}.", name)
    return cls(**values)


def to_dict(settings) -> dict[str, Any]:
    return asdict(settings)
