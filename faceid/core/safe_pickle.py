"""The one way this project reads a pickle: an unpickler that resolves only the globals a caller lists.

Two file formats a user hands us are pickles: the seed app's ``face_embeddings.pkl`` ({name: numpy array}) and
insightface's verification ``.bin`` ((list of JPEG bytes, list of bool)). A pickle can name any function
(``os.system``, ``eval``) and have it called while loading, so every global it refers to is checked against an
allow-list first and anything else is refused before it can run. With the empty list only plain containers,
strings, bytes, numbers and booleans can be built.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

# What a pickled numpy array needs (numpy 1 and numpy 2 spell the module differently).
NUMPY_ARRAYS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles spell bytes (str -> bytes, no code runs)
    }
)


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle refers to a global that is not on the allow-list (str(err) is "module.name")."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], allowed: frozenset[tuple[str, str]], encoding: str):
        super().__init__(file, encoding=encoding)
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise ForbiddenGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def restricted_load(file: IO[bytes], allowed: frozenset[tuple[str, str]] = frozenset(), encoding: str = "ASCII") -> Any:
    """Unpickle one object from `file`, resolving only the (module, name) globals in `allowed`.

    Raises ForbiddenGlobal for any other global; a damaged pickle raises what pickle raises (EOFError,
    UnpicklingError, ValueError, ...), for the caller to put into its own sentence. `encoding` is pickle's
    (``"bytes"`` keeps Python 2 strings as bytes, as insightface's .bin files need)."""
    return _RestrictedUnpickler(file, allowed, encoding).load()
