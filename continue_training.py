#!/usr/bin/env python3
"""Resume a training run exactly, or start a new phase with a new learning rate (see --help). The command line lives in faceid/train/cli.py."""

from faceid.cli import continue_training

if __name__ == "__main__":
    continue_training()
