"""The ground floor, torch-free: errors and exit codes, atomic file writes, the one image decode gate, the
device rule and the project's default locations. Every other stage imports from here; this imports no stage."""
