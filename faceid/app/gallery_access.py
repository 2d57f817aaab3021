"""The app's one door into the gallery package: every gallery name the app uses is imported here, so a name
that moves inside `faceid.gallery` changes one line of the app. The gallery imports no torch, and neither does
this module (``list`` and ``delete`` stay torch-free)."""

from __future__ import annotations

from ..gallery.names import display_name, validate_name
from ..gallery.records import Match, Person
from ..gallery.seed import load_seed_pickle
from ..gallery.store import Gallery

__all__ = ["Gallery", "Match", "Person", "clean_name", "display_name", "load_seed_pickle"]


def clean_name(raw: str | None, new: bool = False) -> str:
    """A person's name as the gallery stores it (NFC, trimmed); its rules: not empty, no control characters,
    and for a `new` name (register) no invisible or text-direction characters (`gallery.names.validate_name`).

    Names are only data - the gallery keys files by id - so quotes, slashes and any script are allowed."""
    return validate_name(raw if raw is not None else "", new=new)
