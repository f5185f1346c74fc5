#!/usr/bin/env bash
# scripts/setup.sh — install missing Debian packages, configure and build (idempotent).
# Usage: bash scripts/setup.sh            (build dir: build/main, or $RESA_BUILD_DIR)
# CUDA is built when nvcc is on PATH or in /usr/local/cuda/bin; otherwise CMake says it skips it.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(g++ cmake make pkg-config git libeigen3-dev libomp-dev libhdf5-dev libcli11-dev
          libgtest-dev libgmock-dev libbenchmark-dev
          python3-h5py python3-pandas python3-xarray python3-h5netcdf python3-matplotlib)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing missing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi

build_dir=${RESA_BUILD_DIR:-build/main}
jobs=$(nproc 2>/dev/null || echo 2)
mkdir -p "$build_dir"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release ${RESA_CMAKE_ARGS:-} >"$build_dir/configure.log" 2>&1 ||
  { cat "$build_dir/configure.log"; exit 1; }
grep -E "^-- resa:" "$build_dir/configure.log" || true
cmake --build "$build_dir" -j "$jobs"
