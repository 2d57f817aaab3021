#!/usr/bin/env python3
"""Face-ID app: interactive menu or subcommands (see --help). The command line lives in faceid/app/cli.py."""

from faceid.cli import app

if __name__ == "__main__":
    app()
