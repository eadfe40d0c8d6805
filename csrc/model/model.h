// Model (weights, shared) and Session (KV cache, scratch and threads, one per conversation).
//
// A Model is loaded once and is immutable afterwards: any number of Sessions, in any threads, can
// run over the same Model at once. A Session is not thread-safe; give each thread its own. Each
// Session owns a pool of n_threads - 1 worker threads that sleep while it is idle.
//
// Example:
//     auto model = bitnet::Model::load("model.gguf");
//     bitnet::Session session(model, /*n_ctx=*/2048, /*n_batch=*/256, /*n_threads=*/4);
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
#include "runtime/thread_pool.h"

namespace bitnet {

// How the output layer (logits = output_norm(x) . output^T) is computed.
enum class OutputType {
    kAuto,  // kQ8 when the hidden size is a multiple of 32, else kF32
    kF32,   // rows decoded from the file's type, float dot products (exact)
    kQ8,    // requantized at load to int8 blocks of 32 (Q8_0-style), int8 activations
};

struct LoadOptions {
    OutputType output = OutputType::kAuto;
    int n_threads = 0;    // threads for load-time repacking (0: all hardware threads)
    std::string isa;      // kernel table to use ("": the process's, see BITNET_ISA)
    std::string kernel;   // ternary family, "mad" or "lut" ("": BITNET_KERNEL or measured choice)
};

class Model {
 public:
    // Maps and validates the file, reads the config and converts the weights. Throws FormatError,
    // UnsupportedError.
    static std::shared_ptr<const Model> load(const std::string& path,
                                             const LoadOptions& options = {});

    const GgufFile& file() const { return *file_; }
    const ModelConfig& config() const { return config_; }
    const ModelWeights& weights() const { return weights_; }
    const kernels::KernelTable& kernels() const { return *kernels_; }
    OutputType output_type() const { return output_type_; }
    bool has_lut() const { return has_lut_; }

    // Bytes of weights one decoded token reads: every BitLinear matrix, the output layer as
    // computed, one embedding row (for bandwidth figures).
    int64_t bytes_per_token() const;

 private:
    Model() = default;
    std::unique_ptr<GgufFile> file_;
    ModelConfig config_;
    ModelWeights weights_;
    const kernels::KernelTable* kernels_ = nullptr;
    OutputType output_type_ = OutputType::kF32;
    bool has_lut_ = false;
};

struct SessionOptions {
    int64_t n_ctx = 0;     // most tokens the session can hold (0: the model's training context)
    int64_t n_batch = 256; // most tokens processed in one forward pass; longer inputs are split
    int n_threads = 0;     // threads of the forward pass (0: all hardware threads)
    bool kv_f16 = false;   // store the KV cache in fp16 (half the memory, float math)
};

class Session {
 public:
    Session(std::shared_ptr<const Model> model, const SessionOptions& options);
    // Kept for callers of the first API: n_threads 1.
    explicit Session(std::shared_ptr<const Model> model, int64_t n_ctx = 0, int64_t n_batch = 256);

    const Model& model() const { return *model_; }
    int64_t n_ctx() const { return n_ctx_; }
    int64_t n_past() const { return n_past_; }
    int n_threads() const { return pool_.n_threads(); }
    bool kv_f16() const { return kv_f16_; }

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
    // Quantizes x (n_tokens, n), after an optional RMSNorm with weight norm, into acts_ (and
    // LUT tables when the model has LUT matrices). Parallel over tokens.
    void norm_quantize(const float* x, const float* norm, int64_t n_tokens, int64_t n);
    // The integer sums of rows [row_begin, row_end) of w for acts_ into acc (n_tokens, w.n_out).
    void linear_rows(const PackedLinear& w, int64_t n_tokens, int64_t row_begin, int64_t row_end,
                     int32_t* acc) const;
    // The row granule of a parallel split of w (rows a thread gets are multiples of it).
    int64_t granule(const PackedLinear& w, int64_t multiple_of) const;
    void attention_layer(int64_t il, int64_t n, int64_t pos0);
    void output_logits(int64_t first, int64_t n_out_tokens, float* logits);

    std::shared_ptr<const Model> model_;
    int64_t n_ctx_ = 0;
    int64_t n_batch_ = 0;
    int64_t n_past_ = 0;
    bool kv_f16_ = false;
    ThreadPool pool_;

    // KV cache: per layer (n_ctx, n_kv_heads * head_dim) for K and for V, float or fp16 bits.
    // Pages are touched only as positions fill up.
    std::vector<AlignedBuffer<float>> k_cache_;
    std::vector<AlignedBuffer<float>> v_cache_;
    std::vector<AlignedBuffer<uint16_t>> k_cache16_;
    std::vector<AlignedBuffer<uint16_t>> v_cache16_;

    // Scratch for one batch (shapes use n = n_batch).
    AlignedBuffer<float> x_;        // (n, n_embd) residual stream
    AlignedBuffer<float> xn_;       // (n, max(n_embd, q_dim, n_ff)) normed input of a linear
    AlignedBuffer<float> q_;        // (n, q_dim)
    AlignedBuffer<float> k_;        // (n, kv_dim)
    AlignedBuffer<float> v_;        // (n, kv_dim)
    AlignedBuffer<float> attn_;     // (n, q_dim)
    AlignedBuffer<float> ffn_;      // (n, n_ff) activated gate * up
    AlignedBuffer<float> scores_;   // (n_threads, n_ctx) attention scores of one query
    AlignedBuffer<float> rows_;     // (n_threads, n_embd) decoded output rows (kF32 output)
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
    int64_t act_k_pad_ = 0;           // padded K of the activations in acts_
    kernels::ActsI8 acts_;
    std::vector<int32_t> positions_;
};

}  // namespace bitnet
