// The float operations of the decoder, in plain scalar C++: the reference every faster path is
// compared with. Each op works on contiguous row-major buffers whose shapes are given in the
// argument comments; none allocates, throws or keeps state.
#pragma once

#include <cstdint>

#include "model/config.h"

namespace bitnet::ops {

// out[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * weight, for n_tokens rows of n. out may alias x.
// Matches Hugging Face LlamaRMSNorm in float32.
void rms_norm(const float* x, const float* weight, int64_t n_tokens, int64_t n, float eps,
              float* out);

// Rotates the first n_rot dimensions of each of n_heads heads of size head_dim, in place, for
// n_tokens rows of x (row stride n_heads * head_dim) at positions pos[t]. freq_scale multiplies
// positions (linear RoPE scaling). style selects the pairing (config.h).
void rope(float* x, const int32_t* pos, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
          int64_t n_rot, float theta, float freq_scale, RopeStyle style);

// gate[i] = act(gate[i]) * up[i] for n values: silu(x) = x / (1 + exp(-x)), relu2(x) = max(x,0)^2.
void gated_activation(float* gate, const float* up, int64_t n, Activation act);

// Causal multi-head attention with grouped K/V heads for n_tokens queries at positions
// pos0 .. pos0 + n_tokens - 1 over the cache rows 0 .. pos0 + n_tokens - 1.
//   q:       (n_tokens, n_heads * head_dim)
//   k_cache: (>= pos0 + n_tokens, n_kv_heads * head_dim); v_cache likewise
//   out:     (n_tokens, n_heads * head_dim)
//   scores:  scratch of pos0 + n_tokens floats
void attention(const float* q, const float* k_cache, const float* v_cache, int64_t n_tokens,
               int64_t pos0, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float* out,
               float* scores);

// Dot product of n floats (float accumulation).
float dot(const float* a, const float* b, int64_t n);

}  // namespace bitnet::ops
