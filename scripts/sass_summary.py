#!/usr/bin/env python3
"""scripts/sass_summary.py — static SASS opcode counts per kernel from `cuobjdump -sass` output.

What the compiler made of each kernel: instructions per function, the most frequent opcodes, and
the ones that point at overheads (R2UR: values moved to uniform registers, e.g. matrix descriptors
built per instruction; LDC: kernel parameters re-read; LDL/STL: register spills). Counts are
static (instructions in the code, not executed ones); compare two builds of the same kernel.

Usage: cuobjdump -sass obj.o > all.sass
       scripts/sass_summary.py all.sass [--listing NAME_SUBSTRING OUT_FILE]...
Run by `scripts/gpu_validate.sh sass`. Self-test: scripts/sass_summary.py --self-test
"""
import argparse
import collections
import re
import sys

WATCH = ("R2UR", "LDC", "ULDC", "LDL", "STL", "HGMMA", "WARPGROUP", "BAR", "LDGSTS", "DEPBAR")
INSTRUCTION = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;")


def parse(text):
    """Returns {function name: [instruction text, ...]} in the order of the listing."""
    functions, name = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            name = m.group(1)
            functions.setdefault(name, [])
            continue
        m = INSTRUCTION.search(line)
        if name and m:
            functions[name].append(m.group(1))
    return functions


def opcode(instruction):
    words = instruction.split()
    if words and words[0].startswith("@"):
        words = words[1:]
    return words[0].split(".")[0] if words else "?"


def summary(functions):
    lines = []
    for name, body in functions.items():
        ops = collections.Counter(opcode(i) for i in body)
        watch = ", ".join(f"{op} {ops[op]}" for op in WATCH if ops[op])
        top = ", ".join(f"{op} {n}" for op, n in ops.most_common(14))
        lines += [f"{name}", f"  {len(body)} instructions; {watch}", f"  top: {top}"]
    return "\n".join(lines)


def self_test():
    sample = """
        Function : _Z6kernelv
        /*0000*/                   LDC R1, c[0x0][0x28] ;            /* 0x00000a00ff017b82 */
        /*0010*/              @!P0 R2UR UR4, R2 ;                    /* 0x000000000204a2ca */
        /*0020*/                   FFMA R3, R4, R5, R6 ;             /* 0x0000000504037223 */
        /*0030*/                   FFMA.FTZ R3, R4, R5, R6 ;         /* 0x0000000504037223 */
        Function : _Z5otherv
        /*0000*/                   EXIT ;                            /* 0x000000000000794d */
    """
    f = parse(sample)
    assert list(f) == ["_Z6kernelv", "_Z5otherv"], f
    assert [opcode(i) for i in f["_Z6kernelv"]] == ["LDC", "R2UR", "FFMA", "FFMA"], f
    s = summary(f)
    assert "4 instructions; R2UR 1, LDC 1" in s and "top: FFMA 2" in s, s
    print("sass_summary self-test: ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sass", nargs="?", help="cuobjdump -sass output")
    ap.add_argument("--listing", nargs=2, action="append", default=[], metavar=("NAME", "OUT"),
                    help="write the listing of the first function whose name contains NAME (repeatable)")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    if a.self_test:
        return self_test()
    if not a.sass:
        ap.error("the cuobjdump -sass output file is required")
    try:
        text = open(a.sass).read()
    except OSError as e:
        sys.exit(f"sass_summary: cannot read {a.sass}: {e.strerror}")
    functions = parse(text)
    if not functions:
        sys.exit(f"sass_summary: {a.sass} holds no 'Function :' sections (not cuobjdump -sass output?)")
    print(summary(functions))
    for name, out in a.listing:
        match = [f for f in functions if name in f]
        if not match:
            sys.exit(f"sass_summary: no function name contains {name!r}")
        with open(out, "w") as fh:
            fh.write(f"{match[0]}\n" + "\n".join(functions[match[0]]) + "\n")


if __name__ == "__main__":
    main()
