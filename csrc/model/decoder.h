// BatchDecoder: one forward pass (a "step") over many sequences at once, on a shared paged KV
// cache.
//
// A step is a list of sequences, each with its block table (model/kv_cache.h), the number of
// positions already in the cache (n_past) and new tokens: one token for a sequence that is
// decoding, a chunk of its prompt for one that is prefilling. All tokens of the step go through
// every BitLinear together (the weights are read once per step, not once per sequence); attention
// runs per token against its own sequence's blocks (model/attention.h).
//
// Batch invariance: a sequence's logits and the K/V it writes depend only on its own tokens and
// positions, bit for bit — not on the other sequences of the step, how its prompt was split into
// steps, the thread count, or which sequences share its blocks. BitLinear sums are exact
// integers, every float operation (norms, epilogues, RoPE, the KV conversion, attention, the
// output layer) is computed per token, and no float sum is split between threads.
//
// Example (two sequences of one request each; blocks handed out by the caller):
//     auto cache = std::make_shared<bitnet::KvCache>(model->config(), bitnet::KvType::kF16, 32, 64);
//     bitnet::BatchDecoder decoder(model, cache, /*n_batch=*/512, /*n_threads=*/4);
//     std::vector<int32_t> table_a = {0, 1}, table_b = {2};
//     std::vector<int32_t> prompt_a = {1, 450, 4996}, next_b = {29871};
//     std::vector<bitnet::SequenceStep> step = {
//         {table_a.data(), 2, /*n_past=*/0, prompt_a.data(), 3, bitnet::LogitsMode::kLast},
//         {table_b.data(), 1, /*n_past=*/7, next_b.data(), 1, bitnet::LogitsMode::kLast}};
//     std::vector<float> logits(decoder.validate(step) * model->config().n_vocab);
//     decoder.step(step, logits.data());  // rows: a's last token, then b's
//
// step() may be called from any thread, one step at a time (a mutex serializes calls). The
// decoder owns a pool of n_threads - 1 worker threads that sleep while it is idle.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/aligned_buffer.h"
#include "kernels/kernels.h"
#include "model/attention.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "runtime/thread_pool.h"

namespace bitnet {

// Which logits rows a sequence of a step asks for.
enum class LogitsMode : int { kNone = 0, kLast = 1, kAll = 2 };

struct SequenceStep {
    const int32_t* block_table = nullptr;  // (n_table) cache block of positions [i*B, (i+1)*B)
    int64_t n_table = 0;
    int64_t n_past = 0;                    // positions [0, n_past) are in the cache
    const int32_t* tokens = nullptr;       // (n_tokens) at positions n_past, n_past + 1, ...
    int64_t n_tokens = 0;
    LogitsMode logits = LogitsMode::kNone;
    // Exact-top-k output (model/output_topk.h; needs Model::output_topk()): when topk > 0, this
    // sequence's logits rows hold the Q8 path's values for (at least) its topk largest eligible
    // tokens and the forced ones, bit for bit, and -inf elsewhere. 0: the full output layer.
    int64_t topk = 0;
    const int32_t* topk_forced = nullptr;  // (n_topk_forced) tokens always computed exactly
    int64_t n_topk_forced = 0;
    const uint8_t* topk_allowed = nullptr;  // (n_vocab) nonzero: may be chosen; null: all
};

// What the exact-top-k output layer did so far (for benchmarks and bytes-per-token figures).
struct TopKCounts {
    int64_t rows = 0;        // logits rows computed through the top-k path
    int64_t exact_rows = 0;  // output rows recomputed exactly for them (candidates and forced)
};

// Most positions a sequence may reach (RoPE angles are exact float products below 2^24).
constexpr int64_t kMaxPositions = int64_t{1} << 24;

class BatchDecoder {
 public:
    // n_batch: most tokens of one step (the sum over its sequences); n_threads 0: all hardware
    // threads. Throws ShapeError for bad sizes or a cache made for another model shape.
    BatchDecoder(std::shared_ptr<const Model> model, std::shared_ptr<KvCache> cache,
                 int64_t n_batch, int n_threads);

    const Model& model() const { return *model_; }
    KvCache& cache() { return *cache_; }
    const std::shared_ptr<KvCache>& cache_ptr() const { return cache_; }
    int64_t n_batch() const { return n_batch_; }
    int n_threads() const { return pool_.n_threads(); }

    // Checks a step (sequence by sequence: tokens, n_past, block table, block conflicts with
    // the other sequences, n_batch) and returns the number of logits rows it produces. Throws
    // ShapeError naming the sequence index and the problem.
    int64_t validate(const std::vector<SequenceStep>& seqs);

