#!/usr/bin/env python3
"""Evaluate a face-recognition model with the app's own pipeline: 1:1 pairs, 1:N, calibration (see --help). The command line lives in faceid/eval/cli.py."""

from faceid.cli import evaluate

if __name__ == "__main__":
    evaluate()
