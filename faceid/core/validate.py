"""The one place where values read from files are checked before anyone uses or prints them.

Calibration tables (JSON files, or inside a checkpoint), checkpoint fields and ONNX metadata are files a user
hands us, so each number in them is hostile until checked here:

- types are exact: a count is an ``int`` (never ``True``, never ``1e9``), a rate or a cosine a finite ``int`` or
  ``float`` (never NaN or Infinity: JSON's ``NaN`` / ``Infinity`` are refused while parsing);
- every number is bounded to what its format can mean (a cosine in [-1, 1], a count below a sane maximum, a
  version this code knows);
- nesting is bounded (`MAX_DEPTH`): a 200,000-deep JSON array is one sentence, never a RecursionError;
- text is cleaned before it is kept (`clean_text`): terminal escape sequences (``ESC[2J``, colours), carriage
  returns and every other control or invisible formatting character are removed and the text is cut to a sane
  length, so nothing read from a file can clear the screen or forge a line in the decision, `list`, a note or JSON.

Each failure is one `FaceIDError` sentence naming the file and the field: ``<where>: field 'samples' is 1e+09;
expected a whole number from 1 to 1,000.`` (`Fields` builds them). Readers call these; none keeps its own copy.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import FaceIDError

MAX_DEPTH = 32  # nesting of lists/dicts any of our files needs (a checkpoint's optimizer state: < 10)
MAX_TEXT = 200  # characters of a text field kept (a table's source, a model's name): enough to say what it is
MAX_LIST = 100_000  # entries of one numeric list (a table keeps a few thousand)
COSINE_SLACK = 1e-5  # float32 rounding of a dot product of unit vectors stays far below this

_ESCAPE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, ESC[2J
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|\x1b[P^_X][^\x1b]*(?:\x1b\\)?"  # DCS, PM, APC, SOS strings
    r"|\x1b[@-Z\\-_]"  # two-character escapes
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)


def clean_text(text: str, limit: int = MAX_TEXT) -> str:
    """`text` safe to print: escape sequences removed, whitespace controls (\\r, \\n, \\t) turned into spaces,
    every other control, invisible formatting (bidirectional overrides, zero-width) and unpaired surrogate
    character removed, runs of spaces collapsed, and cut to `limit` characters (ending in "...")."""
    text = _ESCAPE.sub("", text[: limit * 8])  # what lies beyond is never shown: cut before the regex
    kept = []
    for c in text:
        cat = unicodedata.category(c)
        if c in "\t\n\r\x0b\x0c\x85\u2028\u2029":
            kept.append(" ")
        elif cat not in ("Cc", "Cf", "Cs", "Co", "Cn"):
            kept.append(c)
    out = " ".join("".join(kept).split())
    return out if len(out) <= limit else out[: limit - 3].rstrip() + "..."


def shown(value: Any, limit: int = 60) -> str:
    """A value as an error sentence may quote it: short, cleaned, never a repr of a huge or deep structure."""
    if isinstance(value, (bool, int, float)) or value is None:
        # str() of a huge int is slow, and refused past 4,300 digits
        big = isinstance(value, int) and abs(value) >= 10**30
        text = f"a {int(value or 0).bit_length()}-bit number" if big else repr(value)
    elif isinstance(value, str):
        text = repr(clean_text(value, limit))
    elif isinstance(value, (list, tuple, dict)):
        text = f"a {type(value).__name__} of {len(value):,} entries"
    else:
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit + 2 else text[:limit] + "..."


def is_whole(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def depth_of(obj: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of lists, tuples and dicts in `obj`, counted without recursion; stops past `limit`."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple, dict)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def check_depth(obj: Any, where: str, limit: int = MAX_DEPTH) -> None:
    """One sentence when `obj` nests deeper than `limit` (a file built to exhaust the stack of whoever walks it)."""
    if depth_of(obj, limit) > limit:
        raise FaceIDError(
            f"{where} nests its data more than {limit} levels deep; no file of ours does, so it is not one."
        )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def load_json(text: str | bytes, where: str, limit: int = MAX_DEPTH) -> Any:
    """Parse JSON text that came from a file: NaN/Infinity refused, nesting bounded; one sentence if it fails."""
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise FaceIDError(
            f"{where} nests its data more than {limit} levels deep; no file of ours does, so it is not one."
        ) from None
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError; so are NaN and huge ints
        detail = (
            "it holds NaN or Infinity, which are not numbers"
            if "not a number" in str(err)
            else "it holds a number of thousands of digits"
            if "digits" in str(err)
            else "not JSON"
        )
        raise FaceIDError(f"{where} is unreadable ({detail}).") from None
    check_depth(data, where, limit)
    return data


_MISSING: Any = object()


class Fields:
    """Typed reads of one decoded dict read from a file, each failure one sentence:
    ``<where>: field '<prefix><key>' is <value>; expected <what>.``"""

    def __init__(self, data: Any, where: str, prefix: str = ""):
        if not isinstance(data, Mapping):
            raise FaceIDError(
                f"{where}: {prefix.rstrip('.') or 'the data'} is {shown(data)}; expected a mapping of named fields."
            )
        self.data, self.where, self.prefix = data, where, prefix

    def error(self, key: str, value: Any, expected: str) -> FaceIDError:
        return FaceIDError(f"{self.where}: field {self.prefix + key!r} is {shown(value)}; expected {expected}.")

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise FaceIDError(f"{self.where}: field {self.prefix + key!r} is missing.")
        return default

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def whole(self, key: str, low: int, high: int, default: Any = _MISSING) -> int:
        """An int in [low, high] (a bool, a float such as 1e9, or a number out of range is refused)."""
        value = self.get(key, default)
        if not is_whole(value) or not low <= value <= high:
            raise self.error(key, value, f"a whole number from {low:,} to {high:,}")
        return int(value)

    def real(
        self, key: str, low: float, high: float, default: Any = _MISSING, what: str = "a number", expected: str = ""
    ) -> float:
        """A finite number in [low, high] (`expected`: the words for it, else "<what> from <low> to <high>")."""
        value = self.get(key, default)
        if not is_real(value) or not low <= value <= high:
            raise self.error(key, value, expected or f"{what} from {low:g} to {high:g}")
        return float(value)

    def cosine(self, key: str, default: Any = _MISSING) -> float:
        return self.real(key, -1.0, 1.0, default, what="a cosine")

    def flag(self, key: str, default: Any = _MISSING) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, value, "true or false")
        return value

    def text(self, key: str, limit: int = MAX_TEXT, default: Any = _MISSING) -> str:
        """A string, cleaned for printing and cut to `limit` characters (`clean_text`)."""
        value = self.get(key, default)
        if not isinstance(value, str):
            raise self.error(key, value, "text")
        return clean_text(value, limit)

    def choice(self, key: str, options: tuple[str, ...] | Mapping[str, Any], default: Any = _MISSING) -> str:
        value = self.get(key, default)
        if not isinstance(value, str) or value not in options:
            raise self.error(key, value, f"one of {', '.join(sorted(options))}")
        return value

    def sub(self, key: str, default: Any = _MISSING) -> Fields:
        """A nested dict, read the same way (its fields named "key.field")."""
        value = self.get(key, default)
        if not isinstance(value, Mapping):
            raise self.error(key, value, "a mapping of named fields")
        return Fields(value, self.where, f"{self.prefix}{key}.")

    def items(self, key: str, limit: int, default: Any = _MISSING) -> list:
        """A list of at most `limit` entries."""
        value = self.get(key, default)
        if not isinstance(value, (list, tuple)) or len(value) > limit:
            raise self.error(key, value, f"a list of at most {limit:,} entries")
        return list(value)

    def reals(self, key: str, low: float, high: float, limit: int = MAX_LIST, what: str = "numbers") -> np.ndarray:
        """A list of finite numbers in [low, high] -> float64 array."""
        value = self.items(key, limit)
        if not all(is_real(v) for v in value) or (value and not low <= min(value) <= max(value) <= high):
            bad = next((v for v in value if not (is_real(v) and low <= v <= high)), None)
            raise self.error(key, value, f"{what} from {low:g} to {high:g} (one is {shown(bad)})")
        return np.asarray(value, dtype=np.float64).reshape(-1)

    def cosines(self, key: str, limit: int = MAX_LIST) -> np.ndarray:
        """A list of cosines: in [-1, 1] up to float32 rounding (`COSINE_SLACK`), clipped to it."""
        return np.clip(self.reals(key, -1 - COSINE_SLACK, 1 + COSINE_SLACK, limit, "cosines"), -1.0, 1.0)

    def wholes(self, key: str, low: int, high: int, limit: int = MAX_LIST) -> np.ndarray:
        """A list of ints in [low, high] -> int64 array (bounds checked before numpy sees them)."""
        value = self.items(key, limit)
        if not all(is_whole(v) for v in value) or (value and not low <= min(value) <= max(value) <= high):
            bad = next((v for v in value if not (is_whole(v) and low <= v <= high)), None)
            raise self.error(key, value, f"whole numbers from {low:,} to {high:,} (one is {shown(bad)})")
        return np.asarray(value, dtype=np.int64).reshape(-1)
