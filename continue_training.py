#!/usr/bin/env python3
"""Resume a training run exactly, or start a new phase with a new learning rate (see --help)."""

from faceid.errors import run_cli
from faceid.training_cli import continue_main

if __name__ == "__main__":
    run_cli(continue_main)
