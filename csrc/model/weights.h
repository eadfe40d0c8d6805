// The weights of a decoder, bound by GGUF tensor name and checked against the config.
//
// ModelWeights::load finds every tensor llama.cpp's naming prescribes (token_embd, output_norm,
// output, blk.N.attn_norm, blk.N.attn_q, ...), checks its shape and type, converts the BitLinear
// weights into kernel layouts (repack.h) and the norms into float vectors. Embedding and output
// matrices stay in the mapped file and are decoded row by row. Immutable after load; safe to
// share between threads. Throws FormatError / UnsupportedError naming the tensor.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "core/aligned_buffer.h"
#include "format/gguf.h"
#include "kernels/kernels.h"
#include "model/config.h"
#include "model/repack.h"

namespace bitnet {

// A float-valued matrix left in the file (embeddings, output layer): n_rows rows of n_cols.
struct DenseMatrix {
    const GgufTensor* tensor = nullptr;
    int64_t n_rows = 0;
    int64_t n_cols = 0;
    uint64_t row_bytes = 0;

    // Decodes row i into out[0 .. n_cols).
    void row(int64_t i, float* out) const;
};

struct LayerWeights {
    std::vector<float> attn_norm;      // (n_embd)
    std::vector<float> attn_sub_norm;  // (n_heads * head_dim), empty when the model has none
    std::vector<float> ffn_norm;       // (n_embd)
    std::vector<float> ffn_sub_norm;   // (n_ff), empty when the model has none
    PackedLinear wq;                   // (n_heads * head_dim, n_embd)
    PackedLinear wk;                   // (n_kv_heads * head_dim, n_embd)
    PackedLinear wv;                   // (n_kv_heads * head_dim, n_embd)
    PackedLinear wo;                   // (n_embd, n_heads * head_dim)
    PackedLinear w_gate;               // (n_ff, n_embd)
    PackedLinear w_up;                 // (n_ff, n_embd)
    PackedLinear w_down;               // (n_embd, n_ff)

    // The seven BitLinear weights, in file order (q, k, v, o, gate, up, down).
    std::array<const PackedLinear*, 7> linears() const {
        return {&wq, &wk, &wv, &wo, &w_gate, &w_up, &w_down};
    }
    std::array<PackedLinear*, 7> linears() { return {&wq, &wk, &wv, &wo, &w_gate, &w_up, &w_down}; }
};

// The output layer requantized to int8 blocks (kernels.h, layout Q8) at load.
struct Q8Output {
    AlignedBuffer<int8_t> q;  // (n_rows, n_cols)
    AlignedBuffer<float> d;   // (n_rows, n_cols / 32)
    int64_t n_rows = 0;
    int64_t n_cols = 0;

    bool empty() const { return n_rows == 0; }
    kernels::Q8Matrix view() const { return {q.data(), d.data(), n_rows, n_cols}; }
};

struct ModelWeights {
    DenseMatrix token_embd;            // (n_vocab, n_embd)
    DenseMatrix output;                // (n_vocab, n_embd); token_embd when tied
    Q8Output output_q8;                // the output layer in int8, when chosen at load
    std::vector<float> output_norm;    // (n_embd)
    std::vector<LayerWeights> layers;  // (n_layers)

    // Throws FormatError / UnsupportedError naming the tensor; Error naming the tensor when the
    // machine runs out of memory (std::bad_alloc never escapes).
    static ModelWeights load(const GgufFile& file, const ModelConfig& config);
};

}  // namespace bitnet
