#!/usr/bin/env python3
"""Train a DCGAN face generator on the recogniser's face data (see --help). The command line lives in faceid/synthetic/cli.py."""

from faceid.cli import train_gan

if __name__ == "__main__":
    train_gan()
