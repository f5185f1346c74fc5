#!/usr/bin/env bash
# scripts/ab_bench.sh — A/B timing of two builds of the GPU benchmark on one card in one run, for
# launch-rule and kernel experiments whose effect is smaller than the spread between device calls
# (the same unchanged kernel measured 3-15% apart on two H200s of two calls).
#   A: the working tree as it is.   B: the same tree compiled with -DRESA_AB_B, the alternative an
#   experiment guards with `#ifdef RESA_AB_B` in the launch code while it is tried (never committed:
#   the winner replaces the rule, and PERFORMANCE.md records both numbers).
# The two bench_gpu binaries run in turn (A B A B ...), so drift of the card's clocks or
# temperature hits both alike; each row's median over the runs is printed for A and B with B/A.
# AB_B_ENVS="K=1 K=2 K=4" runs B once under each of those environment settings (a parameter the
# B code reads with getenv while it is tried: A B1 B2 B3 A B1 ...), a column each.
# AB_B_OVERLAY=DIR makes B the tree with the files under DIR copied over it (same relative paths;
# the copy is build/ab-b-src, made afresh each call),
# without -DRESA_AB_B: for a change too wide for an #ifdef, B is the files as they were, e.g.
#   mkdir -p ab-overlay && git archive HEAD cuda/src | tar -x -C ab-overlay   (here, before the
#   device call: the overlay travels as an untracked folder; delete it afterwards)
# Usage (on the device machine; both builds take ~1 min):
#   AB_RUNS=3 bash scripts/ab_bench.sh "--batch 8 --length 262144" "--batch 1 --length 262144"
#   (each argument: the options of one bench_gpu invocation)          -> $OUT/ab.log, $OUT/ab.txt
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-$PWD/gpu-out}
runs=${AB_RUNS:-3}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
[ $# -ge 1 ] || { echo "usage: ab_bench.sh \"BENCH_GPU_OPTIONS\"..." >&2; exit 2; }
: >"$OUT/ab.log"
overlay=${AB_B_OVERLAY:-}
b_src=build/ab-b-src  # B's sources with an overlay: a copy of the tree with the overlay's files over it
if [ -n "$overlay" ]; then
  [ -d "$overlay" ] || { echo "ab_bench.sh: AB_B_OVERLAY=$overlay is not a folder" >&2; exit 2; }
  rm -rf "$b_src" && mkdir -p "$b_src"
  if ! { tar -c --exclude=./build --exclude=./.git --exclude=./results --exclude=./data --exclude=./gpu-out . |
      tar -x -C "$b_src" && cp -r "$overlay"/. "$b_src"/; }; then
    echo "ab_bench.sh: could not make B's tree from the overlay $overlay" >&2
    exit 1
  fi
fi
for variant in a b; do
  flags="" src=.
  if [ $variant = b ]; then
    if [ -n "$overlay" ]; then src=$b_src; else flags="-DRESA_AB_B"; fi
  fi
  # A build folder configured from another source folder (B with and without an overlay) is
  # started afresh: CMake refuses to reuse it.
  cache=build/ab-$variant/CMakeCache.txt
  if [ -f "$cache" ] && ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$(cd "$src" && pwd)" "$cache"; then
    rm -rf "build/ab-$variant"
  fi
  if ! { cmake -S "$src" -B build/ab-$variant -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DCMAKE_CUDA_FLAGS="$flags" >>"$OUT/ab.log" 2>&1 &&
    cmake --build build/ab-$variant -j 16 --target bench_gpu >>"$OUT/ab.log" 2>&1; }; then
    tail -30 "$OUT/ab.log"
    exit 1
  fi
done
read -r -a b_envs <<<"${AB_B_ENVS:-}"
[ ${#b_envs[@]} -eq 0 ] && b_envs=("")
json=$(mktemp -d)
for ((r = 0; r < runs; ++r)); do
  i=0
  for options in "$@"; do
    for variant in a "${b_envs[@]/#/b}"; do  # a, then b<setting> for each B setting
      setting=${variant#?}
      # shellcheck disable=SC2086  # options is a list of bench_gpu options
      env $setting build/ab-${variant:0:1}/cuda/bench_gpu --json "$json/$variant@$r-$i.json" $options \
        >>"$OUT/ab.log" 2>&1 || { echo "bench_gpu ($variant, $options) failed; see ab.log"; exit 1; }
    done
    i=$((i + 1))
  done
done
python3 - "$json" "$runs" "$overlay" <<'EOF' | tee "$OUT/ab.txt"
import glob, json, statistics, sys
folder, runs = sys.argv[1], int(sys.argv[2])
times = {}  # (kernel, shape, batch, L or "L/capacity", "b" added when bounded) -> {variant: [us, ...]}
for path in sorted(glob.glob(folder + "/*.json")):
    variant = path.rsplit("/", 1)[1].split("@")[0]
    bench = json.load(open(path))
    for row in bench["rows"]:
        length = (f"{row['L']}/{bench['capacity']}" + ("b" if bench.get("bounded") else "")) if bench.get("capacity") else row["L"]
        key = (row["kernel"], row["shape"], row["batch"], length)
        times.setdefault(key, {}).setdefault(variant, []).append(row["us"])
bs = sorted({v for t in times.values() for v in t if v != "a"})
print(f"A/B over {runs} alternating runs (median us); B = " + (f"the tree with {sys.argv[3]} over it" if sys.argv[3] else "-DRESA_AB_B") + (f" under {', '.join(b[1:] for b in bs)}" if bs != ["b"] else ""))
print(f"{'kernel':36} {'shape':>5} {'batch':>5} {'L':>12} {'A us':>9}" + "".join(f" {('B ' + b[1:]).strip():>9} {'B/A':>6}" for b in bs))
for (kernel, shape, batch, L), t in times.items():
    a = statistics.median(t["a"])
    cols = "".join(f" {statistics.median(t[b]):9.1f} {statistics.median(t[b]) / a:6.3f}" for b in bs)
    print(f"{kernel:36} {shape:>5} {batch:>5} {L!s:>12} {a:9.1f}{cols}")
EOF
rm -rf "$json"
