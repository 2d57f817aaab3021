"""The recipe's process-level parts: device choice, the stop flag's signals and exit codes, determinism."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from faceid.core.device import cuda_problem, describe_device, resolve_device
from faceid.core.errors import FaceIDError
from faceid.train.recipe import StopFlag, set_determinism


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "mps", ""):
        with pytest.raises(FaceIDError, match="Unknown device"):
            resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_an_error_not_a_cpu_run():
    for name in ("cuda", "cuda:0"):
        with pytest.raises(FaceIDError, match=f"The device {name} needs a CUDA GPU"):
            resolve_device(name)
    # what auto and the test marker check: no kernel runs, so no silent half-working GPU either
    assert cuda_problem(torch.device("cuda:0")) and resolve_device("auto") == torch.device("cpu")
    assert describe_device(torch.device("cpu")) == "CPU"


@pytest.mark.cuda
def test_cuda_devices_by_rank_and_index():
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda:0")
    assert cuda_problem(torch.device("cuda:0")) is None
    assert describe_device(torch.device("cuda:0")) == f"{torch.cuda.get_device_name(0)} (cuda:0)"
    with pytest.raises(FaceIDError, match="does not exist"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_flag_takes_the_signal_and_its_exit_code(sig, code, capsys):
    stop = StopFlag(announce=False)
    try:
        os.kill(os.getpid(), sig)
        assert stop.poll(0) and stop.exit_code == code
        os.kill(os.getpid(), signal.SIGTERM)  # the same stop forwarded again by a launcher: no abort
        assert stop.exit_code == code
    finally:
        stop.restore()
    assert capsys.readouterr().out == ""
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_second_ctrl_c_aborts():
    stop = StopFlag(announce=False)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()


def test_deterministic_mode_switches_torch_and_back(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # restored after the test
    try:
        set_determinism(torch.device("cpu"), True)
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
