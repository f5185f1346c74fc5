#!/usr/bin/env bash
# tests/sim/cli_expect_fail.sh RESA WORKDIR REGEX ARGS... — runs `resa simulate ARGS` (with
# --output WORKDIR/out.h5 unless ARGS name one; @DIR@ in ARGS becomes WORKDIR) and passes when it
# exits non-zero, prints a message matching REGEX, leaves WORKDIR/existing.h5 untouched and
# creates no study file.
set -uo pipefail
resa=$1 dir=$2 regex=$3
shift 3
rm -rf "$dir" && mkdir -p "$dir"
printf 'steps = 10\nunknown_key = 1\n' >"$dir/bad.toml"
printf 'steps = [[[\n' >"$dir/bad2.toml"
printf 'precious' >"$dir/existing.h5"
args=()
have_output=0
for a in "$@"; do
  a=${a//@DIR@/$dir}
  [ "$a" = "--output" ] && have_output=1
  args+=("$a")
done
[ $have_output = 1 ] || args+=(--output "$dir/out.h5")
out=$("$resa" simulate --quiet "${args[@]}" 2>&1)
rc=$?
echo "$out"
[ $rc -ne 0 ] || { echo "FAIL: exit status 0"; exit 1; }
echo "$out" | grep -qE -- "$regex" || { echo "FAIL: message does not match '$regex'"; exit 1; }
[ "$(cat "$dir/existing.h5")" = precious ] || { echo "FAIL: existing file changed"; exit 1; }
[ ! -e "$dir/out.h5" ] || { echo "FAIL: a study file was left behind"; exit 1; }
echo "PASS (exit $rc)"
