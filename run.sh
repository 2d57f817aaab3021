#!/usr/bin/env bash
# One command on a fresh machine: creates .venv and installs the pinned requirements (once, and again
# whenever they change), then runs what you ask for inside it.
#   ./run.sh              the face-ID app's menu on its defaults (webcam 0, ./faceid_data,
#                         ./checkpoints/best_face_model.pth if present, else VGGFace2 weights)
#   ./run.sh app ARGS     the same, with faceid_app.py arguments (e.g. ./run.sh app --help)
#   ./run.sh test ARGS    the test suite (pytest ARGS)
#   ./run.sh python ARGS  any project script in the venv (e.g. ./run.sh python train_model.py --help)
# FACEID_SYSTEM_PYTHON=1 skips the venv and runs the interpreter's own packages (python3, or $PYTHON): for a
# machine that has torch already and cannot install the pins, such as a GPU box without network (any torch
# from 2.11 on works; facenet-pytorch goes in with --no-deps, see bench/gpu_check.sh).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${FACEID_VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ "${FACEID_SYSTEM_PYTHON:-0}" = 1 ]; then
  RUN_PYTHON=$PYTHON
else
  RUN_PYTHON="$VENV/bin/python"
fi
stamp="$VENV/.faceid-requirements"
want=$(cat requirements.txt requirements-onnx.txt requirements-torch.txt requirements-dev.txt | sha256sum | cut -c1-16)
if [ "${FACEID_SYSTEM_PYTHON:-0}" != 1 ] && { [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; }; then
  echo "Setting up $VENV (first run or requirements changed) ..." >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements-dev.txt
  "$VENV/bin/python" -m pip install -q --no-deps facenet-pytorch==2.6.0
  echo "$want" > "$stamp"
fi
cmd=${1:-app}
[ $# -gt 0 ] && shift
case "$cmd" in
  app) exec "$RUN_PYTHON" faceid_app.py "$@" ;;
  test) exec "$RUN_PYTHON" -m pytest "$@" ;;
  python) exec "$RUN_PYTHON" "$@" ;;
  *) echo "usage: ./run.sh [app|test|python] [ARGS...]" >&2; exit 2 ;;
esac
