"""torchrun with an ending a job script can use: ``python -m faceid.train.launch [torchrun flags] train_model.py ...``.

Same flags and behaviour as torchrun (it runs torch.distributed.run), except:
- on SIGINT / SIGTERM the ranks save a resumable checkpoint and the launcher exits 130 / 143 quietly, where
  torchrun prints a traceback and exits 1 (rank 0 has printed the one "Resume with: ..." line);
- when a rank fails, the launcher exits with that rank's code (2 for a bad flag or file: the rank printed
  the sentence) instead of torchrun's exit 1 and error report;
- ranks get 10 minutes (not 30 s) to write their checkpoint after a signal before they are killed
  (``--shutdown-timeout`` still wins).
"""

from __future__ import annotations

import logging
import sys

SHUTDOWN_TIMEOUT_S = 600


def main(argv: list[str] | None = None) -> int:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    argv = list(sys.argv[1:] if argv is None else argv)
    flags = argv[: next((i for i, a in enumerate(argv) if a.endswith(".py")), len(argv))]
    if not any(a.split("=")[0] in ("--shutdown-timeout", "--shutdown_timeout") for a in flags):
        argv = ["--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S), *argv]
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
