#!/usr/bin/env bash
# scripts/main.sh — set up, build and run the main job on its built-in default.
# Today the main job is the reference's self-check against the fp64 oracle and a short CPU
# benchmark summary; it will become the default study once the simulator lands.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build_dir=${RESA_BUILD_DIR:-build/main}
echo
"$build_dir/cli/resa" info
echo
"$build_dir/cli/resa" selftest
echo
echo "CPU reference throughput (Google Benchmark, KV bytes read per second):"
"$build_dir/reference/bench_reference" --benchmark_filter='BM_DenseDecode/4096|BM_SelectAndSparseDecode/16384' \
  --benchmark_counters_tabular=true --benchmark_min_time=0.2
