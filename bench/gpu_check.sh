#!/usr/bin/env bash
# The GPU check in one call (bench/gpu_check.py says what it runs): bench/gpu_check.sh [--dry-run] OUTDIR
#   on the GPU machine, after bench/gpu_pack.sh here:  bench/gpu_check.sh "$OUT"      (<= 9 minutes on one H200)
#   on any CPU, as CI does:                            bench/gpu_check.sh --dry-run OUTDIR   (or DRY_RUN=1)
# Python: $PYTHON if set; else python3 when FACEID_SYSTEM_PYTHON=1 or there is no .venv (the GPU machine's
# own Python with its torch); else the project's .venv. facenet-pytorch, if missing, is installed from the
# packed wheel into a scratch folder (no network needed).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ "${FACEID_SYSTEM_PYTHON:-0}" = 1 ] || [ ! -x .venv/bin/python ]; then PYTHON=python3; else PYTHON=.venv/bin/python; fi
fi
PACK=${FACEID_DEVICE_PACK:-device_data}
if ! "$PYTHON" -c "import facenet_pytorch" 2>/dev/null; then
  wheels=("$PACK"/wheels/facenet_pytorch-*.whl)
  if [ -e "${wheels[0]}" ]; then
    site=$(mktemp -d /tmp/faceid-site.XXXXXX)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "${wheels[@]}"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "error: facenet-pytorch is not installed and $PACK/wheels has no wheel of it; run bench/gpu_pack.sh." >&2
    exit 2
  fi
fi
exec "$PYTHON" bench/gpu_check.py --pack "$PACK" "$@"
