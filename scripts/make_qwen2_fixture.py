#!/usr/bin/env python3
"""scripts/make_qwen2_fixture.py OUT_DIR — the Hugging Face transformers fixture for
tests/sim/test_qwen2.cpp (Qwen2.MatchesTransformersFixture).

Builds a tiny randomly initialised Qwen2ForCausalLM (seeded; GQA group 2, head_dim 64, QKV bias,
rope_theta 50000, non-zero biases and norm weights so every parameter matters), rounds it to
bf16 and saves it with save_pretrained (config.json + model.safetensors), then reloads those bf16
weights exactly into float64 and records the logits of a fixed token sequence with eager
attention. Written twice: OUT_DIR (untied LM head) and OUT_DIR/tied (tie_word_embeddings=true).
Per folder: config.json, model.safetensors, input_ids.txt, reference_logits.safetensors
(logits_fp64 [n][vocab], F64).

Needs: torch, transformers (>= 4.40), safetensors. CPU is enough (float64); run once, e.g.
  python3 scripts/make_qwen2_fixture.py tests/fixtures/qwen2_tiny
and commit tests/fixtures/qwen2_tiny/.
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM


def build(out_dir: str, tied: bool, seed: int) -> None:
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=320, hidden_size=256, intermediate_size=384, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rope_theta=50000.0, rms_norm_eps=1e-6, tie_word_embeddings=tied, hidden_act="silu",
        use_sliding_window=False, attention_dropout=0.0, torch_dtype="bfloat16")
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    model = model.to(torch.bfloat16)
    model.save_pretrained(out_dir, safe_serialization=True)

    ref = Qwen2ForCausalLM.from_pretrained(out_dir, torch_dtype=torch.float64, attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, cfg.vocab_size, (1, 48), generator=g)
    with torch.no_grad():
        logits = ref(input_ids=ids, use_cache=False).logits[0].to(torch.float64).contiguous()
    with open(os.path.join(out_dir, "input_ids.txt"), "w") as f:
        f.write(" ".join(str(int(t)) for t in ids[0]) + "\n")
    save_file({"logits_fp64": logits}, os.path.join(out_dir, "reference_logits.safetensors"))
    print(f"{out_dir}: tied={tied} logits {tuple(logits.shape)} max|logit| {logits.abs().max().item():.3f}")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    out = sys.argv[1]
    build(out, tied=False, seed=1234)
    build(os.path.join(out, "tied"), tied=True, seed=4321)
    return 0


if __name__ == "__main__":
    sys.exit(main())
