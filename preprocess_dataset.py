#!/usr/bin/env python3
"""Unpack the CASIA-WebFace RecordIO file into a JPG tree for training (see --help). The command line lives in faceid/data/cli.py."""

from faceid.cli import unpack

if __name__ == "__main__":
    unpack()
