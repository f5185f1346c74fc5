#!/usr/bin/env bash
# tests/sim/cli_simulate_default.sh RESA WORKDIR — `resa simulate --output F` (the default tiny
# study: dense / sparse / ReSA f=32) succeeds and prints its table; the same study resumed
# computes nothing; a TOML config file is accepted; the file is refused without --overwrite.
set -euo pipefail
resa=$1 dir=$2/default
rm -rf "$dir" && mkdir -p "$dir"
start=$(date +%s.%N)
"$resa" simulate --output "$dir/default.h5" | tee "$dir/out.txt"
end=$(date +%s.%N)
echo "default study: $(echo "$end - $start" | bc) s"
for run in dense sparse resa_f32; do grep -q "^$run " "$dir/out.txt" || { echo "FAIL: no row $run"; exit 1; }; done
"$resa" simulate --output "$dir/default.h5" --resume | tee "$dir/resume.txt"
grep -q "0 runs computed, kept complete: dense, sparse, resa_f32" "$dir/resume.txt"
if "$resa" simulate --output "$dir/default.h5" --quiet 2>"$dir/err.txt"; then echo "FAIL: overwrote"; exit 1; fi
grep -q -- "--overwrite" "$dir/err.txt"
printf 'model = "tiny"\nprompt-len = 150\nsteps = 20\nratio = "1/8"\nn-min = 2\nrun = ["resa:f=4", "sparse"]\n' >"$dir/study.toml"
"$resa" simulate --config "$dir/study.toml" --output "$dir/config.h5" --quiet | tee "$dir/cfg.txt"
grep -q "^resa_f4 " "$dir/cfg.txt"
echo PASS
