// Model (weights, shared) and Session (KV cache and scratch, one per conversation).
//
// A Model is loaded once and is immutable afterwards: any number of Sessions, in any threads, can
// run over the same Model at once. A Session is not thread-safe; give each thread its own.
//
// Example:
//     auto model = bitnet::Model::load("model.gguf");
//     bitnet::Session session(model, /*n_ctx=*/2048);
//     std::vector<int32_t> prompt = {1, 450, 4996};
//     std::vector<float> logits(model->config().n_vocab);
//     session.decode(prompt.data(), prompt.size(), logits.data(), /*all_logits=*/false);
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/aligned_buffer.h"
#include "format/gguf.h"
#include "kernels/kernels.h"
#include "model/config.h"
#include "model/weights.h"

namespace bitnet {

class Model {
 public:
    // Maps and validates the file, reads the config and converts the weights. Throws FormatError,
    // UnsupportedError.
    static std::shared_ptr<const Model> load(const std::string& path);

    const GgufFile& file() const { return *file_; }
    const ModelConfig& config() const { return config_; }
    const ModelWeights& weights() const { return weights_; }
    const kernels::KernelTable& kernels() const { return *kernels_; }

 private:
    Model() = default;
    std::unique_ptr<GgufFile> file_;
    ModelConfig config_;
    ModelWeights weights_;
    const kernels::KernelTable* kernels_ = nullptr;
};

class Session {
 public:
    // n_ctx: most tokens the session can hold (0: the model's training context).
    // n_batch: most tokens processed in one forward pass; longer inputs are split.
    explicit Session(std::shared_ptr<const Model> model, int64_t n_ctx = 0, int64_t n_batch = 256);

    const Model& model() const { return *model_; }
    int64_t n_ctx() const { return n_ctx_; }
    int64_t n_past() const { return n_past_; }

    // Appends n tokens at positions n_past() .. n_past() + n - 1 and computes logits: for every
    // token into logits (n, n_vocab) when all_logits, else for the last token only (n_vocab).
    // Throws ShapeError for token ids outside [0, n_vocab) or when the context would overflow;
    // the session is unchanged in that case.
    void decode(const int32_t* tokens, int64_t n, float* logits, bool all_logits);

    // Forgets every token from position n on (0 <= n <= n_past()), keeping the cache before it.
    void truncate(int64_t n);

 private:
    // One forward pass over n <= n_batch tokens starting at n_past_.
    void forward(const int32_t* tokens, int64_t n, float* logits, bool all_logits);
    // y (n_tokens, w.n_out) = BitLinear(w, acts_).
    void linear(const PackedLinear& w, int64_t n_tokens, float* y);
    // Quantizes x (n_tokens, n) into acts_.
    void quantize(const float* x, int64_t n_tokens, int64_t n);

    std::shared_ptr<const Model> model_;
    int64_t n_ctx_ = 0;
    int64_t n_batch_ = 0;
    int64_t n_past_ = 0;

    // KV cache: per layer (n_ctx, n_kv_heads * head_dim) for K and for V. Pages are touched only
    // as positions fill up.
    std::vector<AlignedBuffer<float>> k_cache_;
    std::vector<AlignedBuffer<float>> v_cache_;

    // Scratch for one batch (shapes use n = n_batch).
    AlignedBuffer<float> x_;        // (n, n_embd) residual stream
    AlignedBuffer<float> xn_;       // (n, max(n_embd, q_dim)) normed input of a block
    AlignedBuffer<float> q_;        // (n, q_dim)
    AlignedBuffer<float> k_;        // (n, kv_dim)
    AlignedBuffer<float> v_;        // (n, kv_dim)
    AlignedBuffer<float> attn_;     // (n, q_dim)
    AlignedBuffer<float> gate_;     // (n, n_ff)
    AlignedBuffer<float> up_;       // (n, n_ff)
    AlignedBuffer<float> proj_;     // (n, n_embd) output of o / down projections
    AlignedBuffer<float> scores_;   // (n_ctx) attention scores of one query
    AlignedBuffer<float> row_;      // (n_embd) one decoded output row
    AlignedBuffer<int8_t> act_q_;   // (n, act_stride_) quantized activations
    AlignedBuffer<float> act_scale_;  // (n)
    AlignedBuffer<int32_t> act_sum_;  // (n)
    AlignedBuffer<int32_t> acc_;      // (n, max out features) int32 sums of one linear
    int64_t act_stride_ = 0;
    kernels::ActsI8 acts_;
    std::vector<int32_t> positions_;
};

}  // namespace bitnet
