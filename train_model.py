#!/usr/bin/env python3
"""Fine-tune the face-recognition network for verification (see --help). All logic is in faceid.training."""

from faceid.errors import run_cli
from faceid.training_cli import train_main

if __name__ == "__main__":
    run_cli(train_main)
