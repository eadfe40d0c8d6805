// Binding GGUF tensors to the decoder's weights, with shape and type checks.
#include "model/weights.h"

#include <algorithm>
#include <cmath>
#include <new>

#include "core/error.h"
#include "format/dequant.h"
#include "format/types.h"

namespace bitnet {
namespace {

std::string shape_str(std::initializer_list<int64_t> dims) {
    std::string s = "[";
    bool first = true;
    for (int64_t d : dims) {
        s += (first ? "" : ", ") + std::to_string(d);
        first = false;
    }
    return s + "]";
}

const GgufTensor& require(const GgufFile& f, const std::string& name) {
    const GgufTensor* t = f.find_tensor(name);
    BITNET_CHECK(t, FormatError, f.path(), ": missing tensor '", name, "'");
    return *t;
}

void check_shape(const GgufFile& f, const GgufTensor& t, std::initializer_list<int64_t> dims) {
    bool ok = t.shape.size() == dims.size();
    size_t i = 0;
    for (int64_t d : dims) ok = ok && static_cast<int64_t>(t.shape[i++]) == d;
    BITNET_CHECK(ok, FormatError, f.path(), ": tensor '", t.name, "' has shape ", t.shape_str(),
                 ", expected ", shape_str(dims));
}

std::vector<float> load_norm(const GgufFile& f, const std::string& name, int64_t n) {
    const GgufTensor& t = require(f, name);
    check_shape(f, t, {n});
    const auto type = static_cast<TensorType>(t.type);
    BITNET_CHECK(type == TensorType::F32 || type == TensorType::F16 || type == TensorType::BF16,
                 FormatError, f.path(), ": tensor '", name, "' has type ", type_name(t.type),
                 ", expected F32 (or F16/BF16) for a norm weight");
    std::vector<float> w(static_cast<size_t>(n));
    dequantize_row(t.type, t.data, n, w.data());
    for (float v : w) {
        BITNET_CHECK(std::isfinite(v), FormatError, f.path(), ": tensor '", name,
                     "' contains a non-finite value");
    }
    return w;
}

std::vector<float> load_optional_norm(const GgufFile& f, const std::string& name, int64_t n) {
    return f.find_tensor(name) ? load_norm(f, name, n) : std::vector<float>();
}

DenseMatrix load_dense(const GgufFile& f, const std::string& name, int64_t n_rows, int64_t n_cols) {
    const GgufTensor& t = require(f, name);
    check_shape(f, t, {n_cols, n_rows});
    BITNET_CHECK(can_dequantize(t.type), FormatError, f.path(), ": tensor '", name,
                 "' has type ", type_name(t.type),
                 ", expected a float type for embeddings (F32, F16, BF16) or a ggml block type "
                 "this build decodes");
    DenseMatrix m;
    m.tensor = &t;
    m.n_rows = n_rows;
    m.n_cols = n_cols;
    m.row_bytes = t.size_bytes / static_cast<uint64_t>(n_rows);
    return m;
}

// A BitLinear weight [n_in, n_out], with llama.cpp's optional per-tensor "<name>.scale" [1].
PackedLinear load_linear(const GgufFile& f, const std::string& base, int64_t n_in, int64_t n_out,
                         bool allow_latent) {
    const GgufTensor& t = require(f, base + ".weight");
    check_shape(f, t, {n_in, n_out});
    PackedLinear w = pack_linear(f, t, allow_latent);
    f.mapped().release_pages(t.offset, t.size_bytes);  // the repacked copy is all we read now
    if (const GgufTensor* s = f.find_tensor(base + ".scale")) {
        check_shape(f, *s, {1});
        BITNET_CHECK(can_dequantize(s->type) && s->type != static_cast<uint32_t>(TensorType::Q8_0),
                     FormatError, f.path(), ": tensor '", s->name, "' has type ",
                     type_name(s->type), ", expected F32");
        float scale = 0.0f;
        dequantize_row(s->type, s->data, 1, &scale);
        BITNET_CHECK(std::isfinite(scale), FormatError, f.path(), ": tensor '", s->name,
                     "' is not finite");
        for (float& r : w.row_scale) r *= scale;
    }
    return w;
}

// ModelWeights::load's body; current names the tensor being loaded, for the out-of-memory message.
ModelWeights load_all(const GgufFile& f, const ModelConfig& c, std::string& current) {
    ModelWeights w;
    w.token_embd = load_dense(f, "token_embd.weight", c.n_vocab, c.n_embd);
    current = "output.weight";
    w.output = c.tied_output ? w.token_embd : load_dense(f, "output.weight", c.n_vocab, c.n_embd);
    current = "output_norm.weight";
    w.output_norm = load_norm(f, "output_norm.weight", c.n_embd);

    const int64_t q_dim = c.n_heads * c.head_dim;
    const int64_t kv_dim = c.n_kv_heads * c.head_dim;
    // Files of the bitnet architectures may carry latent float weights, quantized here as the
    // BitNet reference does at load; a llama file must already be ternary.
    const bool allow_latent = c.arch != "llama";
    // Layers are added as their tensors are found: nothing is sized from block_count alone.
    w.layers.reserve(static_cast<size_t>(std::min<int64_t>(c.n_layers, 256)));
    for (int64_t il = 0; il < c.n_layers; ++il) {
        const std::string p = "blk." + std::to_string(il) + ".";
        LayerWeights& l = w.layers.emplace_back();
        auto norm = [&](const char* name, int64_t n, bool optional) {
            current = p + name;
            return optional ? load_optional_norm(f, current, n) : load_norm(f, current, n);
        };
        auto linear = [&](const char* name, int64_t n_in, int64_t n_out) {
            current = p + name + ".weight";
            return load_linear(f, p + name, n_in, n_out, allow_latent);
        };
        l.attn_norm = norm("attn_norm.weight", c.n_embd, false);
        l.ffn_norm = norm("ffn_norm.weight", c.n_embd, false);
        l.attn_sub_norm = norm("attn_sub_norm.weight", q_dim, true);
        l.ffn_sub_norm = norm("ffn_sub_norm.weight", c.n_ff, true);
        l.wq = linear("attn_q", c.n_embd, q_dim);
        l.wk = linear("attn_k", c.n_embd, kv_dim);
        l.wv = linear("attn_v", c.n_embd, kv_dim);
        l.wo = linear("attn_output", q_dim, c.n_embd);
        l.w_gate = linear("ffn_gate", c.n_embd, c.n_ff);
        l.w_up = linear("ffn_up", c.n_embd, c.n_ff);
        l.w_down = linear("ffn_down", c.n_ff, c.n_embd);
    }
    return w;
}

}  // namespace

void DenseMatrix::row(int64_t i, float* out) const {
    dequantize_row(tensor->type, tensor->data + static_cast<uint64_t>(i) * row_bytes, n_cols, out);
}

ModelWeights ModelWeights::load(const GgufFile& f, const ModelConfig& c) {
    std::string current = "token_embd.weight";  // the tensor being loaded, for the message
    try {
        return load_all(f, c, current);
    } catch (const std::bad_alloc&) {
        // Sizes were checked against the tensors in the file: the machine is out of memory.
        const GgufTensor* t = f.find_tensor(current);
        throw Error(str_cat(f.path(), ": out of memory while loading tensor '", current, "'",
                            t ? str_cat(" (", type_name(t->type), ", shape ", t->shape_str(), ")")
                              : std::string()));
    }
}

}  // namespace bitnet
