"""torchrun with an ending a job script can use: ``python -m faceid.train.launch [torchrun flags] train_model.py ...``.

Same flags and behaviour as torchrun (it runs torch.distributed.run), except:
- on SIGINT / SIGTERM the ranks save a resumable checkpoint and the launcher exits 130 / 143 quietly, where
  torchrun prints a traceback and exits 1 (rank 0 has printed the one "Resume with: ..." line);
- when a rank fails, the launcher exits with that rank's code (2 for a bad flag or file: the rank printed
  the sentence) instead of torchrun's exit 1 and error report;
- ranks get 10 minutes (not 30 s) to write their checkpoint after a signal before they are killed
  (``--shutdown-timeout`` still wins; torch releases whose torchrun lacks that flag keep their own timeout).
"""

from __future__ import annotations

import argparse
import logging
import sys

SHUTDOWN_TIMEOUT_S = 600
SHUTDOWN_FLAGS = ("--shutdown-timeout", "--shutdown_timeout")


def knows_shutdown_timeout(parser: argparse.ArgumentParser) -> bool:
    """Whether this torch's torchrun has --shutdown-timeout (newer releases); older ones (torch 2.11, the GPU
    machine's) exit 2 on the unknown flag, so it is passed only where it exists."""
    return any(option in SHUTDOWN_FLAGS for action in parser._actions for option in action.option_strings)


def torchrun_argv(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """The launcher's arguments with the 10-minute shutdown timeout added, unless the user gave one (before the
    script's name: after it, the flags are the script's) or this torchrun (`parser`) does not know the flag."""
    flags = argv[: next((i for i, a in enumerate(argv) if a.endswith(".py")), len(argv))]
    given = any(a.split("=")[0] in SHUTDOWN_FLAGS for a in flags)
    if not given and knows_shutdown_timeout(parser):
        return ["--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S), *argv]
    return argv


def main(argv: list[str] | None = None) -> int:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    argv = torchrun_argv(list(sys.argv[1:] if argv is None else argv), torchrun.get_args_parser())
    # torchrun's warnings about forwarding the signal and its failure report repeat what the ranks said.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR + 1)
    try:
        torchrun.run(torchrun.parse_args(argv))
    except SignalException as err:
        return 128 + int(err.sigval)
    except ChildFailedError as err:
        codes = [f.exitcode for _, f in sorted(err.failures.items())]
        return next((c for c in codes if c > 0), 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
