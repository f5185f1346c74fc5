#!/usr/bin/env bash
# scripts/test.sh — set up, build and run the test suite (what .ci/run calls).
# Tests labelled `gpu` run only where a CUDA device answers; elsewhere they are excluded here and
# would skip with a message if run directly.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build_dir=${RESA_BUILD_DIR:-build/main}
label_args=(-LE gpu)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  label_args=()
  echo "test: a CUDA device is present — running the gpu-labelled tests too"
else
  echo "test: no CUDA device — gpu-labelled tests are excluded (they need a GPU machine)"
fi
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc 2>/dev/null || echo 2)" "${label_args[@]}"
