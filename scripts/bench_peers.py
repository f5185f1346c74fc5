#!/usr/bin/env python3
"""scripts/bench_peers.py — peer timings for the GPU benchmark, in the same run: PyTorch
scaled_dot_product_attention (flash backend) for dense decode, with the queries of one GQA group
laid out as one KV head's query rows (q [B, Hkv, g, d], k/v [B, Hkv, L, d], bf16), and the
card's device-to-device copy bandwidth measured through PyTorch; with --flex also the block-sparse
peer, PyTorch FlexAttention (torch.compile'd flex_attention, enable_gqa) with a block mask that
keeps a random 1/10 of the 128-token KV blocks per (sequence, KV head) — the same share of the
cache our sparse step reads at ratio 1/10, at FlexAttention's own block granularity. Prints a
table; --json FILE writes the numbers. Run on the GPU machine (scripts/gpu_validate.sh bench)."""
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


def flex_rows(bw, ratio=0.1, block=128):
    """FlexAttention decode with a block mask: one query row per query head, keeping `ratio` of the
    `block`-token KV blocks (at least one) per (sequence, KV head), chosen at random (seeded)."""
    import torch._dynamo
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    torch._dynamo.config.cache_size_limit = 64
    flex = torch.compile(flex_attention)
    rows = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    for hq, hkv in ((12, 2), (28, 4)):
        g = hq // hkv
        for batch in (1, 8):
            for L in (65536, 262144):
                try:
                    nb = L // block
                    keep = max(1, round(ratio * nb))
                    order = torch.rand(batch, hkv, nb, device="cuda", generator=gen).argsort(dim=-1)
                    sel = torch.zeros(batch, hkv, nb, dtype=torch.bool, device="cuda")
                    sel.scatter_(-1, order[..., :keep], True)

                    def mask_mod(b, h, q_idx, kv_idx):
                        return sel[b, h // g, kv_idx // block]

                    bm = create_block_mask(mask_mod, batch, hq, 1, L, device="cuda", BLOCK_SIZE=block)
                    read = batch * hkv * keep * block * 128 * 2 * 2
                    copies = max(1, min(8, -(-400_000_000 // read)))  # rotate copies: no L2 reuse
                    ks = [torch.randn(batch, hkv, L, 128, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
                    vs = [torch.randn(batch, hkv, L, 128, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
                    q = torch.randn(batch, hq, 1, 128, device="cuda", dtype=torch.bfloat16)
                    t = time_us(lambda i: flex(q, ks[i % copies], vs[i % copies], block_mask=bm, enable_gqa=True),
                                iters=50)
                    rows.append({"peer": "torch flex_attention block-sparse", "shape": f"{hq}/{hkv}", "batch": batch,
                                 "L": L, "us": t, "bytes": read, "frac_bw": read / (t * 1e-6) / (bw * 1e9),
                                 "kv_block": block, "ratio": keep / nb})
                    print(f"flex block-sparse {hq}/{hkv} batch {batch} L {L} ({keep}/{nb} blocks of {block}): "
                          f"{t:.1f} us, {100 * rows[-1]['frac_bw']:.1f}% of copy bandwidth", flush=True)
                    del ks, vs
                    torch.cuda.empty_cache()
                except Exception as e:  # a peer that cannot run is reported, not fatal
                    print(f"flex block-sparse {hq}/{hkv} batch {batch} L {L}: failed: {type(e).__name__}: {e}"[:400])
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--flex", action="store_true", help="also the FlexAttention block-sparse peer")
    ap.add_argument("--case", action="append", default=[], metavar="HQ/HKV:BATCH:L",
                    help="time only these SDPA cases (repeatable; e.g. 28/4:8:262144 for a profile)")
    args = ap.parse_args()
    cases = set()
    for c in args.case:
        try:
            shape, batch, L = c.split(":")
            hq, hkv = (int(x) for x in shape.split("/"))
            cases.add((hq, hkv, int(batch), int(L)))
        except ValueError:
            ap.error(f"--case {c!r}: expected HQ/HKV:BATCH:L, e.g. 28/4:8:262144")
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
                if cases and (hq, hkv, batch, L) not in cases:
                    continue
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
    if args.flex:
        rows += flex_rows(bw)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev, "copy_bandwidth_gbs": bw, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
