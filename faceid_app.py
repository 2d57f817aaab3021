"""Face-ID app: interactive menu or subcommands. Run with --help; the code lives in faceid/app.py."""

from faceid.app import main
from faceid.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
