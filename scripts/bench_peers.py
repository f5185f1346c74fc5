#!/usr/bin/env python3
"""scripts/bench_peers.py — peer timings for the GPU benchmark, in the same run: PyTorch
scaled_dot_product_attention (flash backend) for dense decode, with the queries of one GQA group
laid out as one KV head's query rows (q [B, Hkv, g, d], k/v [B, Hkv, L, d], bf16), and the
card's device-to-device copy bandwidth measured through PyTorch. Prints a table; --json FILE
writes the numbers. Run on the GPU machine (scripts/gpu_validate.sh bench)."""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def time_us(fn, iters=50, reps=5):
    for _ in range(3):
        fn(0)
    torch.cuda.synchronize()
    times = []
    for r in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for i in range(iters):
            fn(r * iters + i)
        b.record()
        b.synchronize()
        times.append(1000.0 * a.elapsed_time(b) / iters)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    dev = torch.cuda.get_device_name()
    n = 2 << 30
    src = torch.ones(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    us = time_us(lambda i: dst.copy_(src), iters=5, reps=7)
    bw = 2 * n / (us * 1e-6) / 1e9
    print(f"peer device: {dev}\npeer copy bandwidth (torch, read+write): {bw:.0f} GB/s")
    rows = []
    for hq, hkv in ((12, 2), (28, 4)):
        g = hq // hkv
        for batch in (1, 8):
            for L in (4096, 16384, 65536, 131072, 262144):
                kv_bytes = batch * hkv * L * 128 * 2 * 2
                copies = max(1, min(8, -(-400_000_000 // kv_bytes)))
                ks = [torch.randn(batch, hkv, L, 128, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
                vs = [torch.randn(batch, hkv, L, 128, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
                q = torch.randn(batch, hkv, g, 128, device="cuda", dtype=torch.bfloat16)
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    t = time_us(lambda i: F.scaled_dot_product_attention(q, ks[i % copies], vs[i % copies]),
                                iters=20 if L >= 65536 else 50)
                rows.append({"peer": "torch sdpa flash", "shape": f"{hq}/{hkv}", "batch": batch, "L": L,
                             "us": t, "bytes": kv_bytes, "frac_bw": kv_bytes / (t * 1e-6) / (bw * 1e9)})
                print(f"sdpa-flash {hq}/{hkv} batch {batch} L {L}: {t:.1f} us, "
                      f"{100 * rows[-1]['frac_bw']:.1f}% of copy bandwidth")
                del ks, vs
                torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev, "copy_bandwidth_gbs": bw, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
