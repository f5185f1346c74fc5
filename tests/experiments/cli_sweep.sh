#!/usr/bin/env bash
# tests/experiments/cli_sweep.sh RESA OUTDIR — the sweep CLI: --dry-run prints one line per
# combination; a bad spec is refused naming the key; a small sweep writes the file, the CSV and
# Markdown tables; `resa report` reprints it. Plots are checked when matplotlib is available.
set -euo pipefail
resa=$1 out=$2
rm -rf "$out" && mkdir -p "$out"
n=$("$resa" sweep default --dry-run | grep -c '^s0_')
[ "$n" -eq 8 ] || { echo "dry run listed $n combinations, expected 8"; exit 1; }
printf 'model = "tiny"\nsteps = 4\nbogus_key = 1\n' > "$out/bad.toml"
if "$resa" sweep "$out/bad.toml" --output "$out/bad.h5" 2> "$out/bad.err"; then echo "bad spec accepted"; exit 1; fi
grep -q "bogus_key" "$out/bad.err" || { echo "error does not name the key:"; cat "$out/bad.err"; exit 1; }
[ ! -e "$out/bad.h5" ] || { echo "a refused spec left a file"; exit 1; }
cat > "$out/small.toml" <<'SPEC'
name = "small"
model = "tiny"
layers = 1
tokens = "random"
prompt_len = 64
steps = 12
[grid]
f = [0, 4]
ratio = ["1/4"]
b = [8]
n_min = [0]
SPEC
"$resa" sweep "$out/small.toml" --output "$out/small.h5" -q > "$out/run.txt"
grep -q "s0_b8_r1-4_nmin0_nloc1_nsink0_f4" "$out/run.txt"
[ -s "$out/small.csv" ] && [ -s "$out/small.md" ]
if /usr/bin/python3 -c 'import h5py, matplotlib' 2>/dev/null; then
  [ -s "$out/small_misalignment.png" ] && [ -s "$out/small_tradeoff.png" ] || { echo "plots missing"; exit 1; }
fi
"$resa" report "$out/small.h5" | grep -q "dense_s0"
if "$resa" sweep "$out/small.toml" --output "$out/small.h5" -q 2> "$out/again.err"; then echo "overwrote without --overwrite"; exit 1; fi
grep -q -- "--resume" "$out/again.err"
echo "cli sweep: ok"
