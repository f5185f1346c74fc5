// resa/schedule.h — the attention shape and the schedule that fixes every floating-point order.
//
// A Schedule is a pure function of the shape and the configuration (never of batch size, SM count
// or how many queries share a launch). The CPU reference consumes it; the CUDA kernels implement
// exactly it (DESIGN.md §3). Header-only; safe to include from .cu files.
//
// The per-query-row computation it describes (reference/src/attention.cpp is the executable form):
//   keys   = the row's list of valid cache positions (dense: 0..L-1; block-sparse: the selected
//            blocks in block order, the last one cut at L; causal chunk row: 0..limit-1).
//   splits = consecutive runs of split_len keys of that list; each split is reduced to a partial
//            state (m, l, acc) independently, then the partials are merged left to right
//            (state = split 0; state = merge(state, split s) for s = 1, 2, ...).
//   tiles  = inside a split, runs of key_tile keys, processed in order (the last tile of the list
//            is padded with masked keys: t = -inf, p = 0, v = 0):
//            s_j  = dot over d in k16 steps: c = 0; c = dot16(c, q[16u:16u+16], k_j[16u:16u+16])
//            t_j  = s_j * scale_log2                          (fp32 multiply; -inf if masked)
//            m'   = max(m, t_0, ..., t_{T-1})                 (NaN ignored)
//            a    = exp2(m - shift(m')),  p_j = round_to_storage(exp2(t_j - shift(m')))
//            l    = l * a; acc[c] = acc[c] * a
//            for each k16 group of keys u: l = dot16(l, p[u], ones); acc[c] = dot16(acc[c], p[u], v[u][c])
//   output = acc[c] / l, NaN canonicalized.
// dot16 is the Hopper tensor-core rule or the FMA chain (DotArithmetic); one arithmetic for dense
// decode, chunked prefill/rectification and block-sparse decode.
#pragma once

#include <sstream>
#include <string>

#include "resa/config.h"
#include "resa/numerics.h"

namespace resa {

// Qwen2 GQA attention shape: Hq query heads, Hkv KV heads, group g = Hq / Hkv, head dim d.
struct AttentionShape {
  int n_q_heads = 12;
  int n_kv_heads = 2;
  int head_dim = 128;

  int group() const { return n_q_heads / n_kv_heads; }
  // Throws InvalidArgument: d in {64, 128}; Hkv >= 1; Hq a multiple of Hkv; g in 1..8.
  void validate() const {
    if (head_dim != 64 && head_dim != 128)
      throw InvalidArgument("head_dim = " + std::to_string(head_dim) +
                            ": unsupported (supported: 64, 128)");
    if (n_kv_heads < 1)
      throw InvalidArgument("n_kv_heads = " + std::to_string(n_kv_heads) + ": must be >= 1");
    if (n_q_heads < 1 || n_q_heads % n_kv_heads != 0)
      throw InvalidArgument("n_q_heads = " + std::to_string(n_q_heads) +
                            ": must be a positive multiple of n_kv_heads = " +
                            std::to_string(n_kv_heads));
    if (group() > 8)
      throw InvalidArgument("GQA group n_q_heads/n_kv_heads = " + std::to_string(group()) +
                            ": unsupported (supported: 1..8)");
  }
  std::string str() const {
    return "Hq=" + std::to_string(n_q_heads) + " Hkv=" + std::to_string(n_kv_heads) +
           " d=" + std::to_string(head_dim);
  }
  friend bool operator==(const AttentionShape&, const AttentionShape&) = default;
};

struct Schedule {
  int split_len = 512;  // keys per split (a multiple of key_tile and of every block size used)
  int key_tile = 64;    // keys per online-softmax step (a multiple of 16)
  int row_tile = 16;    // query rows per MMA tile (rows never interact; fixed by the m16 MMA)
  DotArithmetic arith = DotArithmetic::TensorCoreHopper;
  float scale_log2 = 0.0f;  // log2(e) / sqrt(d), rounded once to fp32

  int num_splits(int64_t n_keys) const { return static_cast<int>((n_keys + split_len - 1) / split_len); }
  std::string str() const {
    std::ostringstream os;
    os << "split_len=" << split_len << " key_tile=" << key_tile << " row_tile=" << row_tile
       << " dot=" << (arith == DotArithmetic::TensorCoreHopper ? "tensor-core(sm90)" : "fma-chain")
       << " scale_log2=" << scale_log2;
    return os.str();
  }
};

// Configuration knobs of the schedule; everything else follows from the shape.
struct ScheduleConfig {
  int split_len = 512;
  int key_tile = 64;
  DotArithmetic arith = DotArithmetic::TensorCoreHopper;
};

// The schedule for a shape: a pure function of (shape, config). Throws InvalidArgument when the
// split is not a positive multiple of the tile or the tile not a multiple of 16.
inline Schedule make_schedule(const AttentionShape& shape, const ScheduleConfig& cfg = {}) {
  shape.validate();
  if (cfg.key_tile < 16 || cfg.key_tile % 16 != 0 || cfg.key_tile > 256)
    throw InvalidArgument("key_tile = " + std::to_string(cfg.key_tile) +
                          ": must be a multiple of 16 in [16, 256]");
  if (cfg.split_len < cfg.key_tile || cfg.split_len % cfg.key_tile != 0)
    throw InvalidArgument("split_len = " + std::to_string(cfg.split_len) +
                          ": must be a positive multiple of key_tile = " + std::to_string(cfg.key_tile));
  Schedule s;
  s.split_len = cfg.split_len;
  s.key_tile = cfg.key_tile;
  s.arith = cfg.arith;
  s.scale_log2 = softmax_scale_log2(shape.head_dim);
  return s;
}

// The block size must divide the split so that ratio = 1 sparse decoding visits the same splits
// as dense decoding.
inline void check_block_fits_schedule(int block_size, const Schedule& s) {
  if (s.split_len % block_size != 0)
    throw InvalidArgument("block_size = " + std::to_string(block_size) +
                          ": must divide the schedule's split_len = " + std::to_string(s.split_len));
}

}  // namespace resa
