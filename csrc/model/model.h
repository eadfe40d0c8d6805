// Model (weights, shared) and Session (one sequence with its own KV cache, scratch and threads).
//
// A Model is loaded once and is immutable afterwards: any number of Sessions and BatchDecoders
// (model/decoder.h, many sequences per forward pass), in any threads, can run over the same Model
// at once. A Session is not thread-safe; give each thread its own. Each Session owns a pool of
// n_threads - 1 worker threads that sleep while it is idle.
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
#include "model/output_topk.h"
#include "model/kv_cache.h"
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
    std::string kernel;   // ternary family, "mad", "lut" or "t3" ("": BITNET_KERNEL or measured choice)
    // Also build the 4-bit pre-pass of the Q8 output layer for exact-top-k requests
    // (model/output_topk.h). Needs the Q8 output layer.
    bool topk_prepass = false;
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

    // The exact-top-k pre-pass of the output layer (empty unless LoadOptions::topk_prepass).
    const TopKOutput& output_topk() const { return output_topk_; }

 private:
    Model() = default;
    std::unique_ptr<GgufFile> file_;
    ModelConfig config_;
    ModelWeights weights_;
    const kernels::KernelTable* kernels_ = nullptr;
    OutputType output_type_ = OutputType::kF32;
    bool has_lut_ = false;
    TopKOutput output_topk_;
};

struct SessionOptions {
    int64_t n_ctx = 0;     // most tokens the session can hold (0: the model's training context)
    int64_t n_batch = 256; // most tokens processed in one forward pass; longer inputs are split
    int n_threads = 0;     // threads of the forward pass (0: all hardware threads)
    KvType kv_type = KvType::kF16;  // how the KV cache stores keys and values
};

class BatchDecoder;
struct TopKCounts;

// One sequence over a private KV cache, on the batched decoder (model/decoder.h): the same
// numbers, bit for bit, as the sequence gets inside any batch of a BatchDecoder.
class Session {
 public:
    Session(std::shared_ptr<const Model> model, const SessionOptions& options);
    // Kept for callers of the first API: n_threads 1.
    explicit Session(std::shared_ptr<const Model> model, int64_t n_ctx = 0, int64_t n_batch = 256);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    const Model& model() const { return *model_; }
    int64_t n_ctx() const { return n_ctx_; }
    int64_t n_past() const { return n_past_; }
    int n_threads() const;
    KvType kv_type() const { return kv_type_; }
    // Memory of the KV cache resident now (it grows as positions fill).
    int64_t kv_resident_bytes() const;

    // Appends n tokens at positions n_past() .. n_past() + n - 1 and computes logits: for every
    // token into logits (n, n_vocab) when all_logits, else for the last token only (n_vocab).
    // topk > 0 computes those rows with the exact-top-k output layer (SequenceStep::topk; needs
    // the model's pre-pass). Throws ShapeError for token ids outside [0, n_vocab) or when the
    // context would overflow; the session is unchanged in that case.
    void decode(const int32_t* tokens, int64_t n, float* logits, bool all_logits, int64_t topk = 0);

    // What the exact-top-k output layer did in this session's decodes.
    TopKCounts topk_counts() const;

    // Forgets every token from position n on (0 <= n <= n_past()), keeping the cache before it.
    void truncate(int64_t n);

 private:
    std::shared_ptr<const Model> model_;
    int64_t n_ctx_ = 0;
    int64_t n_batch_ = 0;
    int64_t n_past_ = 0;
    KvType kv_type_ = KvType::kF16;
    std::vector<int32_t> block_table_;  // 0, 1, 2, ...: the private cache in position order
    std::unique_ptr<BatchDecoder> decoder_;
};

}  // namespace bitnet
