#!/usr/bin/env python3
"""Download CASIA-WebFace from Kaggle and verify it (see --help). The command line lives in faceid/data/cli.py."""

from faceid.cli import download

if __name__ == "__main__":
    download()