    // Validates, then runs the step: writes the K/V of every new token into the cache and the
    // requested logits rows (validate()'s count, n_vocab) in sequence order into logits. On a
    // validation error nothing is written.
    void step(const std::vector<SequenceStep>& seqs, float* logits);

    // Totals since construction over every step (readable from any thread).
    TopKCounts topk_counts() const { return {topk_rows_.load(), topk_exact_rows_.load()}; }

 private:
    int64_t validate_locked(const std::vector<SequenceStep>& seqs);
    void forward(float* logits);
    void embed_and_rope();
    void norm_quantize(const float* x, const float* norm, int64_t n_tokens, int64_t n);
    void linear_rows(const PackedLinear& w, int64_t n_tokens, int64_t row_begin, int64_t row_end,
                     int32_t* acc) const;
    int64_t granule(const PackedLinear& w, int64_t multiple_of) const;
    void attention_layer(int64_t layer, int64_t n);
    void ffn_layer(int64_t layer, int64_t n);
    void gated_epilogue(const LayerWeights& l, int64_t n_tokens, int64_t b, int64_t e, float* ffn) const;
    void output_logits(float* logits);
    void full_logits(int64_t first, int64_t n, float* logits, int64_t n_compute = -1);

    std::shared_ptr<const Model> model_;
    std::shared_ptr<KvCache> cache_;
    int64_t n_batch_ = 0;
    ThreadPool pool_;
    PagedAttention attention_;
    std::mutex step_mutex_;
    std::atomic<int64_t> topk_rows_{0};
    std::atomic<int64_t> topk_exact_rows_{0};

    // The running step, flattened over its sequences (n = its token count).
    std::vector<int32_t> tokens_;        // (n) token ids
    std::vector<int32_t> positions_;     // (n)
    std::vector<AttnQuery> queries_;     // (n) block table and position of each token
    std::vector<int64_t> logit_rows_;    // tokens whose logits are returned, in order
    std::vector<TopKRequest> logit_topk_;  // (logit rows) k = 0: full output layer
    std::vector<int32_t> block_writer_;  // (n_blocks) validation marks: sequence writing a block
    std::vector<int32_t> block_first_;   // (n_blocks) first row it writes; -1: not written
    std::vector<int32_t> block_seen_;    // (n_blocks) last sequence whose table lists a block

    // Scratch for one step (shapes use n = n_batch).
    AlignedBuffer<float> x_;        // (n, n_embd) residual stream
    AlignedBuffer<float> xn_;       // (n, max(n_embd, q_dim, n_ff)) normed input of a linear
    AlignedBuffer<float> q_;        // (n, q_dim) rotated queries, times 1/sqrt(head_dim)
    AlignedBuffer<int8_t> q8_;      // (n, q_dim) the queries in Q8 blocks (q8_0 cache)
    AlignedBuffer<float> q8_d_;     // (n, q_dim / 32)
    AlignedBuffer<float> k_;        // (n, kv_dim)
    AlignedBuffer<float> v_;        // (n, kv_dim)
    AlignedBuffer<float> attn_;     // (n, q_dim)
    AlignedBuffer<float> ffn_;      // (n, n_ff) activated gate * up
    AlignedBuffer<float> rows_;     // (n_threads, n_embd) decoded output rows (kF32 output)
    AlignedBuffer<float> kv_scales_;  // (n_threads, head_dim / 32) q8_0 scales of one row
    AlignedBuffer<float> rope_cs_;  // (n, n_rot) cos, sin of each position and frequency
    AlignedBuffer<int8_t> act_q_;   // (n, act_stride_) quantized activations
    AlignedBuffer<float> act_scale_;  // (n)
    AlignedBuffer<int32_t> act_sum_;  // (n)
    AlignedBuffer<uint8_t> lut_;      // (n, lut_bytes(act_stride_)) when the model has LUT rows
    AlignedBuffer<int32_t> acc_;      // (n, max out features) int32 sums of one linear
    AlignedBuffer<int32_t> acc2_;     // (n, max out features) a second linear (k, up)
    AlignedBuffer<int32_t> acc3_;     // (n, kv_dim) a third linear (v)
    AlignedBuffer<int8_t> out_q_;     // (n, n_embd) Q8 activations of the output layer
    AlignedBuffer<float> out_d_;      // (n, n_embd / 32)
    int64_t act_stride_ = 0;
    kernels::ActsI8 acts_;
};

}  // namespace bitnet
