#!/usr/bin/env bash
# scripts/gpu_validate.sh — the one build-and-validate script for the GPU machine (device tool).
# Builds with CUDA (sm_90a), then runs the requested stages and writes logs under $OUT (or ./gpu-out):
#   probe     cuda/lab probes: the mma.sync accumulation model and wgmma = mma.sync per k16 step
#                                                                            -> probe.log
#   tests     the gpu-labelled GoogleTest cases (the CPU suite runs in CI)   -> tests.log
#   verify    `resa verify` full validation matrix                           -> verify.log
#   quick     `resa verify --quick` (a fast gate for A/B experiments, not a validation)
#                                                                            -> quick.log
#   checks    tests and verify at the same time (saves ~2 min of device time; not before bench)
#   sanitize  compute-sanitizer memcheck/initcheck/synccheck on `resa verify --quick
#             --no-long-context`, 150 s each (SANITIZERS="initcheck" runs a subset of the tools)
#                                                                            -> sanitizer.log
#   racecheck compute-sanitizer racecheck on the same matrix, its own stage (it is the slow tool:
#             past 150 s at cf139d0), RACECHECK_TIMEOUT seconds (default 480), one line per case
#             so that a timeout still shows how far it got           -> sanitizer_racecheck.log
#   bench     GPU benchmark (copy bandwidth, kernels) and the PyTorch peers  -> bench.log, bench.json
#             then 4K-64K sequences in caches of 256K + 33 tokens (every kernel launched for the
#             capacity, as the step functions do without max_length)
#                                                      -> bench_long_cache.log, bench_long_cache.json
#             BENCH_ARGS="--length 262144 --shape 28/4 --batch 8" runs that subset, without peers
#             or long caches
#   sass      SASS opcode counts per kernel (cuobjdump) and the listings of the rectification and
#             merge kernels (bf16, d = 128): what the compiler made of the source
#                                                     -> sass.txt, sass_wgmma.txt, sass_merge.txt
#   ncu       Nsight Compute: the dense decode split and merge kernels at 12/2 batch 1 256K, the
#             rectification kernel at 28/4 batch 8 64K, the selection kernels (scores, top-k) at
#             256K for 12/2 batch 1 and 28/4 batch 8 (clocks locked to base; NCU_PROFILES picks
#             among "decode rect select short peer topk_source merge_source rect_source
#             rect_source_b8 short_source cluster cluster_source", default the first three; "short": the batch-1 4K decode and fused selection kernels; "peer": our dense
#             decode and PyTorch SDPA's flash kernel at 28/4 batch 8 256K, with their memory
#             workload sections;
#             "topk_source": the top-k kernel at 12/2 batch 1 256K and 28/4 batch 8 256K with
#             per-instruction counters and stall samples, printed as SASS with its CUDA lines,
#             and summarized by scripts/ncu_source_summary.py; "merge_source": the same for the
#             merge kernel of the dense decode at 12/2 batch 1 256K; "rect_source": the
#             rectification kernel at 12/2 batch 1 256K, "rect_source_b8" at 28/4 batch 8 64K (its
#             four-warpgroup instance); "short_source": the decode split kernel
#             at 12/2 batch 1 4K; "cluster": the cluster decode kernel's first launch at 12/2 batch 1
#             16K, 64K and 128K, block-sparse grids of 8, 26 and 52 clusters (PERFORMANCE.md change
#             49: its time grows with the clusters per SM); "cluster_source": that kernel at 128K
#             with per-instruction counters and stall samples)
#                  -> ncu_decode_b1_256k.txt, ncu_rect_28x4_b8_64k.txt, ncu_select_12x2_b1_256k.txt,
#                     ncu_select_28x4_b8_256k.txt, ncu_short_12x2_b1_4k.txt,
#                     ncu_dense_28x4_b8_256k.txt, ncu_peer_sdpa_28x4_b8_256k.txt,
#                     ncu_topk_source_{12x2_b1,28x4_b8}_256k.csv and .txt (the summary),
#                     ncu_{merge,rect}_source_12x2_b1_256k.csv and .txt,
#                     ncu_rect_source_28x4_b8_64k.csv and .txt,
#                     ncu_short_source_12x2_b1_4k.csv and .txt, ncu_cluster_12x2_b1.txt,
#                     ncu_cluster_source_12x2_b1_128k.csv and .txt
#             (a call builds only the targets its stages run: ncu alone builds bench_gpu)
#   record    writes $OUT/record/<date>-<card>-<commit>.md from the logs above
#   pack      puts everything under $OUT into $OUT/logs.tar (the device returns at most 8 files);
#             unpack here and run scripts/write_validation_record.py on the folder
#   train     retrains models/resa-byte-qwen2 into $OUT/model (train_model.py's defaults are its
#             settings; needs data/corpus from scripts/prepare_corpus.py, carried; run it alone: it
#             skips the C++ build, and its 6 model files and 2 logs fill the 8 files that come back)
# At most 8 files come back from the device machine: keep $OUT to the logs named here.
# Usage: bash scripts/gpu_validate.sh probe tests verify sanitize bench record
#        A record in three device calls (all six stages in one call took 545 s at 8c18ac5 and ran
#        past the device's 600-s limit per call at d8074fd, whose gpu tests took 310 s):
#          bash scripts/gpu_validate.sh probe checks pack           (~7 min on an H200)
#          bash scripts/gpu_validate.sh bench sanitize sass pack    (~5.5 min)
#          bash scripts/gpu_validate.sh racecheck pack              (up to 8 min)
#        and `ncu pack` in another; then, per call: tar xf logs.tar -C DIR, and
#        python3 scripts/write_validation_record.py --commit HASH DIR1 DIR2...)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(probe tests verify sanitize racecheck bench record)
export PATH=/usr/local/cuda/bin:$PATH
build=build/gpu
start=$(date +%s)
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -c safe.directory='*' rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(git -c safe.directory='*' diff --quiet HEAD 2>/dev/null || echo ' (+uncommitted changes)')"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  nvcc --version | tail -1
} | tee "$OUT/machine.txt"

