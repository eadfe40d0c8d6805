// Hyperparameters of a decoder, read from GGUF metadata and tensor shapes.
//
// ModelConfig::from_gguf applies llama.cpp's conventions for the architectures we run (bitnet,
// bitnet-b1.58, llama): key names "<arch>.<name>", defaults where llama.cpp has them, the RoPE
// pairing of each architecture. It throws FormatError for missing or inconsistent values and
// UnsupportedError for architectures or options the decoder does not implement.
#pragma once

#include <cstdint>
#include <string>

#include "format/gguf.h"

namespace bitnet {

enum class Activation { kSilu, kRelu2 };

// Which elements of a head RoPE rotates together (llama.cpp's rope types).
enum class RopeStyle {
    kNeox,  // pairs (i, i + n_rot/2): Hugging Face's rotate_half; bitnet arch
    kNorm,  // pairs (2i, 2i + 1): llama arch, whose converter permutes q/k rows to match
};

const char* activation_name(Activation a);
const char* rope_style_name(RopeStyle r);

struct ModelConfig {
    std::string arch;           // general.architecture
    int64_t n_vocab = 0;        // rows of token_embd
    int64_t n_embd = 0;         // hidden size
    int64_t n_layers = 0;
    int64_t n_heads = 0;
    int64_t n_kv_heads = 0;
    int64_t head_dim = 0;       // key/value length per head
    int64_t n_ff = 0;           // FFN intermediate size
    int64_t n_ctx_train = 0;    // context length the model was trained for
    int64_t n_rot = 0;          // rotated dimensions per head (<= head_dim)
    float rms_eps = 1e-5f;
    float rope_theta = 10000.0f;
    float rope_freq_scale = 1.0f;  // linear RoPE scaling: positions are multiplied by this
    Activation activation = Activation::kSilu;
    RopeStyle rope_style = RopeStyle::kNeox;
    bool tied_output = true;       // no output.weight: logits use token_embd

    static ModelConfig from_gguf(const GgufFile& file);
};

}  // namespace bitnet
