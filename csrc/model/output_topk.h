// The exact-top-k output layer: the int8 (Q8) output layer read at 4.5 bits per weight for
// requests that only need the largest logits (issue 14, item 3; docs/kernels.md, "Exact top-k").
//
// A pre-pass reads, for every row of the Q8 output matrix, only the high nibble of each weight
// (q^ = 16 * ((q + 128) >> 4) - 120) and an fp16 copy of its block scale, giving an approximate
// logit a_r. Each row carries a bound c_r, computed at load, such that for every activation x^
//     |L_r - a_r| <= c_r * ||x^||_2,
// where L_r is the value the Q8 path (kernels' gemm_q8) returns for that row: c_r is the norm of
// the difference between the row's Q8 and pre-pass weights (Cauchy-Schwarz) plus the worst-case
// float rounding of both computations, rounded up (output_topk.cpp states the derivation).
// With tau the k-th largest lower bound a_r - c_r ||x^|| among the eligible rows, every row whose
// upper bound a_r + c_r ||x^|| reaches tau is recomputed exactly with the Q8 kernels; no other row
// can be among the k largest.
//
// Guarantee of topk_logits, per token: every finite value of the returned row equals the Q8 path's
// logit of that token bit for bit; every eligible token whose Q8 logit is >= the k-th largest Q8
// logit of the eligible tokens (ties included) is finite; forced tokens are always finite; every
// other token is -inf. Eligible = allowed and not forced. Hence greedy decoding and any sampler that
// reads only the k largest logits (top-k sampling with top_k <= k, then temperature, top-p or
// min-p within those k) see the same values as with the full Q8 output layer, as long as the
// logits they modify (penalties, biases) are forced and the tokens they mask are not allowed.
// Anything that needs the whole distribution (plain temperature sampling, top-p or min-p without
// top_k, logprobs normalized over the vocabulary) must use the full Q8 path.
//
// Immutable after build; safe to share between threads.
#pragma once

#include <cstdint>
#include <vector>

#include "core/aligned_buffer.h"
#include "kernels/kernels.h"
#include "runtime/thread_pool.h"

namespace bitnet {

struct Q8Output;

struct TopKOutput {
    AlignedBuffer<uint8_t> hi;   // (n_rows, n_cols / 2): Q4H nibbles (kernels.h)
    AlignedBuffer<uint16_t> d;   // (n_rows, n_cols / 32): the Q8 block scales in fp16
    std::vector<float> bound;    // (n_rows): c_r (+inf for a row whose bound is not finite)
    int64_t n_rows = 0;
    int64_t n_cols = 0;

    bool empty() const { return n_rows == 0; }
    kernels::Q4HMatrix view() const { return {hi.data(), d.data(), n_rows, n_cols}; }
    // Bytes the pre-pass reads per token (nibbles, fp16 scales, bounds).
    int64_t pass_bytes() const;

    // Builds the pre-pass of a Q8 output layer, rows split over the pool's threads.
    static TopKOutput build(const Q8Output& q8, const kernels::KernelTable& kt, ThreadPool& pool);
};

// What one token needs from the output layer.
struct TopKRequest {
    int64_t k = 1;                  // the largest logits that must be exact (>= 1)
    const int32_t* forced = nullptr;  // tokens always computed exactly (penalized, biased)
    int64_t n_forced = 0;
    const uint8_t* allowed = nullptr;  // (n_vocab) nonzero where a token may be chosen; null: all
};

struct TopKStats {
    int64_t n_exact = 0;  // rows recomputed exactly (candidates and forced)
};

// logits (x.n_tokens, n_rows): the top-k rows of each token as stated above, the others -inf.
// x: the tokens' Q8 activations (the final normed hidden state, as the Q8 path quantizes it);
// req, stats: one per token (stats may be null). Uses the pool's threads.
void topk_logits(const Q8Output& q8, const TopKOutput& pre, const kernels::KernelTable& kt,
                 ThreadPool& pool, const kernels::ActsQ8& x, const TopKRequest* req, float* logits,
                 TopKStats* stats);

}  // namespace bitnet
