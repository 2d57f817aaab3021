#!/usr/bin/env bash
# Packs what bench/gpu_check.sh needs on the GPU machine into a git-ignored folder of this checkout and prints
# the `carry` list: bench/gpu_pack.sh [DIR]   (default DIR: device_data)
#   DIR/data/recordio/pins90_112x112/  train.rec, train.idx, property, lfw_dev.bin (the shared pins90 set)
#   DIR/data/videos/                   the six smallest d*.mp4 clips (the app's per-frame latency)
#   DIR/wheels/                        facenet-pytorch 2.6.0 (from the package registry; installed --no-deps there)
# The stand-in weights (47 MB) stay behind: every step trains or uses its own weights. Everything that travels
# (the working tree and DIR) must stay under 64 MiB: above that it fails loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-device_data}
SHARED=${FACEID_SHARED_DATA:-../shared/data}
LIMIT=$((64 * 1024 * 1024))
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
fail() { echo "error: $*" >&2; exit 2; }
git check-ignore -q "$DIR/x" || fail "$DIR is not ignored by git: it would travel twice (add it to .gitignore)."
src="$SHARED/recordio/pins90_112x112"
for f in train.rec train.idx property lfw_dev.bin; do [ -f "$src/$f" ] || fail "$src/$f is missing (set FACEID_SHARED_DATA)."; done
rm -rf "$DIR"
mkdir -p "$DIR/data/recordio/pins90_112x112" "$DIR/data/videos" "$DIR/wheels"
cp -L "$src"/{train.rec,train.idx,property,lfw_dev.bin} "$DIR/data/recordio/pins90_112x112/"
# shellcheck disable=SC2012  # names are plain (d0.mp4 ... d20.mp4)
for clip in $(ls -S -r "$SHARED"/videos/d*.mp4 | head -6); do cp -L "$clip" "$DIR/data/videos/"; done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$DIR/wheels" facenet-pytorch==2.6.0 \
  || fail "could not download the facenet-pytorch 2.6.0 wheel from the package registry."
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
pack=$(du -sb "$DIR" | cut -f1)
total=$((tree + pack))
awk -v d="$DIR" -v p="$pack" -v t="$tree" 'BEGIN { m = 1048576;
  printf "packed %s: %.1f MiB; working tree %.1f MiB; together %.1f of 64 MiB\n", d, p / m, t / m, (p + t) / m }'
[ "$total" -le "$LIMIT" ] || fail "what would travel is $total bytes, over 64 MiB ($LIMIT bytes): pack less."
echo "carry: [\"$DIR\"]"
echo "command: bench/gpu_check.sh \"\$OUT\"   (timeout_s <= 560)"
