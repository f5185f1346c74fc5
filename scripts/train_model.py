#!/usr/bin/env python3
"""scripts/train_model.py — trains the project's own byte-level Qwen2 language model (the model the
real-attention studies run on) with PyTorch + Hugging Face transformers on one GPU.

Model: Qwen2ForCausalLM, vocabulary = the 256 byte values + <|endoftext|> (id 256, between
documents), hidden 384, 6 layers, 6 query heads sharing 1 KV head (GQA group 6, as Qwen2-1.5B's
12/2), head dim 64, QKV bias, RoPE (theta 10000), SwiGLU (intermediate 768), RMSNorm, tied
embeddings, context 4096. About 7.5M parameters (~15 MB in bf16).

Data: data/corpus from scripts/prepare_corpus.py (train.bin, heldout.bin, documents.tsv). Each
split is re-assembled from its documents with <|endoftext|> between them. Every step draws
`batch` windows of `seq`+1 tokens at uniform offsets from a seeded generator (numpy PCG64), so the
data order is a function of --seed alone.

Training: AdamW (beta 0.9/0.95, weight decay 0.1 on matrices only), linear warm-up then cosine to
10% of the peak rate, gradient clipping at 1.0, fp32 master weights with bf16 autocast, SDPA
(flash) attention. The run is seeded; GPU kernels with atomics (attention backward) make the
bits of two runs differ slightly, not the curve.

Outputs in --out: config.json + model.safetensors (bf16, save_pretrained), generation_config.json,
training_log.csv (step, tokens, loss, lr, grad norm, time, throughput, periodic held-out bits per
byte), eval.json (held-out bits per byte of the saved bf16 checkpoint over all of heldout.bin in
non-overlapping 4096-token windows, excluding <|endoftext|> targets, beside the corpus's byte
bigram/unigram baselines; the settings, versions and step count of the run) and, unless
--reference-logits 0, reference_logits.safetensors: the logits of the saved checkpoint, computed by
transformers in float64 with eager attention, on the first N bytes of a held-out document (the
simulator's test compares its own logits with these).

Usage (GPU machine; the defaults are the shipped model's settings, models/resa-byte-qwen2/README.md):
  python3 scripts/train_model.py --corpus data/corpus --out models/resa-byte-qwen2
  python3 scripts/train_model.py --smoke ...   # 2 layers, seq 512, 20 steps: checks the pipeline
"""
import argparse
import csv
import hashlib
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

EOT = 256          # <|endoftext|>, between documents
VOCAB = 257


def read_split(corpus, split):
    """The split's bytes as int16 token ids with EOT after every document (documents.tsv order)."""
    with open(os.path.join(corpus, f"{split}.bin"), "rb") as f:
        data = f.read()
    sizes = []
    with open(os.path.join(corpus, "documents.tsv")) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["split"] == split:
                sizes.append(int(row["bytes"]))
    # prepare_corpus joins documents with b"\n\n"
    if sum(sizes) + 2 * (len(sizes) - 1) != len(data):
        sys.exit(f"train_model: {split}.bin has {len(data)} bytes, documents.tsv says "
                 f"{sum(sizes)} + separators; re-run scripts/prepare_corpus.py")
    raw = np.frombuffer(data, dtype=np.uint8)
    parts, pos = [], 0
    for n in sizes:
        parts.append(raw[pos:pos + n].astype(np.int16))
        parts.append(np.array([EOT], dtype=np.int16))
        pos += n + 2
    return np.concatenate(parts), sizes


