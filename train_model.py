#!/usr/bin/env python3
"""Fine-tune the face-recognition network for verification (see --help). The command line lives in faceid/train/cli.py."""

from faceid.cli import train

if __name__ == "__main__":
    train()
