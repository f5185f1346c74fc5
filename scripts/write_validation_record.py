#!/usr/bin/env python3
"""scripts/write_validation_record.py — turn the logs of scripts/gpu_validate.sh (one or more
$OUT folders) into a validation record: validation/<date>-<card>-<commit>.md with the machine,
the gpu-labelled test counts, the `resa verify` table, the compute-sanitizer summaries, the
benchmark output with its performance table and targets (scripts/perf_table.py), and copies of the
raw logs beside it.

Usage: python3 scripts/write_validation_record.py --commit HASH OUT_DIR [OUT_DIR ...] [--dest validation]
"""
import argparse
import datetime
import pathlib
import re
import shutil
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import perf_table  # noqa: E402  (scripts/perf_table.py)


def read(dirs, name):
    for d in dirs:
        p = pathlib.Path(d) / name
        if p.exists():
            return p.read_text(errors="replace")
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--commit", required=True, help="commit the logs were produced from")
    ap.add_argument("--dest", default="validation")
    args = ap.parse_args()
    machine = read(args.dirs, "machine.txt") or ""
    card = machine.splitlines()[2].split(",")[0].strip() if len(machine.splitlines()) > 2 else "unknown card"
    date = (re.search(r"date: (\S+)", machine) or [None, datetime.datetime.utcnow().isoformat()])[1][:10]
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    dest = pathlib.Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    name = f"{date}-{slug}-{args.commit[:10]}"
    out = [f"# GPU validation record: {card}, commit {args.commit}", "",
           "Produced by `scripts/gpu_validate.sh` on the device machine; this file by "
           "`scripts/write_validation_record.py`. Raw logs: `" + name + "/`.", "", "## Machine", "```",
           machine.strip(), "```", ""]
    probe = read(args.dirs, "probe.log")
    if probe:
        keep = [l for l in probe.splitlines() if re.search(r"matches|differ|probe on|outputs", l)]
        out += ["## Tensor-core probes (`cuda/lab/tc_probe.cu`, `cuda/lab/wgmma_probe.cu`)", "```", *keep, "```", ""]
    tests = read(args.dirs, "tests.log")
    if tests:
        summary = [l for l in tests.splitlines() if re.search(r"tests passed|tests failed|Total Test time", l)]
        out += ["## GoogleTest, label `gpu` (`ctest -L gpu`)", "```", *summary, "```", ""]
    verify = read(args.dirs, "verify.log")
    if verify:
        lines = verify.splitlines()
        start = next((i for i, l in enumerate(lines) if l.startswith("kernel ")), None)
        table = lines[start:] if start is not None else lines[-20:]
        head = [l for l in lines if l.startswith("resa verify on")]
        cases = sum(1 for l in lines if l.endswith("  ok") or "MISMATCH" in l)
        out += ["## `resa verify` (bit patterns, GPU vs CPU reference)", "```", *head, *table, "```",
                f"{cases} cases in total (one line each in the raw log).", ""]
    # memcheck, initcheck and synccheck (stage sanitize), then racecheck (stage racecheck).
    san = "\n".join(t for t in (read(args.dirs, "sanitizer.log"), read(args.dirs, "sanitizer_racecheck.log")) if t)
    if san:
        keep = [l for l in san.splitlines() if "SUMMARY" in l or l.startswith("sanitizer ") or l.startswith("verify:")]
        out += ["## compute-sanitizer on `resa verify --quick --no-long-context`", "```", *keep, "```", ""]
    bench = read(args.dirs, "bench.log")
    if bench:
        out += ["## Benchmark (baseline)", "```", bench.strip(), "```", ""]
    long_cache = read(args.dirs, "bench_long_cache.log")
    if long_cache:
        out += ["## Benchmark, short sequences in a long cache (`bench_gpu --capacity`)", "```", long_cache.strip(), "```", ""]
    bench_dir = next((d for d in args.dirs if (pathlib.Path(d) / "bench.json").exists()), None)
    if bench_dir:  # the table and the targets, by scripts/perf_table.py from the same run
        out += ["## Performance table and targets (`scripts/perf_table.py`)", "", perf_table.report(bench_dir, label=name), ""]
    (dest / f"{name}.md").write_text("\n".join(out) + "\n")
    raw = dest / name
    raw.mkdir(exist_ok=True)
    for d in args.dirs:
        for p in pathlib.Path(d).iterdir():
            if p.suffix in (".log", ".txt", ".json") and p.name not in ("build.log", "configure.log"):
                shutil.copy(p, raw / p.name)
    print(dest / f"{name}.md")


if __name__ == "__main__":
    main()
