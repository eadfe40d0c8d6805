// Reading a ModelConfig from GGUF metadata (keys as in llama.cpp's llama-arch.cpp).
#include "model/config.h"

#include <cmath>

#include "core/error.h"

namespace bitnet {

const char* activation_name(Activation a) { return a == Activation::kRelu2 ? "relu2" : "silu"; }
const char* rope_style_name(RopeStyle r) { return r == RopeStyle::kNeox ? "neox" : "norm"; }

namespace {

Activation parse_activation(const std::string& path, const std::string& key, const std::string& v) {
    if (v == "relu2" || v == "relu_squared" || v == "relu_sqr") return Activation::kRelu2;
    if (v == "silu" || v == "swish" || v == "swiglu") return Activation::kSilu;
    throw UnsupportedError(str_cat(path, ": key '", key, "' is '", v,
                                   "'; supported activations are relu2 and silu"));
}

}  // namespace

ModelConfig ModelConfig::from_gguf(const GgufFile& f) {
    ModelConfig c;
    const std::string& path = f.path();
    c.arch = f.get_string("general.architecture")
                 .value_or("");
    BITNET_CHECK(!c.arch.empty(), FormatError, path, ": missing key 'general.architecture'");
    const bool is_bitnet = c.arch == "bitnet" || c.arch == "bitnet-b1.58" || c.arch == "bitnet-25";
    BITNET_CHECK(is_bitnet || c.arch == "llama", UnsupportedError, path, ": architecture '", c.arch,
                 "' is not supported (supported: bitnet, bitnet-b1.58, bitnet-25, llama)");
    const std::string p = c.arch + ".";

    auto required_uint = [&](const std::string& key) -> int64_t {
        auto v = f.get_uint(p + key);
        BITNET_CHECK(v.has_value(), FormatError, path, ": missing key '", p + key, "'");
        BITNET_CHECK(*v >= 1 && *v <= (uint64_t{1} << 31), FormatError, path, ": key '", p + key,
                     "' has out-of-range value ", *v);
        return static_cast<int64_t>(*v);
    };
    auto optional_uint = [&](const std::string& key, int64_t fallback) -> int64_t {
        if (!f.find_kv(p + key)) return fallback;
        return required_uint(key);
    };

    c.n_embd = required_uint("embedding_length");
    c.n_layers = required_uint("block_count");
    // Each block has at least nine tensors (two norms, seven linears): a block count beyond
    // what the tensor table holds is corrupt, rejected before anything is sized from it.
    const uint64_t n_tensors = f.tensors().size();
    BITNET_CHECK(static_cast<uint64_t>(c.n_layers) <= n_tensors / 9, FormatError, path, ": key '",
                 p, "block_count' is ", c.n_layers, " but the file has ", n_tensors,
                 " tensors, enough for at most ", n_tensors / 9, " blocks of 9");
    c.n_ff = required_uint("feed_forward_length");
    c.n_heads = required_uint("attention.head_count");
    c.n_kv_heads = optional_uint("attention.head_count_kv", c.n_heads);
    c.n_ctx_train = optional_uint("context_length", 4096);
    BITNET_CHECK(c.n_embd % c.n_heads == 0 || f.find_kv(p + "attention.key_length"), FormatError,
                 path, ": embedding_length ", c.n_embd, " is not a multiple of head_count ",
                 c.n_heads, " and no attention.key_length is given");
    c.head_dim = optional_uint("attention.key_length", c.n_embd / c.n_heads);
    const int64_t value_length = optional_uint("attention.value_length", c.head_dim);
    BITNET_CHECK(value_length == c.head_dim, UnsupportedError, path,
                 ": attention.value_length ", value_length, " differs from key_length ", c.head_dim);
    BITNET_CHECK(c.n_heads % c.n_kv_heads == 0, FormatError, path, ": head_count ", c.n_heads,
                 " is not a multiple of head_count_kv ", c.n_kv_heads);
    c.n_rot = optional_uint("rope.dimension_count", c.head_dim);
    BITNET_CHECK(c.n_rot <= c.head_dim && c.n_rot % 2 == 0, FormatError, path,
                 ": rope.dimension_count ", c.n_rot, " must be even and at most the head size ",
                 c.head_dim);

    auto eps = f.get_float(p + "attention.layer_norm_rms_epsilon");
    BITNET_CHECK(eps.has_value(), FormatError, path, ": missing key '", p,
                 "attention.layer_norm_rms_epsilon'");
    BITNET_CHECK(std::isfinite(*eps) && *eps >= 0.0 && *eps < 1.0, FormatError, path,
                 ": layer_norm_rms_epsilon ", *eps, " is out of range");
    c.rms_eps = static_cast<float>(*eps);
    c.rope_theta = static_cast<float>(f.get_float(p + "rope.freq_base").value_or(10000.0));
    BITNET_CHECK(std::isfinite(c.rope_theta) && c.rope_theta > 1.0f, FormatError, path,
                 ": rope.freq_base ", c.rope_theta, " is out of range");

    const std::string scaling = f.get_string(p + "rope.scaling.type").value_or("none");
    double factor = f.get_float(p + "rope.scaling.factor").value_or(1.0);
    if (scaling == "linear") {
        BITNET_CHECK(std::isfinite(factor) && factor >= 1.0, FormatError, path,
                     ": rope.scaling.factor ", factor, " is out of range");
        c.rope_freq_scale = static_cast<float>(1.0 / factor);
    } else if (scaling == "none") {
        BITNET_CHECK(factor == 1.0, FormatError, path, ": rope.scaling.factor ", factor,
                     " given without a scaling type");
    } else {
        throw UnsupportedError(str_cat(path, ": RoPE scaling '", scaling,
                                       "' is not supported (supported: none, linear)"));
    }

    // llama.cpp: bitnet defaults to SiLU unless <arch>.hidden_activation says otherwise;
    // bitnet.cpp's bitnet-b1.58 / bitnet-25 architectures are the 2B4T family (ReLU²).
    Activation fallback = c.arch == "bitnet" || c.arch == "llama" ? Activation::kSilu
                                                                   : Activation::kRelu2;
    if (auto act = f.get_string(p + "hidden_activation")) {
        c.activation = parse_activation(path, p + "hidden_activation", *act);
    } else {
        c.activation = fallback;
    }
    c.rope_style = c.arch == "llama" ? RopeStyle::kNorm : RopeStyle::kNeox;

    const GgufTensor* embd = f.find_tensor("token_embd.weight");
    BITNET_CHECK(embd, FormatError, path, ": missing tensor 'token_embd.weight'");
    BITNET_CHECK(embd->shape.size() == 2 && static_cast<int64_t>(embd->shape[0]) == c.n_embd,
                 FormatError, path, ": tensor 'token_embd.weight' has shape ", embd->shape_str(),
                 ", expected [", c.n_embd, ", n_vocab]");
    c.n_vocab = static_cast<int64_t>(embd->shape[1]);
    if (auto v = f.get_uint(p + "vocab_size")) {
        BITNET_CHECK(static_cast<int64_t>(*v) == c.n_vocab, FormatError, path, ": key '", p,
                     "vocab_size' is ", *v, " but token_embd has ", c.n_vocab, " rows");
    }
    c.tied_output = f.find_tensor("output.weight") == nullptr;
    return c;
}

}  // namespace bitnet
