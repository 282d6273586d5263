#!/usr/bin/env bash
# The device check, on a GPU machine without network (one H200: under 8 minutes), from the
# bundle bench/gpu_bundle.sh built: installs nothing system-wide; TVM is the bundle's
# runtime-only slice, the project the bundle's copy. Results: $OUT/gpu-check.json when OUT is
# set (the device tool's output folder), else bench/results/gpu-check.json; progress on stdout.
# Usage: bench/gpu_check.sh [BUNDLE]   (DEVICE=cpu checks the bundle on this machine, with its
# CPU twin: PYTHON=.venv/bin/python DEVICE=cpu bench/gpu_check.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=$(cd "${1:-build/gpu-bundle}" && pwd)
PY=${PYTHON:-python3}
case "$PY" in */*) PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY") ;; esac  # we cd later
DEVICE=${DEVICE:-cuda}
RESULTS=$(mkdir -p "${OUT:-bench/results}" && cd "${OUT:-bench/results}" && pwd)
NAME=gpu-check; [ "$DEVICE" = cuda ] || NAME="gpu-check-$DEVICE"
SITE=$(mktemp -d /tmp/hymba-site.XXXXXX)
trap 'rm -rf "$SITE"' EXIT
tar -C "$SITE" -xzf "$BUNDLE/tvm-runtime.tar.gz"
if ! "$PY" -c "import tvm_ffi" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$BUNDLE"/wheels/*.whl
fi
export PYTHONPATH="$SITE:$BUNDLE/project" TVM_USE_RUNTIME_LIB=1 PYTHONUNBUFFERED=1
export TVM_NUM_THREADS=${TVM_NUM_THREADS:-$(nproc)}
cd "$BUNDLE/project"  # the sources the programs were built from (their digest is in the key)
"$PY" -c "import tvm, hymba_compile; assert tvm.base._RUNTIME_ONLY; print('tvm', tvm.__version__, 'runtime-only from', tvm.__file__, '; project', hymba_compile.__file__)"
timeout "${CHECK_TIMEOUT:-470}" "$PY" -m hymba_compile.bench.gpu_check --bundle "$BUNDLE" \
    --device "$DEVICE" --json "$RESULTS/$NAME.json"
