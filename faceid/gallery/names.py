"""People's names: which are allowed, how `list` shows them, and the form they are looked up in.

Any script and emoji are allowed. The rules exist so that a name never garbles a terminal or a log, and so
that two registered people never look the same in `list`. The name is only ever data: paths use ids.
"""

from __future__ import annotations

import unicodedata

from .records import GalleryError

MAX_NAME_LEN = 100
# Letters that render as blank space (Hangul fillers, braille blank, ...): no different from an empty cell.
INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e\u034f")


def _invisible(name: str, i: int) -> bool:
    """Would character i of `name` be invisible, or reorder what follows, so that two names look the same?

    Format characters (zero-width spaces, bidirectional overrides and isolates, LRM/RLM, BOM, soft hyphen),
    fillers that render blank, a variation selector after anything but a symbol, and spaces other than
    U+0020 are. Two joiners keep a real job: ZWJ inside an
    emoji sequence (a symbol on both sides, e.g. a family emoji) and ZWNJ between letters of scripts that
    use it (Persian, Indic); there they are allowed."""
    c = name[i]
    cat = unicodedata.category(c)
    before = unicodedata.category(name[i - 1]) if i > 0 else ""
    after = unicodedata.category(name[i + 1]) if i + 1 < len(name) else ""
    if c == "\u200d":
        return not ((before == "So" or name[i - 1] == "\ufe0f") and after == "So")
    if c == "\u200c":
        return not (before in ("Lo", "Mn", "Mc") and after in ("Lo", "Mn", "Mc"))
    if "\ufe00" <= c <= "\ufe0f":  # variation selectors: only meaningful after a symbol (emoji style)
        return before != "So"
    if cat == "Zs":
        return c != " "
    return cat == "Cf" or c in INVISIBLE_LETTERS


def display_name(name: str) -> str:
    """`name` as `list` shows it: invisible characters (see `_invisible`) written as \\uXXXX escapes, so a name
    registered before they were refused never looks like another person's."""
    return "".join(f"\\u{ord(c):04x}" if _invisible(name, i) else c for i, c in enumerate(name))


def validate_name(name: str, new: bool = True) -> str:
    """Return the canonical form of a person's name (NFC, stripped) or raise GalleryError saying why.

    Any script and emoji are allowed; control characters and line separators (they garble terminals and
    logs) are not, and a `new` name (registration, import) may not contain invisible or bidirectional-control
    characters either (`_invisible`): two people must never look the same in `list`. Looking up an existing
    name (new=False) allows them, so someone registered before this rule can still be verified or deleted.
    The name is only ever data: paths use ids.
    """
    if not isinstance(name, str):
        raise GalleryError(f"A name must be text, not {type(name).__name__}.")
    canon = unicodedata.normalize("NFC", name).strip()
    if not canon:
        raise GalleryError("The name is empty; give the person a name.")
    if len(canon) > MAX_NAME_LEN:
        raise GalleryError(f"The name is {len(canon)} characters long; use at most {MAX_NAME_LEN}.")
    bad = [c for c in canon if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")]
    if bad:
        raise GalleryError(f"The name contains a control character ({ascii(bad[0])}); use printable characters only.")
    hidden = [c for i, c in enumerate(canon) if _invisible(canon, i)] if new else []
    if hidden:
        raise GalleryError(
            f"The name contains an invisible or text-direction character (U+{ord(hidden[0]):04X} "
            f"{unicodedata.name(hidden[0], 'unnamed')}), so it could look exactly like another "
            f"name; type it without that character."
        )
    return canon


def lookup_key(name: str) -> str:
    """The form names are stored in, for lookups: no validation (an invalid name simply isn't found)."""
    return unicodedata.normalize("NFC", name).strip()
