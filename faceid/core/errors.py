"""User-facing errors and the one wrapper every entry point runs under.

Whatever happens, a command ends in one clear sentence and a defined exit code, never a traceback:

- expected failures (bad input, missing file, corrupt data, no weights, ...) raise `FaceIDError` with the
  sentence; `run_cli` prints it and exits with the error's code (2). The library describes the problem in
  words and names the settings that would fix it (`FaceIDError.settings`); `run_cli` appends the running
  command's flags for them ("(--min-images)"), so no library sentence names a flag;
- argument errors (`ArgumentParser` below) are the same kind of sentence, exit 2;
- a bug (any other exception) is exit 2 too - never 1, which the app reserves for "no match" - with one
  sentence saying so; ``FACEID_DEBUG=1`` prints the traceback instead, for a bug report;
- with ``--json`` on the command line every failure is also one JSON object on stdout
  (``{"ok": false, "error": ..., "exit_code": ...}``), so a script parsing stdout always gets JSON;
- Ctrl-C is exit 130; a closed stdout (``faceid_app.py list | head -0``) ends quietly with 141 (128 + SIGPIPE).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Iterable
from typing import Any, Callable, ClassVar, NoReturn

EXIT_OK = 0
EXIT_ERROR = 2  # bad input, missing file, corrupt data, no weights, ... and bugs
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), the shell convention
EXIT_BROKEN_PIPE = 141  # stdout closed by the reader (128 + SIGPIPE), as a shell pipeline reports it
DEBUG_ENV = "FACEID_DEBUG"


def flag(setting: str) -> str:
    """The command-line flag of a setting, one naming rule for every command: batch_size -> --batch-size."""
    return "--" + setting.replace("_", "-")


class FaceIDError(Exception):
    """An expected failure with a message written for the user (one sentence, says what to do).

    `settings` name what the user can change to fix it, by the option's destination ("min_images", also
    TrainConfig's field names); the message says it in words, and `with_flags` adds the running command's
    flags. So the library never writes a flag, and a command without one of them (the app has no
    --from-scratch) does not advertise it. `details` are extra fields for the ``--json`` error object."""

    def __init__(self, message: str, *settings: str, exit_code: int = EXIT_ERROR):
        super().__init__(message)
        self.settings = settings
        self.exit_code = exit_code
        self.details: dict = {}

    def with_flags(self, known: Iterable[str]) -> str:
        """The message with "(--a, --b)" before its final full stop, for the settings whose flag is in `known`."""
        known = set(known)
        flags = [flag(s) for s in self.settings if flag(s) in known]
        if not flags:
            return str(self)
        return f"{str(self).rstrip('.')} ({', '.join(flags)})."


class ArgumentParser(argparse.ArgumentParser):
    """argparse, except that a bad argument raises FaceIDError (one sentence, exit 2, JSON under --json)
    instead of printing the usage block and exiting on its own, and that the flags it parsed are remembered
    for `FaceIDError.with_flags` (a process runs one command; a subcommand's parser adds its own)."""

    parsed_flags: ClassVar[set[str]] = set()

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        # argparse keeps every option string (groups' included) in this mapping; it is only read here
        ArgumentParser.parsed_flags.update(s for s in self._option_string_actions if s.startswith("--"))
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        raise FaceIDError(f"{message[:1].upper()}{message[1:]} (see {self.prog} --help).")


def positive_int(text: str) -> int:
    """An argparse type for counts (workers, pixels, ...): a whole number of at least 1; anything else becomes the
    parser's one-sentence error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def describe_unexpected(err: BaseException) -> str:
    """The one sentence for a bug: what was raised, and how to get the traceback for a report."""
    detail = " ".join(str(err).split())[:200]
    return (
        f"Unexpected internal error ({type(err).__name__}{': ' + detail if detail else ''}); this is a bug - "
        f"rerun with {DEBUG_ENV}=1 to see the traceback and report it."
    )


TORCH_MODULES = ("torch", "torchvision", "facenet_pytorch")  # what the slim install (requirements-onnx.txt) lacks


def run_cli(main: Callable[[], int | None], argv: list[str] | None = None) -> NoReturn:
    """Run `main()` and exit with its code, turning every failure into one sentence (see module docstring).

    `argv` (default: sys.argv[1:]) is only looked at for --json: argument errors need it before parsing ends."""
    want_json = "--json" in (sys.argv[1:] if argv is None else argv)
    try:
        code = main()
        sys.stdout.flush()
    except FaceIDError as err:
        _fail(err.with_flags(ArgumentParser.parsed_flags), err.exit_code, want_json, err.details)
    except KeyboardInterrupt:
        if want_json:
            _fail("Interrupted.", EXIT_INTERRUPTED, want_json, {})
        print("\ninterrupted", file=sys.stderr)
        _exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        _quiet_broken_pipe()
    except SystemExit:
        raise
    except ImportError as err:  # the slim install (no torch) running a command that needs torch
        missing = (err.name or "").partition(".")[0]
        if missing not in TORCH_MODULES:
            if debug_enabled():
                traceback.print_exc()
            _fail(describe_unexpected(err), EXIT_ERROR, want_json, {})
        _fail(
            f"{missing} is not installed, and this needs it: without torch, faceid recognises faces only with an "
            f"exported model (--model FILE.onnx); install requirements.txt for training, export and the torch "
            f"runtime (docs/install.md).",
            EXIT_ERROR,
            want_json,
            {},
        )
    except Exception as err:  # a bug: still one sentence and exit 2 (never 1, which means "no match")
        if debug_enabled():
            traceback.print_exc()
        _fail(describe_unexpected(err), EXIT_ERROR, want_json, {})
    _exit(code or EXIT_OK)


def _fail(message: str, code: int, want_json: bool, details: dict) -> NoReturn:
    try:
        if want_json:
            print(json.dumps({**details, "ok": False, "error": message, "exit_code": code}, ensure_ascii=False))
            sys.stdout.flush()
        print(f"error: {message}", file=sys.stderr)
    except BrokenPipeError:
        _quiet_broken_pipe()
    _exit(code)


def _exit(code: int) -> NoReturn:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
    sys.exit(code)


def _quiet_broken_pipe() -> NoReturn:
    """The reader went away: say nothing more, and stop Python's exit-time flush from raising again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    sys.exit(EXIT_BROKEN_PIPE)
