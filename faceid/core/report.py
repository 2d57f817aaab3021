"""How the program talks to the user, apart from its result: one small reporter on stderr.

A command prints its result (the decision, the report summary, JSON) on stdout. Everything else goes through
here, to stderr, so ``--json`` output stays one parseable object and a pipe gets only the answer:

- `note`: what the user should see while they wait ("model: ...", "sample 2/5 ok"); off with ``--quiet``;
- `detail`: what only a curious user wants (``--verbose``);
- `warn`: something the user must know even with ``--quiet`` (a file made private, a cache not saved);
- `progress`: a tqdm bar over a loop the user waits for; off with ``--quiet``.

Library code never prints, logs or opens a bar of its own. `command` names a script as the user runs it: the
console command (``faceid reenroll``) when they ran one, the script (``faceid_app.py reenroll``) otherwise.
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

QUIET, NORMAL, VERBOSE = 0, 1, 2
# script -> console command (pyproject.toml [project.scripts]; faceid/cli.py runs each)
CONSOLE_COMMANDS = {
    "faceid_app.py": "faceid",
    "train_model.py": "faceid-train",
    "continue_training.py": "faceid-continue",
    "evaluate_model.py": "faceid-eval",
    "export_model.py": "faceid-export",
    "download_dataset.py": "faceid-download",
    "preprocess_dataset.py": "faceid-unpack",
    "train_gan.py": "faceid-train-gan",
    "generate_faces.py": "faceid-generate",
    "train_detector.py": "faceid-train-detector",
}

T = TypeVar("T")
_level = NORMAL


def set_verbosity(quiet: bool = False, verbose: bool = False) -> None:
    """The process's verbosity, from a command's --quiet / --verbose (quiet wins)."""
    global _level
    _level = QUIET if quiet else VERBOSE if verbose else NORMAL


def verbosity() -> int:
    return _level


def add_verbosity_options(parser: argparse._ActionsContainer, default: Any = False) -> None:
    """--quiet and --verbose (`default`: argparse.SUPPRESS on the app's subcommands, see app/cli.py)."""
    parser.add_argument(
        "--quiet", action="store_true", default=default, help="no notes or progress bars on stderr (default: off)"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=default,
        help="more detail on stderr, e.g. every rejected frame (default: off)",
    )


def _write(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)  # through tqdm, so a bar that is running stays intact
    sys.stderr.flush()


def note(message: str) -> None:
    if _level >= NORMAL:
        _write(message)


def detail(message: str) -> None:
    if _level >= VERBOSE:
        _write(message)


def warn(message: str) -> None:
    _write(message)


def progress(items: Iterable[Any] | None = None, *, enabled: bool = True, **bar: Any) -> Any:
    """A tqdm bar on stderr (tqdm's own arguments: total, desc, unit, ...), silent when `enabled` is False or
    the process is quiet. Iterate it, or use it as a context manager and call update()."""
    from tqdm import tqdm

    bar.setdefault("dynamic_ncols", True)
    return tqdm(items, disable=not enabled or _level < NORMAL, file=sys.stderr, **bar)


def count(n: int, unit: str, plural: str | None = None) -> str:
    """ "1 sample", "2 samples", "1 person", "3,000 people": a number with its unit in the right number."""
    return f"{n:,} {unit if n == 1 else plural or unit + 's'}"


def printable(text: str) -> str:
    """Text that came from a file or a file's name, safe to print or store: control and format characters
    (escape sequences, a carriage return that hides what came before, text-direction marks) written as \\xNN /
    \\uXXXX escapes."""
    return "".join(
        c if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Zl", "Zp") else ascii(c)[1:-1] for c in str(text)
    )


def invocation(script: str) -> str:
    """The whole command that runs `script`: "faceid-unpack" for a console-command user, else "python SCRIPT"."""
    name = command(script)
    return name if name != script else f"python {script}"


def command(script: str) -> str:
    """`script` ("faceid_app.py") as the user runs it in this process: its console command ("faceid") when this
    process was started as one, else the script itself."""
    started_as = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return CONSOLE_COMMANDS.get(script, script) if started_as in CONSOLE_COMMANDS.values() else script
