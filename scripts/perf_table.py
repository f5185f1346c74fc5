#!/usr/bin/env python3
"""scripts/perf_table.py — the performance table and the issue's targets from one benchmark run.

Reads `bench.json` (cuda/bench/bench_gpu.cu) and, when present, `peers.json`
(scripts/bench_peers.py) of one validation record, both measured in the same run on the same card,
and prints Markdown: every row with time, bytes, % of the copy bandwidth measured in that run,
speedup over our dense decode, the peer (PyTorch SDPA for dense decode, FlexAttention with a
block mask for block-sparse attention) with our speedup over it, and the row's bound: the time
its bytes take at the measured copy bandwidth and, for rectification, its tensor-core work at the
card's matrix rate and its softmax at the instruction floor, whichever is largest; then each
performance target of DESIGN.md §5 / issue 7 with the rows it covers and whether it is met.
With --was OLDER_RECORD, a last column gives each row's time in that earlier run (compare runs
only on the same kind of card). When the record has `bench_long_cache.json` (bench_gpu
--capacity, gpu_validate.sh bench), a second table sets each of its rows beside the same row of
bench.json, the tight cache of the same run. Nothing is asserted here: the tables say what was
measured.

Usage: scripts/perf_table.py validation/<record>/ [--targets-only] [--was validation/<older record>/]
Self-test (synthetic files with known answers): scripts/perf_table.py --self-test
"""
import argparse
import json
import pathlib
import sys
import tempfile

# The benchmark's sparse configuration (resa::SparseConfig defaults, cuda/bench/bench_gpu.cu):
# blocks of 16 keys, ratio 1/10; the sparse step's traffic bound relative to dense decode is
# 1 / (1/b + ratio) (descriptors are 1/b of K per token, plus the selected share of K and V).
BLOCK_SIZE = 16
RATIO = 0.1
STEP_BOUND = 1.0 / (1.0 / BLOCK_SIZE + RATIO)
PEER_OF = {"dense decode": "torch sdpa flash", "block-sparse attention": "torch flex_attention block-sparse"}  # bench_peers.py
# The benchmark's fixed head dimension and rectification length (bench_gpu.cu: d = 128, f = 32).
HEAD_DIM = 128
RECT_F = 32
# Cards whose compute side is known: SMs, boost clock (GHz), dense bf16 matrix rate (TFLOP/s, the
# device notes' measured figure for the H200). Other cards get the memory bound alone.
CARDS = {"NVIDIA H200": dict(sms=132, clock_ghz=1.98, tensor_tflops=790.0)}
# The rectification softmax's instruction floor per computed score on sm_90 (cuda/PERFORMANCE.md,
# from the SASS listing): FMUL + FSETP + FSEL for the running max, 4 FADD + 7 FFMA + LEA + FMUL +
# FSETP + FSEL for the probability, half an F2FP for the bf16 pair.
SOFTMAX_INSTRUCTIONS = 18.5


