// The decoder forward pass, top-down like the papers (BitNet b1.58 on a LLaMA-style stack).
#include "model/model.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "model/ops.h"

namespace bitnet {

std::shared_ptr<const Model> Model::load(const std::string& path) {
    std::shared_ptr<Model> m(new Model());
    m->file_ = std::make_unique<GgufFile>(path);
    m->config_ = ModelConfig::from_gguf(*m->file_);
    m->weights_ = ModelWeights::load(*m->file_, m->config_);
    m->kernels_ = &kernels::active_kernels();
    return m;
}

Session::Session(std::shared_ptr<const Model> model, int64_t n_ctx, int64_t n_batch)
    : model_(std::move(model)) {
    const ModelConfig& c = model_->config();
    n_ctx_ = n_ctx > 0 ? n_ctx : c.n_ctx_train;
    BITNET_CHECK(n_ctx_ >= 1 && n_ctx_ <= (int64_t{1} << 24), ShapeError, "n_ctx ", n_ctx_,
                 " is out of range [1, 2^24]");
    BITNET_CHECK(n_batch >= 1, ShapeError, "n_batch must be at least 1, got ", n_batch);
    n_batch_ = std::min(n_batch, n_ctx_);

    const int64_t q_dim = c.n_heads * c.head_dim;
    const int64_t kv_dim = c.n_kv_heads * c.head_dim;
    const auto n = static_cast<size_t>(n_batch_);
    for (int64_t il = 0; il < c.n_layers; ++il) {
        k_cache_.emplace_back(static_cast<size_t>(n_ctx_ * kv_dim));
        v_cache_.emplace_back(static_cast<size_t>(n_ctx_ * kv_dim));
    }
    x_ = AlignedBuffer<float>(n * c.n_embd);
    xn_ = AlignedBuffer<float>(n * std::max(c.n_embd, q_dim));
    q_ = AlignedBuffer<float>(n * q_dim);
    k_ = AlignedBuffer<float>(n * kv_dim);
    v_ = AlignedBuffer<float>(n * kv_dim);
    attn_ = AlignedBuffer<float>(n * q_dim);
    gate_ = AlignedBuffer<float>(n * c.n_ff);
    up_ = AlignedBuffer<float>(n * c.n_ff);
    proj_ = AlignedBuffer<float>(n * c.n_embd);
    scores_ = AlignedBuffer<float>(static_cast<size_t>(n_ctx_));
    row_ = AlignedBuffer<float>(static_cast<size_t>(c.n_embd));
    act_stride_ = kernels::padded_k(std::max({c.n_embd, q_dim, c.n_ff}));
    act_q_ = AlignedBuffer<int8_t>(n * act_stride_);
    act_scale_ = AlignedBuffer<float>(n);
    act_sum_ = AlignedBuffer<int32_t>(n);
    acc_ = AlignedBuffer<int32_t>(n * std::max({c.n_embd, q_dim, c.n_ff}));
    positions_.resize(n);
}

void Session::truncate(int64_t n) {
    BITNET_CHECK(n >= 0 && n <= n_past_, ShapeError, "cannot truncate a session of ", n_past_,
                 " tokens to ", n);
    n_past_ = n;  // cache rows beyond n are simply overwritten later
}

void Session::decode(const int32_t* tokens, int64_t n, float* logits, bool all_logits) {
    const ModelConfig& c = model_->config();
    BITNET_CHECK(n >= 1, ShapeError, "decode needs at least one token");
    BITNET_CHECK(n <= n_ctx_ - n_past_, ShapeError, "context overflow: ", n_past_,
                 " tokens in the context plus ", n, " new ones exceed n_ctx = ", n_ctx_);
    for (int64_t i = 0; i < n; ++i) {
        BITNET_CHECK(tokens[i] >= 0 && tokens[i] < c.n_vocab, ShapeError, "token id ", tokens[i],
                     " at index ", i, " is out of range [0, ", c.n_vocab, ")");
    }
    for (int64_t start = 0; start < n; start += n_batch_) {
        const int64_t count = std::min(n_batch_, n - start);
        const bool last_chunk = start + count == n;
        if (all_logits) {
            forward(tokens + start, count, logits + start * c.n_vocab, true);
        } else {
            forward(tokens + start, count, last_chunk ? logits : nullptr, false);
        }
    }
}

void Session::quantize(const float* x, int64_t n_tokens, int64_t n) {
    const kernels::KernelTable& kt = model_->kernels();
    for (int64_t t = 0; t < n_tokens; ++t) {
        kt.quantize_i8(x + t * n, n, kernels::padded_k(n), act_q_.data() + t * act_stride_,
                       act_scale_.data() + t, act_sum_.data() + t);
    }
    acts_ = {act_q_.data(), act_scale_.data(), act_sum_.data(), n_tokens, act_stride_};
}

void Session::linear(const PackedLinear& w, int64_t n_tokens, float* y) {
    const kernels::KernelTable& kt = model_->kernels();
    if (w.binary) {
        kt.gemm_b1(w.b1(), acts_, 0, w.n_out, acc_.data(), w.n_out);
    } else {
        kt.gemm_t2(w.t2(), acts_, 0, w.n_out, acc_.data(), w.n_out);
    }
    // BitLinear epilogue: y = (sum_j code * q) * beta / s_x.
    for (int64_t t = 0; t < n_tokens; ++t) {
        const float inv_act = 1.0f / acts_.scale[t];
        const int32_t* acc = acc_.data() + t * w.n_out;
        float* yt = y + t * w.n_out;
        for (int64_t r = 0; r < w.n_out; ++r) {
            yt[r] = static_cast<float>(acc[r]) * w.row_scale[r] * inv_act;
        }
    }
}

void Session::forward(const int32_t* tokens, int64_t n, float* logits, bool all_logits) {
    const ModelConfig& c = model_->config();
    const ModelWeights& w = model_->weights();
    const int64_t q_dim = c.n_heads * c.head_dim;
    const int64_t kv_dim = c.n_kv_heads * c.head_dim;
    const int64_t pos0 = n_past_;
    float* x = x_.data();  // (n, n_embd)

    for (int64_t t = 0; t < n; ++t) {
        w.token_embd.row(tokens[t], x + t * c.n_embd);
        positions_[t] = static_cast<int32_t>(pos0 + t);
    }

    for (int64_t il = 0; il < c.n_layers; ++il) {
        const LayerWeights& l = w.layers[static_cast<size_t>(il)];

        // Attention block: x += o_proj(sub_norm(attention(rope(q), rope(k), v)))
        ops::rms_norm(x, l.attn_norm.data(), n, c.n_embd, c.rms_eps, xn_.data());
        quantize(xn_.data(), n, c.n_embd);
        linear(l.wq, n, q_.data());
        linear(l.wk, n, k_.data());
        linear(l.wv, n, v_.data());
        ops::rope(q_.data(), positions_.data(), n, c.n_heads, c.head_dim, c.n_rot, c.rope_theta,
                  c.rope_freq_scale, c.rope_style);
        ops::rope(k_.data(), positions_.data(), n, c.n_kv_heads, c.head_dim, c.n_rot,
                  c.rope_theta, c.rope_freq_scale, c.rope_style);
        float* kc = k_cache_[static_cast<size_t>(il)].data();
        float* vc = v_cache_[static_cast<size_t>(il)].data();
        std::memcpy(kc + pos0 * kv_dim, k_.data(), sizeof(float) * n * kv_dim);
        std::memcpy(vc + pos0 * kv_dim, v_.data(), sizeof(float) * n * kv_dim);
        ops::attention(q_.data(), kc, vc, n, pos0, c.n_heads, c.n_kv_heads, c.head_dim,
                       attn_.data(), scores_.data());
        const float* o_in = attn_.data();
        if (!l.attn_sub_norm.empty()) {
            ops::rms_norm(attn_.data(), l.attn_sub_norm.data(), n, q_dim, c.rms_eps, xn_.data());
            o_in = xn_.data();
        }
        quantize(o_in, n, q_dim);
        linear(l.wo, n, proj_.data());
        for (int64_t i = 0; i < n * c.n_embd; ++i) x[i] += proj_[i];

        // Feed-forward block: x += down(sub_norm(act(gate(h)) * up(h))), h = ffn_norm(x)
        ops::rms_norm(x, l.ffn_norm.data(), n, c.n_embd, c.rms_eps, xn_.data());
        quantize(xn_.data(), n, c.n_embd);
        linear(l.w_gate, n, gate_.data());
        linear(l.w_up, n, up_.data());
        ops::gated_activation(gate_.data(), up_.data(), n * c.n_ff, c.activation);
        if (!l.ffn_sub_norm.empty()) {
            ops::rms_norm(gate_.data(), l.ffn_sub_norm.data(), n, c.n_ff, c.rms_eps, gate_.data());
        }
        quantize(gate_.data(), n, c.n_ff);
        linear(l.w_down, n, proj_.data());
        for (int64_t i = 0; i < n * c.n_embd; ++i) x[i] += proj_[i];
    }
    n_past_ += n;
    if (logits == nullptr) return;

    // Output: logits = output_norm(x) . output^T, for every token or only the last.
    const int64_t first = all_logits ? 0 : n - 1;
    const int64_t n_out_tokens = n - first;
    ops::rms_norm(x + first * c.n_embd, w.output_norm.data(), n_out_tokens, c.n_embd, c.rms_eps,
                  xn_.data());
    for (int64_t v = 0; v < c.n_vocab; ++v) {
        w.output.row(v, row_.data());
        for (int64_t t = 0; t < n_out_tokens; ++t) {
            logits[t * c.n_vocab + v] = ops::dot(xn_.data() + t * c.n_embd, row_.data(), c.n_embd);
        }
    }
}

}  // namespace bitnet
