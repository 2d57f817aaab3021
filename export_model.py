#!/usr/bin/env python3
"""Export the embedder: ONNX plus the slim inference checkpoint (see --help). The command line lives in faceid/model/cli.py."""

from faceid.cli import export

if __name__ == "__main__":
    export()
