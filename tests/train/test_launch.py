"""The launcher's torchrun arguments on this torch and on one whose torchrun lacks --shutdown-timeout.

torch 2.11 (the GPU machine's, the oldest this project runs on) has no such flag: a launcher that always passed
it exited 2 there before a rank started. Its parser is rebuilt here from this torch's by removing the flag, so
the test parses what the launcher would hand that torchrun, with torchrun's own parser.
"""

from __future__ import annotations

import argparse

import pytest
from torch.distributed import run as torchrun

from faceid.train.launch import SHUTDOWN_FLAGS, SHUTDOWN_TIMEOUT_S, knows_shutdown_timeout, torchrun_argv

JOB = ["--standalone", "--nproc_per_node", "2", "train_model.py", "--data", "d", "--epochs", "1"]


def _without_shutdown_timeout() -> argparse.ArgumentParser:
    """This torch's torchrun parser minus --shutdown-timeout: the flags torch 2.11's torchrun accepts here."""
    parser = torchrun.get_args_parser()
    for action in [a for a in parser._actions if set(a.option_strings) & set(SHUTDOWN_FLAGS)]:
        parser._remove_action(action)
        for option in action.option_strings:
            parser._option_string_actions.pop(option)
    return parser


def test_the_shutdown_timeout_is_added_only_where_torchrun_knows_it():
    current = torchrun.get_args_parser()
    if not knows_shutdown_timeout(current):
        pytest.skip("this torch's torchrun has no --shutdown-timeout; the older-torch case below covers it")
    argv = torchrun_argv(list(JOB), current)
    assert argv[:2] == ["--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S)]
    assert current.parse_args(argv).shutdown_timeout == SHUTDOWN_TIMEOUT_S
    # the user's own value wins, in either spelling; the script's flags after its name are not torchrun's
    for given in (["--shutdown-timeout", "30"], ["--shutdown_timeout=30"]):
        assert torchrun_argv([*given, *JOB], current) == [*given, *JOB]
    assert torchrun_argv([*JOB, "--shutdown-timeout", "5"], current)[:2] == ["--shutdown-timeout", "600"]


def test_an_older_torchrun_without_the_flag_gets_arguments_it_parses():
    old = _without_shutdown_timeout()
    assert not knows_shutdown_timeout(old)
    with pytest.raises(SystemExit) as exit_info:  # what the launcher did there before: exit 2 on its own flag
        old.parse_args(["--shutdown-timeout", "600", *JOB])
    assert exit_info.value.code == 2
    argv = torchrun_argv(list(JOB), old)
    assert argv == JOB
    args = old.parse_args(argv)
    assert args.training_script == "train_model.py" and args.training_script_args == ["--data", "d", "--epochs", "1"]