# The C++/CUDA build of what the stages run (none for train, record and pack).
targets=()
for s in "${stages[@]}"; do
  case $s in
    probe) targets+=(tc_probe wgmma_probe) ;;
    tests | checks) targets+=(resa_gpu_tests resa) ;;
    verify | quick | sanitize | racecheck) targets+=(resa) ;;
    bench | ncu) targets+=(bench_gpu) ;;
    sass) targets+=(resa_cuda) ;;
  esac
done
mapfile -t targets < <(printf '%s\n' "${targets[@]}" | sort -u | grep .)
if [ ${#targets[@]} -gt 0 ]; then
  mkdir -p $build
  cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    >"$build/configure.log" 2>&1 || { tail -30 "$build/configure.log"; exit 1; }
  cmake --build $build -j 16 --target "${targets[@]}" >"$build/build.log" 2>&1 ||
    { grep -E "error" -A3 "$build/build.log" | head -60; exit 1; }
  echo "build: ok ($(( $(date +%s) - start )) s: ${targets[*]})"
fi

# The gpu-labelled tests and the full verify; each writes its log and prints its summary.
run_tests() {
  (cd $build && ctest -L gpu --output-on-failure --timeout 1500) >"$OUT/tests.log" 2>&1; local r=$?
  grep -E "tests passed|tests failed|Failed|\*\*\*" "$OUT/tests.log" | tail -15
  return $r
}
# One Nsight Compute run over COMMAND (bench_gpu, or the PyTorch peers), appended to $OUT/FILE:
# the kernels matching REGEX, the first COUNT launches, the sections every profile has plus EXTRA
# ("A B" section names), and the metrics NCU_METRICS names (comma-separated), if any.
# Usage: ncu_profile FILE REGEX COUNT EXTRA COMMAND...
ncu_profile() {
  local file=$1 regex=$2 count=$3 extra=() section
  for section in $4; do extra+=(--section "$section"); done
  shift 4
  [ -n "${NCU_METRICS:-}" ] && extra+=(--metrics "$NCU_METRICS")
  ncu --kernel-name regex:"$regex" --launch-count "$count" --section SpeedOfLight --section WarpStateStats \
    --section SchedulerStats "${extra[@]}" "$@" >>"$OUT/$file" 2>&1
}
# Per-instruction counters and stall samples of the first launch of one kernel in a bench_gpu run,
# printed as SASS with its CUDA lines and summarized by scripts/ncu_source_summary.py.
# Usage: source_profile NAME REGEX BENCH_OPTIONS...  -> ncu_NAME.csv, ncu_NAME.txt
source_profile() {
  local name=$1 regex=$2
  shift 2
  ncu --kernel-name regex:"$regex" --launch-count 1 --section SpeedOfLight --section WarpStateStats \
    --section SourceCounters --import-source yes -f -o "$build/$name" \
    $build/cuda/bench_gpu "$@" >"$build/$name.log" 2>&1 &&
    ncu --import "$build/$name.ncu-rep" --page source --print-source cuda,sass --csv >"$OUT/ncu_$name.csv" 2>&1 &&
    python3 scripts/ncu_source_summary.py "$OUT/ncu_$name.csv" >"$OUT/ncu_$name.txt" 2>&1
}
run_verify() {
  $build/cli/resa verify -v >"$OUT/verify.log" 2>&1; local r=$?
  grep -vE "^  .*  ok$" "$OUT/verify.log" | tail -40
  return $r
}

rc=0
for s in "${stages[@]}"; do
  case $s in
    probe)
      { $build/cuda/tc_probe && $build/cuda/wgmma_probe; } >"$OUT/probe.log" 2>&1 || rc=1
      tail -8 "$OUT/probe.log" ;;
    tests) run_tests || rc=1 ;;
    quick)
      $build/cli/resa verify --quick >"$OUT/quick.log" 2>&1 || rc=1
      tail -3 "$OUT/quick.log" ;;
    sass)
      obj=$build/cuda/CMakeFiles/resa_cuda.dir/src
      for f in attention selection step; do cuobjdump -sass "$obj/$f.cu.o"; done >"$build/sass.all" 2>&1 || rc=1
      python3 scripts/sass_summary.py "$build/sass.all" --listing attention_split_wgmma_kernelINS_4bf16ELi128 \
        "$OUT/sass_wgmma.txt" --listing attention_merge_kernelINS_4bf16ELi128 "$OUT/sass_merge.txt" >"$OUT/sass.txt" || rc=1
      head -40 "$OUT/sass.txt" ;;
    verify) run_verify || rc=1 ;;
    checks)
      run_tests >"$OUT/.tests_summary" & tests_pid=$!
      run_verify || rc=1
      wait $tests_pid || rc=1
      cat "$OUT/.tests_summary"; rm -f "$OUT/.tests_summary" ;;
    sanitize)
      : >"$OUT/sanitizer.log"
      for tool in ${SANITIZERS:-memcheck initcheck synccheck}; do
        leaks=""; [ $tool = memcheck ] && leaks="--leak-check full"
        timeout 150 compute-sanitizer --tool $tool $leaks --error-exitcode 9 $build/cli/resa verify --quick --no-long-context \
          >>"$OUT/sanitizer.log" 2>&1; r=$?
        echo "sanitizer $tool: exit $r" | tee -a "$OUT/sanitizer.log"
        [ $r -ne 0 ] && rc=1
      done ;;
    racecheck)
      timeout "${RACECHECK_TIMEOUT:-480}" stdbuf -oL -eL compute-sanitizer --tool racecheck --error-exitcode 9 \
        $build/cli/resa verify --quick --no-long-context -v >"$OUT/sanitizer_racecheck.log" 2>&1; r=$?
      echo "sanitizer racecheck: exit $r ($(grep -c '  ok$' "$OUT/sanitizer_racecheck.log") cases ok)" |
        tee -a "$OUT/sanitizer_racecheck.log"
      [ $r -ne 0 ] && rc=1 ;;
    bench)
      # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
      $build/cuda/bench_gpu --json "$OUT/bench.json" ${BENCH_ARGS:-} >"$OUT/bench.log" 2>&1 || rc=1
      if [ -z "${BENCH_ARGS:-}" ]; then
        python3 scripts/bench_peers.py --flex --json "$OUT/peers.json" >>"$OUT/bench.log" 2>&1 || echo "peers: failed (see bench.log)"
        $build/cuda/bench_gpu --capacity 262177 --length 4096 --length 16384 --length 65536 \
          --json "$OUT/bench_long_cache.json" >"$OUT/bench_long_cache.log" 2>&1 || rc=1
      fi
      tail -60 "$OUT/bench.log" ;;
    train)
      PYTHONUNBUFFERED=1 python3 scripts/train_model.py --out "$OUT/model" >"$OUT/model_training.log" 2>&1 || rc=1
      grep -E "held-out|^\{" "$OUT/model_training.log" ;;
    ncu)
      profiles=" ${NCU_PROFILES:-decode rect select} "
      bench=$build/cuda/bench_gpu
      rm -f "$OUT"/ncu_*.txt
      if [[ $profiles == *" decode "* ]]; then
        ncu_profile ncu_decode_b1_256k.txt "attention_split_decode|attention_merge" 2 "LaunchStats Occupancy" \
          $bench --length 262144 --shape 12/2 --batch 1 || rc=1
      fi
      if [[ $profiles == *" rect "* ]]; then
        ncu_profile ncu_rect_28x4_b8_64k.txt attention_split_wgmma 1 "ComputeWorkloadAnalysis InstructionStats" \
          $bench --length 65536 --shape 28/4 --batch 8 || rc=1
      fi
      if [[ $profiles == *" select "* ]]; then
        ncu_profile ncu_select_12x2_b1_256k.txt "block_scores|topk_kernel" 2 "LaunchStats Occupancy" \
          $bench --length 262144 --shape 12/2 --batch 1 || rc=1
        ncu_profile ncu_select_28x4_b8_256k.txt "block_scores|topk_kernel" 2 "LaunchStats Occupancy" \
          $bench --length 262144 --shape 28/4 --batch 8 || rc=1
      fi
      if [[ $profiles == *" peer "* ]]; then  # 28/4 batch 8 256K: our decode and SDPA's flash kernel
        ncu_profile ncu_dense_28x4_b8_256k.txt "attention_split_decode|attention_merge" 2 \
          "LaunchStats Occupancy MemoryWorkloadAnalysis MemoryWorkloadAnalysis_Tables" $bench --length 262144 --shape 28/4 --batch 8 || rc=1
        ncu_profile ncu_peer_sdpa_28x4_b8_256k.txt flash 1 "LaunchStats Occupancy MemoryWorkloadAnalysis MemoryWorkloadAnalysis_Tables" \
          python3 scripts/bench_peers.py --case 28/4:8:262144 || rc=1
      fi
      if [[ $profiles == *" topk_source "* ]]; then  # where the top-k's cycles go, instruction by instruction
        source_profile topk_source_12x2_b1_256k topk_kernel --length 262144 --shape 12/2 --batch 1 || rc=1
        source_profile topk_source_28x4_b8_256k topk_kernel --length 262144 --shape 28/4 --batch 8 || rc=1
      fi
      if [[ $profiles == *" merge_source "* ]]; then  # the merge of the batch-1 dense decode
        source_profile merge_source_12x2_b1_256k attention_merge --length 262144 --shape 12/2 --batch 1 || rc=1
      fi
      if [[ $profiles == *" rect_source "* ]]; then  # the rectification kernel, instruction by instruction
        source_profile rect_source_12x2_b1_256k attention_split_wgmma --length 262144 --shape 12/2 --batch 1 || rc=1
      fi
      if [[ $profiles == *" rect_source_b8 "* ]]; then  # its four-warpgroup instance likewise
        source_profile rect_source_28x4_b8_64k attention_split_wgmma --length 65536 --shape 28/4 --batch 8 || rc=1
      fi
      if [[ $profiles == *" cluster "* ]]; then  # the cluster decode kernel at 8, 26 and 52 clusters (block-sparse)
        for length in 16384 65536 131072; do
          ncu_profile ncu_cluster_12x2_b1.txt attention_split_decode_cluster 1 "LaunchStats Occupancy MemoryWorkloadAnalysis" \
            $bench --length $length --shape 12/2 --batch 1 || rc=1
        done
      fi
      if [[ $profiles == *" cluster_source "* ]]; then  # the same kernel at 52 clusters, instruction by instruction
        source_profile cluster_source_12x2_b1_128k attention_split_decode_cluster --length 131072 --shape 12/2 --batch 1 || rc=1
      fi
      if [[ $profiles == *" short_source "* ]]; then  # the batch-1 4K decode split kernel likewise
        source_profile short_source_12x2_b1_4k attention_split_decode --length 4096 --shape 12/2 --batch 1 || rc=1
      fi
      if [[ $profiles == *" short "* ]]; then  # batch 1 at 4K: what the short-context floor is made of
        for kernel in attention_split_decode attention_merge select_fused; do
          ncu_profile ncu_short_12x2_b1_4k.txt "$kernel" 1 LaunchStats $bench --length 4096 --shape 12/2 --batch 1 || rc=1
        done
      fi
      grep -hE "^  [a-z_ ]*void|Duration|Issued Warp Per Scheduler" "$OUT"/ncu_*.txt | head -30 ;;
    pack)
      list=$(mktemp)
      (cd "$OUT" && find . -mindepth 1 -maxdepth 1 ! -name logs.tar -printf '%P\n' | sort >"$list" &&
        tar cf logs.tar -T "$list" && xargs -a "$list" rm -rf) || rc=1
      rm -f "$list"
      echo "packed: $OUT/logs.tar ($(tar tf "$OUT/logs.tar" | wc -l) entries)" ;;
    record)
      python3 scripts/write_validation_record.py --commit "$(git -c safe.directory='*' rev-parse HEAD 2>/dev/null || echo unknown)" --dest "$OUT/record" "$OUT" || rc=1 ;;
    *) echo "unknown stage $s"; rc=2 ;;
  esac
  echo "stage $s done at $(( $(date +%s) - start )) s (rc so far $rc)"
done
exit $rc
