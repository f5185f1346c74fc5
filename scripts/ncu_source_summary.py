#!/usr/bin/env python3
"""scripts/ncu_source_summary.py — where a kernel's warps wait, from Nsight Compute's source page.

Reads the CSV that `ncu --import REPORT --page source --print-source cuda,sass --csv` prints (what
`gpu_validate.sh ncu` writes for NCU_PROFILES="topk_source": a profile with the SourceCounters
section, of a build with -lineinfo) and prints the warp-state samples of the kernel's SASS
instructions: their total, the share of each stall reason, the share of each opcode, and the
instructions with the most samples with the CUDA line each belongs to. The source page lists a
SASS instruction under every source line it is attributed to (an inlined call and its caller);
each instruction is counted once, under a line of the program's own sources rather than of a
CUDA toolkit header when it has one (of the last such file the page lists).

Usage: python3 scripts/ncu_source_summary.py ncu_topk_source_12x2_b1_256k.csv [--top 25]
Test: python3 scripts/ncu_source_summary.py --self-test
"""
import argparse
import collections
import csv
import io
import sys

SAMPLES = "Warp Stall Sampling (All Samples)"


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def toolkit_header(path):
    """Whether `path` is one of the CUDA toolkit's headers (cooperative_groups.h, crt/...)."""
    return path.startswith(("/usr/local/cuda", "/usr/include/")) or ("/targets/" in path and "/include/" in path)


def read_instructions(lines):
    """{address: (sass text, (file, line, cuda source), {column: value})} from the source-page CSV."""
    header, file_name, own_file, line_key, found = None, "", False, None, {}
    for row in csv.reader(lines):
        if len(row) == 2 and row[0] == "File Path":
            file_name, own_file = row[1].rsplit("/", 1)[-1], not toolkit_header(row[1])
        elif row and row[0] == "Line No":
            header = row
        elif header and len(row) >= 5:
            if row[0] and row[2] == "-":  # a CUDA source line; its SASS follows
                line_key = (file_name, int(row[0]), row[1].strip())
            elif row[2].startswith("0x"):
                values = dict(zip(header[4:], row[4:]))
                if row[2] not in found or own_file:
                    found[row[2]] = (row[3].strip(), line_key, values)
    if header is None:
        raise SystemExit("ncu_source_summary: no 'Line No' header; is this `--page source --csv` output?")
    stalls = [c for c in header if c.startswith("stall_") and "Not Issued" not in c]
    return found, stalls


def opcode(sass):
    words = sass.split()
    return words[1] if words[0].startswith("@") and len(words) > 1 else words[0]


def summarize(found, stalls, top):
    total = sum(number(v[SAMPLES]) for _, _, v in found.values())
    out = [f"{len(found)} SASS instructions, {total:.0f} warp-state samples"]
    if total == 0:
        return "\n".join(out + ["no samples (was the SourceCounters section collected?)"])
    reasons = collections.Counter()
    ops = collections.Counter()
    for sass, _, values in found.values():
        for c in stalls:
            reasons[c[len("stall_"):]] += number(values.get(c, "0"))
        ops[opcode(sass)] += number(values[SAMPLES])
    out.append("by stall reason: " + ", ".join(f"{k} {v / total:.0%}" for k, v in reasons.most_common(10)))
    out.append("by opcode: " + ", ".join(f"{k} {v / total:.0%}" for k, v in ops.most_common(14)))
    out.append(f"top {top} instructions (share of samples, SASS, source line):")
    ranked = sorted(found.values(), key=lambda t: -number(t[2][SAMPLES]))[:top]
    for sass, line, values in ranked:
        where = f"{line[0]}:{line[1]}  {line[2][:70]}" if line else "?"
        out.append(f"  {number(values[SAMPLES]) / total:6.1%}  {sass[:48]:48}  {where}")
    return "\n".join(out)


def self_test():
    text = '\n'.join([
        '"File Path","/usr/local/cuda/targets/x86_64-linux/include/cooperative_groups.h"',
        '"Line No","Source","Address","Source","Warp Stall Sampling (All Samples)","stall_barrier","stall_wait"',
        '"10","sync();","-","-","3","3","0"',
        '"","","0x10","      BAR.SYNC.DEFER_BLOCKING 0x0","3","3","0"',
        '"File Path","/work/repo/cuda/src/selection.cu"',
        '"Line No","Source","Address","Source","Warp Stall Sampling (All Samples)","stall_barrier","stall_wait"',
        '"5","cg::this_cluster().sync();","-","-","3","3","0"',
        '"","","0x10","      BAR.SYNC.DEFER_BLOCKING 0x0","3","3","0"',
        '"6","x += y;","-","-","1","0","1"',
        '"","","0x20","      @P0 IADD3 R1, R2, R3, RZ","1","0","1"',
        '"File Path","/usr/local/cuda/targets/x86_64-linux/include/sm_30_intrinsics.hpp"',
        '"Line No","Source","Address","Source","Warp Stall Sampling (All Samples)","stall_barrier","stall_wait"',
        '"7","shfl();","-","-","1","0","1"',
        '"","","0x20","      @P0 IADD3 R1, R2, R3, RZ","1","0","1"',
    ])
    found, stalls = read_instructions(io.StringIO(text))
    assert len(found) == 2, found  # 0x10 counted once, under selection.cu
    assert found["0x10"][1][0] == "selection.cu"  # the program's line, not the toolkit header's
    assert found["0x20"][1][:2] == ("selection.cu", 6)  # a header listed later does not take it back
    assert toolkit_header("/usr/local/cuda/include/crt/sm_90_rt.hpp") and not toolkit_header("/home/u/k.cu")
    report = summarize(found, stalls, 5)
    assert "4 warp-state samples" in report and "barrier 75%" in report and "IADD3 25%" in report, report
    print("ncu_source_summary self-test: ok")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", nargs="?", help="the source page of one kernel, as CSV")
    parser.add_argument("--top", type=int, default=25, help="instructions to list (default 25)")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    if not args.csv:
        parser.error("a CSV file is needed (or --self-test)")
    try:
        with open(args.csv, newline="") as f:
            found, stalls = read_instructions(f)
    except OSError as e:
        sys.exit(f"ncu_source_summary: cannot read {args.csv}: {e.strerror}")
    print(summarize(found, stalls, args.top))


if __name__ == "__main__":
    main()
