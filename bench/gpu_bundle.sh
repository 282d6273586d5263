#!/usr/bin/env bash
# Builds, here (no GPU needed), everything bench/gpu_check.sh needs on a GPU machine without
# network, into an ignored folder (default build/gpu-bundle, under 60 MiB):
#   programs/          sm_90 executables (nvcc fatbins inside): the official tiny fixture in fp32
#                      and bf16, hymba-1.5b bf16 (decode batches 1, 4, 16, CUDA graphs), and the
#                      fixture's CPU twin (bf16 and fp32) to check the bundle on this machine
#   programs-nograph/  hymba-1.5b bf16 batch 1 without CUDA graphs (graph on vs off)
#   tvm-runtime.tar.gz a runtime-only TVM: the wheel's tvm package without libtvm_compiler.so
#   wheels/            the cp312 apache-tvm-ffi wheel (the GPU machine runs Python 3.12)
#   project/           hymba_compile with ir/, schedules/ inside, as installed (sources in the key)
#   fixtures/          the official tiny fixture (from ../shared; never committed)
# Usage: bench/gpu_bundle.sh [OUT_DIR]   (PYTHON=.venv/bin/python by default)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-build/gpu-bundle}
PY=${PYTHON:-.venv/bin/python}
FIXTURE=${HYMBA_FIXTURE:-../shared/fixtures/official-tiny}
LIMIT_MIB=60
[ -d "$FIXTURE" ] || { echo "error: fixture $FIXTURE not found (set HYMBA_FIXTURE)" >&2; exit 2; }
STAGE="$OUT_DIR.partial"
rm -rf "$STAGE"
mkdir -p "$STAGE"/{programs,programs-nograph,wheels,fixtures}
compile() { "$PY" -m hymba_compile compile "$@"; }
start=$(date +%s)
compile --model "$FIXTURE" --dtype float32 --target cuda:sm_90,cpu --decode-batches 1 -o "$STAGE/programs"
compile --model "$FIXTURE" --dtype bfloat16 --target cuda:sm_90,cpu --decode-batches 1 -o "$STAGE/programs"
compile --model hymba-1.5b --dtype bfloat16 --target cuda:sm_90 --decode-batches 1,4,16 -o "$STAGE/programs"
compile --model hymba-1.5b --dtype bfloat16 --target cuda:sm_90 --decode-batches 1 --no-cuda-graph -o "$STAGE/programs-nograph"
echo "programs compiled in $(( $(date +%s) - start )) s"
# a runtime-only TVM: the installed package minus its compiler library and C++ headers
TVM_DIR=$("$PY" -c "import os, tvm_ffi; import importlib.util as u; print(os.path.dirname(u.find_spec('tvm').origin))")
tar -C "$(dirname "$TVM_DIR")" -czf "$STAGE/tvm-runtime.tar.gz" --exclude=__pycache__ \
    --exclude=tvm/lib/libtvm_compiler.so --exclude=tvm/3rdparty --exclude=tvm/include tvm
FFI_VERSION=$("$PY" -c "from importlib.metadata import version; print(version('apache-tvm-ffi'))")
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$STAGE/wheels" "apache-tvm-ffi==$FFI_VERSION"
mkdir -p "$STAGE/project"
git ls-files -z hymba_compile pyproject.toml | xargs -0 cp --parents -t "$STAGE/project"
# ir/ and schedules/ go where an install puts them: hymba_compile.ir and hymba_compile.schedules
for pkg in ir schedules; do
    git ls-files "$pkg" | while read -r f; do
        mkdir -p "$STAGE/project/hymba_compile/$(dirname "$f")"
        cp "$f" "$STAGE/project/hymba_compile/$f"
    done
done
cp -r "$FIXTURE" "$STAGE/fixtures/official-tiny"
chmod -R u+w "$STAGE/fixtures"
size_kib=$(du -sk "$STAGE" | cut -f1)
if [ "$size_kib" -gt $(( LIMIT_MIB * 1024 )) ]; then
    echo "error: the bundle is $(( size_kib / 1024 )) MiB, over $LIMIT_MIB MiB" >&2; exit 1
fi
rm -rf "$OUT_DIR" && mv "$STAGE" "$OUT_DIR"
echo "bundle $OUT_DIR: $(( size_kib / 1024 )) MiB"
du -sh "$OUT_DIR"/* | sed 's/^/  /'
