#!/usr/bin/env python3
"""Write seeded generated faces, a grid and a manifest from a GAN checkpoint (see --help). The command line lives in faceid/synthetic/cli.py."""

from faceid.cli import generate_faces

if __name__ == "__main__":
    generate_faces()