def model_config(args):
    from transformers import Qwen2Config
    kw = dict(vocab_size=VOCAB, hidden_size=args.hidden, intermediate_size=args.intermediate,
              num_hidden_layers=args.layers, num_attention_heads=args.heads,
              num_key_value_heads=args.kv_heads, head_dim=64, max_position_embeddings=args.seq,
              rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu", use_sliding_window=False,
              attention_dropout=0.0, bos_token_id=EOT, eos_token_id=EOT, pad_token_id=EOT,
              initializer_range=0.02)
    cfg = Qwen2Config(**kw, rope_theta=args.rope_theta)
    theta = getattr(cfg, "rope_theta", None)
    if theta is None:  # transformers 5 keeps it in rope_parameters
        theta = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta")
    if theta != args.rope_theta:
        sys.exit(f"train_model: transformers did not take rope_theta={args.rope_theta} (got {theta})")
    if args.hidden != args.heads * 64:
        sys.exit("train_model: --hidden must be --heads x 64 (head dim 64)")
    return cfg


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t))))


@torch.no_grad()
def bits_per_byte(model, tokens, seq, batch, device, max_windows=None):
    """Mean -log2 p over non-overlapping windows of seq+1 tokens (each window's first token is
    context only); <|endoftext|> targets are not bytes and are left out."""
    n_win = (len(tokens) - 1) // seq
    if max_windows is not None:
        n_win = min(n_win, max_windows)
    total_bits, total_bytes = 0.0, 0
    t = torch.from_numpy(tokens[: n_win * seq + 1].astype(np.int64)).to(device)
    for w0 in range(0, n_win, batch):
        idx = torch.arange(w0, min(n_win, w0 + batch), device=device)[:, None] * seq
        pos = idx + torch.arange(seq + 1, device=device)[None, :]
        win = t[pos]
        x, y = win[:, :-1], win[:, 1:]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and model.dtype == torch.float32):
            logits = model(input_ids=x, use_cache=False).logits
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        keep = (y.reshape(-1) != EOT)
        total_bits += (nll[keep].double().sum() / math.log(2)).item()
        total_bytes += int(keep.sum().item())
    return total_bits / total_bytes, total_bytes


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--intermediate", type=int, default=768)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=1)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=300, help="held-out bits per byte on 64 windows")
    ap.add_argument("--reference-logits", type=int, default=512, metavar="N",
                    help="also write the float64 transformers logits of N held-out bytes")
    ap.add_argument("--smoke", action="store_true", help="2 layers, seq 512, 20 steps, tiny eval")
    args = ap.parse_args()
    if args.smoke:
        args.layers, args.seq, args.steps, args.warmup, args.eval_every = 2, 512, 20, 5, 10
        args.reference_logits = 0
    if not torch.cuda.is_available():
        sys.exit("train_model: no CUDA device; training runs on the GPU machine (scripts/gpu_validate.sh train)")
    from transformers import Qwen2ForCausalLM
    import transformers

    os.makedirs(args.out, exist_ok=True)
    device = torch.device("cuda")
    torch.manual_seed(args.seed)
    torch.cuda.manual_seed_all(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    train, train_docs = read_split(args.corpus, "train")
    held, held_docs = read_split(args.corpus, "heldout")
    print(f"train: {len(train_docs)} documents, {len(train)} tokens; held-out: {len(held_docs)} documents, "
          f"{len(held)} tokens", flush=True)
    train_gpu = torch.from_numpy(train.astype(np.int64)).to(device)

    cfg = model_config(args)
    model = Qwen2ForCausalLM._from_config(cfg, attn_implementation="sdpa", dtype=torch.float32).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params} ({2 * n_params / 1e6:.1f} MB in bf16)", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    fwd = torch.compile(model) if args.compile else model

    rng = np.random.Generator(np.random.PCG64(args.seed))
    span = torch.arange(args.seq + 1, device=device)[None, :]
    log_path = os.path.join(args.out, "training_log.csv")
    log = open(log_path, "w", newline="")
    w = csv.writer(log)
    w.writerow(["step", "tokens", "loss", "lr", "grad_norm", "seconds", "tokens_per_s", "heldout_bpb_64win"])
    t0 = time.time()
    t_last, tok_last = t0, 0
    loss_acc = torch.zeros((), device=device)
    model.train()
    for step in range(args.steps):
        lr = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        offs = torch.from_numpy(rng.integers(0, len(train) - args.seq - 1, size=args.batch)).to(device)
        win = train_gpu[offs[:, None] + span]
        x, y = win[:, :-1], win[:, 1:]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = fwd(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_acc += loss.detach()
        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            k = args.log_every if done % args.log_every == 0 else done % args.log_every
            mean_loss = (loss_acc / k).item()
            loss_acc.zero_()
            now = time.time()
            tokens = done * args.batch * args.seq
            rate = (tokens - tok_last) / (now - t_last)
            t_last, tok_last = now, tokens
            bpb = ""
            if done % args.eval_every == 0 or done == args.steps:
                model.eval()
                bpb = f"{bits_per_byte(model, held, args.seq, args.batch, device, max_windows=64)[0]:.4f}"
                model.train()
            w.writerow([done, tokens, f"{mean_loss:.5f}", f"{lr:.3e}", f"{gn.item():.4f}", f"{now - t0:.1f}",
                        f"{rate:.0f}", bpb])
            log.flush()
            print(f"step {done}/{args.steps} loss {mean_loss:.4f} ({mean_loss / math.log(2):.3f} bits) lr {lr:.2e} "
                  f"gn {gn.item():.3f} {rate / 1e3:.0f}k tok/s {now - t0:.0f}s" + (f" heldout {bpb} bpb" if bpb else ""),
                  flush=True)
    train_seconds = time.time() - t0
    log.close()

    model.eval()
    model.to(torch.bfloat16).save_pretrained(args.out, safe_serialization=True)
    del model, fwd, opt
    torch.cuda.empty_cache()
    # Everything below reads the saved bf16 checkpoint, the artifact that ships.
    saved = Qwen2ForCausalLM.from_pretrained(args.out, dtype=torch.float32, attn_implementation="sdpa").to(device).eval()
    bpb, n_bytes = bits_per_byte(saved, held, args.seq, args.batch, device,
                                 max_windows=8 if args.smoke else None)
    with open(os.path.join(args.corpus, "manifest.json")) as f:
        manifest = json.load(f)
    result = {
        "heldout_bits_per_byte": bpb, "heldout_bytes_scored": n_bytes,
        "eval": f"saved bf16 weights, fp32 compute, SDPA; non-overlapping {args.seq}-token windows of heldout.bin "
                "with <|endoftext|> between documents; <|endoftext|> targets excluded",
        "baselines": manifest["baselines"], "corpus_packages": manifest["packages"],
        "corpus_sha256": {k: v["sha256"] for k, v in manifest["outputs"].items()},
        "parameters": n_params, "model_safetensors_sha256": sha256(os.path.join(args.out, "model.safetensors")),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "corpus")},
        "tokens_seen": args.steps * args.batch * args.seq, "train_seconds": round(train_seconds, 1),
        "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
    }
    print(f"held-out: {bpb:.4f} bits/byte over {n_bytes} bytes (bigram baseline "
          f"{manifest['baselines']['bigram_bits_per_byte']:.4f})", flush=True)

    if args.reference_logits:
        from safetensors.torch import save_file
        doc = held[: held_docs[0]]           # the first held-out document, raw bytes
        ids = torch.from_numpy(doc[: args.reference_logits].astype(np.int64))[None, :]
        ref = Qwen2ForCausalLM.from_pretrained(args.out, dtype=torch.float64, attn_implementation="eager").to(device).eval()
        with torch.no_grad():
            logits = ref(input_ids=ids.to(device), use_cache=False).logits[0].double().cpu().contiguous()
        save_file({"logits_fp64": logits, "input_ids": ids[0].to(torch.int32).contiguous()},
                  os.path.join(args.out, "reference_logits.safetensors"))
        result["reference_logits"] = {"tokens": int(ids.shape[1]), "source": "first held-out document, first bytes",
                                      "max_abs_logit": float(logits.abs().max())}
    with open(os.path.join(args.out, "eval.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("heldout_bits_per_byte", "parameters", "tokens_seen", "train_seconds")}))


if __name__ == "__main__":
    main()
