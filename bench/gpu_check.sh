#!/usr/bin/env bash
# The device check, on a GPU machine without network (one H200: under 8 minutes), from the
# bundle bench/gpu_bundle.sh built: installs nothing system-wide; TVM is the bundle's
# runtime-only slice, the project the bundle's copy. Results: $OUT/gpu-check.json when OUT is
# set (the device tool's output folder), else bench/results/gpu-check.json; progress on stdout.
# Exit status 1 when a section failed or the fixture's parity does not hold ("failed" in the JSON).
# Usage: bench/gpu_check.sh [BUNDLE]   (DEVICE=cpu checks the bundle on this machine, with its
# CPU twin: PYTHON=.venv/bin/python DEVICE=cpu bench/gpu_check.sh)
set -euo pipefail
CALLER=$PWD
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$CALLER/$1" ;; esac; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=$(cd "$( [ $# -ge 1 ] && absolute "$1" || echo "$ROOT/build/gpu-bundle")" && pwd)
PY=${PYTHON:-python3}
case "$PY" in */*) PY=$(absolute "$PY") ;; esac
DEVICE=${DEVICE:-cuda}
RESULTS=$( [ -n "${OUT:-}" ] && absolute "$OUT" || echo "$ROOT/bench/results")
mkdir -p "$RESULTS"
NAME=gpu-check; [ "$DEVICE" = cuda ] || NAME="gpu-check-$DEVICE"
SITE=$(mktemp -d /tmp/hymba-site.XXXXXX)
trap 'rm -rf "$SITE"' EXIT
tar -C "$SITE" -xzf "$BUNDLE/tvm-runtime.tar.gz"
# the bundled tvm-ffi (cp312, the GPU machine's Python); elsewhere an installed one of that version
WHEEL=$(ls "$BUNDLE"/wheels/apache_tvm_ffi-*.whl)
if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEEL" 2>/dev/null; then
    WANT=$(basename "$WHEEL" | cut -d- -f2)
    HAVE=$("$PY" -c "from importlib.metadata import version; print(version('apache-tvm-ffi'))" 2>/dev/null || true)
    [ "$HAVE" = "$WANT" ] || { echo "error: cannot install $WHEEL for $PY and no apache-tvm-ffi==$WANT is installed" >&2; exit 2; }
fi
export PYTHONPATH="$SITE:$BUNDLE/project" TVM_USE_RUNTIME_LIB=1 PYTHONUNBUFFERED=1
export TVM_NUM_THREADS=${TVM_NUM_THREADS:-$(nproc)}
cd "$BUNDLE/project"  # the sources the programs were built from (their digest is in the key)
"$PY" -c "import tvm, tvm_ffi, hymba_compile; assert tvm.base._RUNTIME_ONLY; print('tvm', tvm.__version__, 'runtime-only from', tvm.__file__, '; tvm-ffi', tvm_ffi.__file__, '; project', hymba_compile.__file__)"
timeout "${CHECK_TIMEOUT:-470}" "$PY" -m hymba_compile.bench.gpu_check --bundle "$BUNDLE" \
    --device "$DEVICE" --json "$RESULTS/$NAME.json"