def rectification_bound_us(shape, batch, L, nbytes, bw_gbs, card):
    """{memory, tensor, softmax} microseconds for one rectification of RECT_F tokens that reads
    `nbytes` (the kernel computes the group's RECT_F * g query rows, padded to 64-row warpgroups,
    against L keys)."""
    hq, hkv = (int(x) for x in shape.split("/"))
    rows = RECT_F * (hq // hkv)
    padded = -(-rows // 64) * 64
    scores = float(padded) * L * batch * hkv
    bounds = {"memory": nbytes / (bw_gbs * 1e3)}
    if card:
        flops = scores * 2 * (HEAD_DIM + HEAD_DIM + 8)  # Q·K, and P·[V | 1] with the ones column
        bounds["tensor"] = flops / (card["tensor_tflops"] * 1e6)
        bounds["softmax"] = scores * SOFTMAX_INSTRUCTIONS / 32 / (card["sms"] * 4 * card["clock_ghz"] * 1e3)
    return bounds


def load(record):
    record = pathlib.Path(record)
    bench_path = record / "bench.json"
    try:
        bench = json.loads(bench_path.read_text())
    except OSError as e:
        sys.exit(f"perf_table: cannot read {bench_path}: {e.strerror}")
    except json.JSONDecodeError as e:
        sys.exit(f"perf_table: {bench_path} is not JSON: {e}")
    if "rows" not in bench or "copy_bandwidth_gbs" not in bench:
        sys.exit(f"perf_table: {bench_path} has no 'rows' or 'copy_bandwidth_gbs' (not bench_gpu --json output?)")
    peers = {}
    peers_path = record / "peers.json"
    if peers_path.exists():
        for r in json.loads(peers_path.read_text()).get("rows", []):
            peers[(r["peer"], r["shape"], r["batch"], r["L"])] = r["us"]
    return bench, peers


def kernel_name(k):
    return "sparse step" if k.startswith("sparse step") else k


def rows_with_peers(bench, peers):
    dense = {(r["shape"], r["batch"], r["L"]): r["us"] for r in bench["rows"] if r["kernel"] == "dense decode"}
    bw = bench["copy_bandwidth_gbs"]
    card = CARDS.get(bench.get("device", ""))
    rect_bytes = {(r["shape"], r["batch"], r["L"]): r["bytes"] for r in bench["rows"] if r["kernel"] == "rectification f=32"}
    out = []
    for r in bench["rows"]:
        key = (r["shape"], r["batch"], r["L"])
        peer_name = PEER_OF.get(r["kernel"])
        peer_us = peers.get((peer_name, *key)) if peer_name else None
        vs_dense = dense[key] / r["us"] if key in dense and r["kernel"] != "selection" else None
        bound = r["bytes"] / (bw * 1e3)  # µs at the copy bandwidth
        if r["kernel"] in ("rectification f=32", "amortized ReSA step"):
            rect = max(rectification_bound_us(*key, rect_bytes.get(key, r["bytes"]), bw, card).values())
            if r["kernel"] == "rectification f=32":
                bound = rect
            elif key in rect_bytes:  # sparse step at bandwidth + one rectification per RECT_F steps
                bound = (r["bytes"] - rect_bytes[key] / RECT_F) / (bw * 1e3) + rect / RECT_F
        out.append(dict(r, kernel=kernel_name(r["kernel"]), vs_dense=vs_dense, peer=peer_name, peer_us=peer_us,
                        dense_us=dense.get(key), bound_us=bound))
    return out


def fmt_mb(b):
    mb = b / 1e6
    return f"{mb:.0f}" if mb >= 100 else f"{mb:.1f}" if mb >= 1 else f"{mb:.2f}"


def fmt_len(L):
    return f"{L // 1024}K" if L % 1024 == 0 else str(L)


def table(rows, bw, was=None):
    """Markdown rows; `was` = (label, {(kernel, shape, batch, L): µs}) adds that run's time per row."""
    was_head = f" was ({was[0]}) |" if was else ""
    lines = [f"Copy bandwidth (device-to-device, read + write) measured in the run: {bw:.0f} GB/s.", "",
             "| kernel | shape | batch | L | time µs | MB | % copy BW | bound µs | % of bound | vs our dense | "
             "peer (same run) | ours vs peer |" + was_head,
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if was else "")]
    for r in rows:
        vs = "—" if r["vs_dense"] is None else (f"{r['vs_dense']:.2f}x" if r["kernel"] != "rectification f=32"
                                                 else f"{r['us'] / r['dense_us']:.2f}x the time")
        peer = "—" if r["peer_us"] is None else f"{'SDPA' if 'sdpa' in r['peer'] else 'Flex'} {r['peer_us']:.1f} µs"
        ratio = "—" if r["peer_us"] is None else f"{r['peer_us'] / r['us']:.2f}x"
        lines.append(f"| {r['kernel']} | {r['shape']} | {r['batch']} | {fmt_len(r['L'])} | {r['us']:.1f} | "
                     f"{fmt_mb(r['bytes'])} | {100 * r['frac_bw']:.1f}% | {r['bound_us']:.1f} | "
                     f"{100 * r['bound_us'] / r['us']:.0f}% | {vs} | {peer} | {ratio} |")
        if was:
            before = was[1].get((r["kernel"], r["shape"], r["batch"], r["L"]))
            lines[-1] += " — |" if before is None else f" {before:.1f} |"
    return "\n".join(lines)


def targets(rows, bw):
    """[(target, met: bool, detail)] for every target that the rows cover."""
    by = {}
    for r in rows:
        by.setdefault(r["kernel"], []).append(r)
    res = []

    def judge(name, cases, ok, show):
        if cases:
            bad = [c for c in cases if not ok(c)]
            detail = "; ".join(show(c) + ("" if ok(c) else " (not met)") for c in cases)
            res.append((name, not bad, detail))

    tag = lambda r: f"{r['shape']} b{r['batch']} {fmt_len(r['L'])}"
    dense = by.get("dense decode", [])
    judge("dense decode ≥ 85% of copy bandwidth at L ≥ 64K", [r for r in dense if r["L"] >= 65536],
          lambda r: r["frac_bw"] >= 0.85, lambda r: f"{tag(r)} {100 * r['frac_bw']:.1f}%")
    judge("dense decode within 5 µs of bytes / bandwidth at 4K-16K, batch 1",
          [r for r in dense if r["batch"] == 1 and 4096 <= r["L"] <= 16384],
          lambda r: r["us"] - r["bytes"] / (bw * 1e3) <= 5.0,
          lambda r: f"{tag(r)} {r['us']:.1f} µs vs bound {r['bytes'] / (bw * 1e3):.1f}")
    judge("dense decode faster than SDPA at every length", [r for r in dense if r["peer_us"] is not None],
          lambda r: r["us"] < r["peer_us"], lambda r: f"{tag(r)} {r['us']:.1f} vs {r['peer_us']:.1f} µs")
    judge(f"sparse step ≥ 80% of the 1/(1/b + ratio) = {STEP_BOUND:.2f}x bound at L ≥ 64K (≥ {0.8 * STEP_BOUND:.2f}x)",
          [r for r in by.get("sparse step", []) if r["L"] >= 65536],
          lambda r: r["vs_dense"] >= 0.8 * STEP_BOUND, lambda r: f"{tag(r)} {r['vs_dense']:.2f}x")
    judge("selection ≤ 10 µs per layer at batch 1", [r for r in by.get("selection", []) if r["batch"] == 1],
          lambda r: r["us"] <= 10.0, lambda r: f"{tag(r)} {r['us']:.1f} µs")
    judge("rectification f=32 ≤ 1.3x one dense decode step (in brackets: its bound over the dense step)",
          by.get("rectification f=32", []), lambda r: r["us"] <= 1.3 * r["dense_us"],
          lambda r: f"{tag(r)} {r['us'] / r['dense_us']:.2f}x [{r['bound_us'] / r['dense_us']:.2f}x]")
    judge("amortized ReSA step at 256K ≥ 4.5x our dense kernel",
          [r for r in by.get("amortized ReSA step", []) if r["L"] == 262144],
          lambda r: r["vs_dense"] >= 4.5, lambda r: f"{tag(r)} {r['vs_dense']:.2f}x")
    judge("block-sparse attention faster than FlexAttention (block mask, same byte share)",
          [r for r in by.get("block-sparse attention", []) if r["peer_us"] is not None],
          lambda r: r["us"] < r["peer_us"], lambda r: f"{tag(r)} {r['peer_us'] / r['us']:.1f}x faster")
    return res


def report(record, targets_only=False, label=None, was_record=None):
    """The table and the targets of the run in folder `record` (named `label`, default the folder's
    name); with `was_record`, each row's time in that earlier run too."""
    bench, peers = load(record)
    rows = rows_with_peers(bench, peers)
    bw = bench["copy_bandwidth_gbs"]
    label = label or pathlib.Path(record).name
    was = None
    if was_record:
        old, _ = load(was_record)
        if old.get("device") != bench.get("device"):
            sys.exit(f"perf_table: --was {was_record} ran on {old.get('device')!r}, this run on "
                     f"{bench.get('device')!r}: compare runs of the same kind of card")
        was = (pathlib.Path(was_record).name,
               {(kernel_name(r["kernel"]), r["shape"], r["batch"], r["L"]): r["us"] for r in old["rows"]})
    out = [] if targets_only else [f"Card: {bench.get('device', 'unknown')}; record `{label}`.", "",
                                   table(rows, bw, was), ""]
    out.append("Targets (the rows each covers; met only if every one is):")
    for name, met, detail in targets(rows, bw):
        out.append(f"- {'**met**' if met else 'not met'}: {name} — {detail}")
    long_path = pathlib.Path(record) / "bench_long_cache.json"
    if not targets_only and long_path.exists():
        out += ["", long_cache_table(json.loads(long_path.read_text()), bench)]
    return "\n".join(out)


def long_cache_table(long, bench):
    """Markdown: each row of a bench_gpu --capacity run beside the same row of the tight-cache run."""
    tight = {(r["kernel"], r["shape"], r["batch"], r["L"]): r["us"] for r in bench["rows"]}
    launched = "a bound of L + 33 keys (--bounded)" if long.get("bounded") else "the capacity"
    lines = [f"Short sequences in a cache of {long.get('capacity', '?')} tokens, the attention launched for "
             f"{launched}; beside each row the same row in a cache of L + 33 tokens (bench.json, same run).", "",
             "| kernel | shape | batch | L | time µs | tight cache µs | long / tight |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in long["rows"]:
        t = tight.get((r["kernel"], r["shape"], r["batch"], r["L"]))
        lines.append(f"| {kernel_name(r['kernel'])} | {r['shape']} | {r['batch']} | {fmt_len(r['L'])} | {r['us']:.1f} | "
                     + (f"{t:.1f} | {r['us'] / t:.2f}x |" if t else "— | — |"))
    return "\n".join(lines)


def self_test():
    bench = {"device": "Test GPU", "copy_bandwidth_gbs": 1000.0, "rows": [
        {"kernel": "dense decode", "shape": "12/2", "batch": 1, "L": 65536, "us": 100.0, "bytes": 9e7, "frac_bw": 0.9,
         "speedup_vs_dense": 1.0},
        {"kernel": "dense decode", "shape": "12/2", "batch": 1, "L": 4096, "us": 8.0, "bytes": 4e6, "frac_bw": 0.5,
         "speedup_vs_dense": 1.0},
        {"kernel": "selection", "shape": "12/2", "batch": 1, "L": 65536, "us": 12.0, "bytes": 1e6, "frac_bw": 0.1,
         "speedup_vs_dense": 0.0},
        {"kernel": "sparse step (update+select+attend)", "shape": "12/2", "batch": 1, "L": 65536, "us": 20.0,
         "bytes": 1e7, "frac_bw": 0.5, "speedup_vs_dense": 5.0},
        {"kernel": "rectification f=32", "shape": "12/2", "batch": 1, "L": 65536, "us": 120.0, "bytes": 9e7,
         "frac_bw": 0.75, "speedup_vs_dense": 0.83}]}
    peers = {"rows": [{"peer": "torch sdpa flash", "shape": "12/2", "batch": 1, "L": 65536, "us": 90.0},
                      {"peer": "torch sdpa flash", "shape": "12/2", "batch": 1, "L": 4096, "us": 20.0}]}
    with tempfile.TemporaryDirectory() as d:
        (pathlib.Path(d) / "bench.json").write_text(json.dumps(bench))
        (pathlib.Path(d) / "peers.json").write_text(json.dumps(peers))
        text = report(d)
        rows = rows_with_peers(*load(d))
    res = [met for _, met, _ in targets(rows, 1000.0)]
    assert "| dense decode | 12/2 | 1 | 64K | 100.0 | 90.0 | 90.0% | 90.0 | 90% | 1.00x | SDPA 90.0 µs | 0.90x |" in text, text
    # An unknown card: the rectification's bound is its bytes at the copy bandwidth alone.
    assert "| rectification f=32 | 12/2 | 1 | 64K | 120.0 | 90.0 | 75.0% | 90.0 | 75% | 1.20x the time | — | — |" in text, text
    assert "12/2 b1 64K 1.20x [0.90x]" in text, text
    # In order: 90% >= 85%, met; 8 us against a 4 us bound is within 5 us, met; 100 > 90 us, the
    # SDPA target is not met (though 8 < 20 us at 4K); 5.0x >= 4.92x, met; selection 12 > 10 us,
    # not met; rectification 1.2x <= 1.3x, met. No amortized or block-sparse rows: not judged.
    assert res == [True, True, False, True, False, True], res
    assert "12/2 b1 64K 100.0 vs 90.0 µs (not met)" in text and text.count("12/2 b1 4K 8.0 vs 20.0 µs") == 1, text
    one = dict(bench, rows=[dict(bench["rows"][0], us=80.0)])  # now faster than SDPA
    got = [met for _, met, _ in targets(rows_with_peers(one, {("torch sdpa flash", "12/2", 1, 65536): 90.0}), 1000.0)]
    assert got == [True, True], got  # only the two targets that a 64K dense row covers are judged
    # On the H200 the tensor-core work bounds rectification at 28/4 batch 8 256K: 256 rows (224
    # padded) x 262144 keys x 32 heads x 2 x (128 + 136) flops at 790 TFLOP/s = 1435.3 µs, above
    # its 4295 MB at 4269 GB/s (1006.1 µs) and the softmax floor (1187.6 µs).
    b = rectification_bound_us("28/4", 8, 262144, 4294967296, 4269.0, CARDS["NVIDIA H200"])
    assert (round(b["tensor"], 1), round(b["memory"], 1), round(b["softmax"], 1)) == (1435.3, 1006.1, 1187.6), b
    # --was: the earlier run's time per row, "—" where it had no such row, and a refusal across cards.
    with tempfile.TemporaryDirectory() as d, tempfile.TemporaryDirectory() as old:
        (pathlib.Path(d) / "bench.json").write_text(json.dumps(bench))
        (pathlib.Path(old) / "bench.json").write_text(json.dumps(dict(bench, rows=[dict(bench["rows"][0], us=120.0)])))
        text = report(d, was_record=old)
        assert "| 64K | 100.0 | 90.0 | 90.0% | 90.0 | 90% | 1.00x | — | — | 120.0 |" in text and f"was ({pathlib.Path(old).name}) |" in text, text
        assert "| 12/2 | 1 | 4K | 8.0 |" in text and text.split("| 12/2 | 1 | 4K | 8.0 |")[1].split("\n")[0].endswith("— |"), text
        (pathlib.Path(old) / "bench.json").write_text(json.dumps(dict(bench, device="Other GPU")))
        try:
            report(d, was_record=old)
            raise AssertionError("--was across cards was not refused")
        except SystemExit as e:
            assert "same kind of card" in str(e), e
    # The long-cache table: each row beside the tight cache's, "—" where bench.json has no such row.
    with tempfile.TemporaryDirectory() as d:
        (pathlib.Path(d) / "bench.json").write_text(json.dumps(bench))
        long = {"capacity": 262177, "bounded": False, "rows": [dict(bench["rows"][1], us=12.0),
                                                                dict(bench["rows"][1], L=16384, us=20.0)]}
        (pathlib.Path(d) / "bench_long_cache.json").write_text(json.dumps(long))
        text = report(d)
        assert "cache of 262177 tokens, the attention launched for the capacity" in text, text
        assert "| dense decode | 12/2 | 1 | 4K | 12.0 | 8.0 | 1.50x |" in text, text
        assert "| dense decode | 12/2 | 1 | 16K | 20.0 | — | — |" in text, text
        assert "262177" not in report(d, targets_only=True)
    # The peer names are those scripts/bench_peers.py writes (a rename would empty the peer column).
    peers_script = (pathlib.Path(__file__).parent / "bench_peers.py").read_text()
    for name in PEER_OF.values():
        assert f'"{name}"' in peers_script, f"bench_peers.py no longer writes peer {name!r}"
    print("perf_table self-test: ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", nargs="?", help="a validation record folder holding bench.json (and peers.json)")
    ap.add_argument("--targets-only", action="store_true", help="print only the targets")
    ap.add_argument("--was", metavar="OLDER_RECORD", help="add each row's time in an earlier record of the same card")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    if a.self_test:
        return self_test()
    if not a.record:
        ap.error("the record folder is required")
    print(report(a.record, a.targets_only, was_record=a.was))


if __name__ == "__main__":
    main()
