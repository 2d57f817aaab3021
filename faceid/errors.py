"""User-facing errors and the one wrapper every entry point runs under.

Bad input must end in one clear sentence and a non-zero exit, never a traceback. Code raises
`FaceIDError` with that sentence; `run_cli` prints it and exits with the error's code.
"""

from __future__ import annotations

import sys
from typing import Callable

EXIT_OK = 0
EXIT_ERROR = 2          # bad input, missing file, corrupt data, no weights, ...
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), the shell convention


class FaceIDError(Exception):
    """An expected failure with a message written for the user (one sentence, says what to do)."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR):
        super().__init__(message)
        self.exit_code = exit_code


def run_cli(main: Callable[[], int | None]) -> None:
    """Run `main()` and exit: FaceIDError -> its message on stderr; Ctrl-C -> exit 130 quietly."""
    try:
        code = main()
    except FaceIDError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code or EXIT_OK)
