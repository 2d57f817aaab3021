#!/usr/bin/env python3
"""Train the real-vs-synthetic face detector the app uses to refuse generated faces (see --help). The command line lives in faceid/synthetic/cli.py."""

from faceid.cli import train_detector

if __name__ == "__main__":
    train_detector()
