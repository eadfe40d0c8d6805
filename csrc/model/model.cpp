// The decoder forward pass, top-down like the papers (BitNet b1.58 on a LLaMA-style stack), run
// by the Session's thread pool: every parallel region splits rows of a matrix (or attention
// heads, or tokens) into one contiguous range per thread, and the float epilogue of each
// BitLinear (scales, RoPE, the KV-cache store, the gated activation, the residual add) runs in
// the same region on the rows the thread just computed.
#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "format/types.h"

namespace bitnet {
namespace {

int resolve_threads(int n) { return n > 0 ? n : ThreadPool::default_threads(); }

// Requantizes the output layer to Q8 blocks, rows split over the threads of pool. The source
// rows' pages are released chunk by chunk, so the float copy never becomes resident as a whole.
Q8Output make_q8_output(const GgufFile& file, const DenseMatrix& src, const kernels::KernelTable& kt,
                        ThreadPool& pool) {
    constexpr int64_t kChunkRows = 1024;
    Q8Output out;
    out.n_rows = src.n_rows;
    out.n_cols = src.n_cols;
    out.q = AlignedBuffer<int8_t>(static_cast<size_t>(src.n_rows * src.n_cols), true);
    out.d = AlignedBuffer<float>(static_cast<size_t>(src.n_rows * src.n_cols / kernels::kQ8Block), true);
    pool.run([&](int ith, int nth) {
        int64_t b = 0, e = 0;
        split_range(src.n_rows, kChunkRows, ith, nth, &b, &e);
        std::vector<float> row(static_cast<size_t>(src.n_cols));
        const bool f16 = src.tensor->type == static_cast<uint32_t>(TensorType::F16);
        for (int64_t r = b; r < e; ++r) {
            if (f16) {  // the common case, on the SIMD converter
                kt.from_f16(reinterpret_cast<const uint16_t*>(src.tensor->data + r * src.row_bytes),
                            row.data(), src.n_cols);
            } else {
                src.row(r, row.data());
            }
            kt.quantize_q8(row.data(), src.n_cols, out.q.data() + r * src.n_cols,
                           out.d.data() + r * (src.n_cols / kernels::kQ8Block));
            if ((r + 1) % kChunkRows == 0 || r + 1 == e) {
                const int64_t first = r + 1 - ((r - b) % kChunkRows + 1);
                file.mapped().release_pages(
                    src.tensor->offset + static_cast<uint64_t>(first) * src.row_bytes,
                    static_cast<uint64_t>(r + 1 - first) * src.row_bytes);
            }
        }
    });
    return out;
}

// Rotates one head in place with the precomputed cos/sin pairs cs[2i], cs[2i+1] (RopeStyle).
void rope_head(float* head, const float* cs, int64_t n_rot, RopeStyle style) {
    const int64_t half = n_rot / 2;
    for (int64_t i = 0; i < half; ++i) {
        const float c = cs[2 * i];
        const float s = cs[2 * i + 1];
        const int64_t a = style == RopeStyle::kNeox ? i : 2 * i;
        const int64_t b = style == RopeStyle::kNeox ? i + half : 2 * i + 1;
        const float x0 = head[a];
        const float x1 = head[b];
        head[a] = x0 * c - x1 * s;
        head[b] = x1 * c + x0 * s;
    }
}

}  // namespace

std::shared_ptr<const Model> Model::load(const std::string& path, const LoadOptions& options) {
    std::shared_ptr<Model> m(new Model());
    m->file_ = std::make_unique<GgufFile>(path);
    m->config_ = ModelConfig::from_gguf(*m->file_);
    m->weights_ = ModelWeights::load(*m->file_, m->config_);
    m->kernels_ = &kernels::active_kernels();
    if (!options.isa.empty()) {
        m->kernels_ = kernels::kernels_for(options.isa.c_str());
        BITNET_CHECK(m->kernels_ != nullptr, UnsupportedError, "kernels '", options.isa,
                     "' are not available on this CPU (it has: ",
                     kernels::active_kernels().isa, " and below)");
    }
    BITNET_CHECK(options.kernel.empty() || options.kernel == "mad" || options.kernel == "lut",
                 ShapeError, "kernel must be 'mad' or 'lut', not '", options.kernel, "'");
    const ModelConfig& c = m->config_;
    const int n_threads = resolve_threads(options.n_threads);

    // Each ternary matrix moves into the layout of the kernel family chosen for its shape.
    for (LayerWeights& l : m->weights_.layers) {
        for (PackedLinear* w : l.linears()) {
            if (w->binary) continue;
            auto k = kernels::choose_ternary_kernel(*m->kernels_, w->n_out, w->n_in, 1, n_threads);
            if (!options.kernel.empty()) {
                k = options.kernel == "lut" ? kernels::TernaryKernel::kLut : kernels::TernaryKernel::kMad;
            }
            w->use_kernel(k);
            m->has_lut_ = m->has_lut_ || k == kernels::TernaryKernel::kLut;
        }
    }

    OutputType out = options.output;
    if (out == OutputType::kAuto) {
        out = c.n_embd % kernels::kQ8Block == 0 ? OutputType::kQ8 : OutputType::kF32;
    }
    BITNET_CHECK(out != OutputType::kQ8 || c.n_embd % kernels::kQ8Block == 0, UnsupportedError,
                 path, ": an int8 output layer needs a hidden size that is a multiple of 32, not ",
                 c.n_embd);
    m->output_type_ = out;
    if (out == OutputType::kQ8) {
        ThreadPool pool(n_threads);
        // Only the int8 copy is read from now on; embedding rows fault back in as looked up.
        m->weights_.output_q8 = make_q8_output(*m->file_, m->weights_.output, *m->kernels_, pool);
    }
    return m;
}

int64_t Model::bytes_per_token() const {
    int64_t bytes = 0;
    for (const LayerWeights& l : weights_.layers) {
        for (const PackedLinear* w : l.linears()) {
            bytes += static_cast<int64_t>(w->packed.size());
        }
    }
    if (output_type_ == OutputType::kQ8) {
        bytes += static_cast<int64_t>(weights_.output_q8.q.size() + 4 * weights_.output_q8.d.size());
    } else {
        bytes += static_cast<int64_t>(weights_.output.tensor->size_bytes);
    }
    return bytes + static_cast<int64_t>(weights_.token_embd.row_bytes);
}

Session::Session(std::shared_ptr<const Model> model, int64_t n_ctx, int64_t n_batch)
    : Session(std::move(model), SessionOptions{n_ctx, n_batch, 1, false}) {}

Session::Session(std::shared_ptr<const Model> model, const SessionOptions& options)
    : model_(std::move(model)), kv_f16_(options.kv_f16), pool_(resolve_threads(options.n_threads)) {
    const ModelConfig& c = model_->config();
    n_ctx_ = options.n_ctx > 0 ? options.n_ctx : c.n_ctx_train;
    BITNET_CHECK(n_ctx_ >= 1 && n_ctx_ <= (int64_t{1} << 24), ShapeError, "n_ctx ", n_ctx_,
                 " is out of range [1, 2^24]");
    BITNET_CHECK(options.n_batch >= 1, ShapeError, "n_batch must be at least 1, got ",
                 options.n_batch);
    BITNET_CHECK(options.n_threads >= 0 && options.n_threads <= 1024, ShapeError,
                 "n_threads must be in [0, 1024], got ", options.n_threads);
    n_batch_ = std::min(options.n_batch, n_ctx_);

    const int64_t q_dim = c.n_heads * c.head_dim;
    const int64_t kv_dim = c.n_kv_heads * c.head_dim;
    const int64_t widest = std::max({c.n_embd, q_dim, c.n_ff});
    const auto n = static_cast<size_t>(n_batch_);
    const auto cache = static_cast<size_t>(n_ctx_ * kv_dim);
    for (int64_t il = 0; il < c.n_layers; ++il) {
        if (kv_f16_) {
            k_cache16_.emplace_back(cache);
            v_cache16_.emplace_back(cache);
        } else {
            k_cache_.emplace_back(cache);
            v_cache_.emplace_back(cache);
        }
    }
    const auto n_threads = static_cast<size_t>(pool_.n_threads());
    x_ = AlignedBuffer<float>(n * c.n_embd);
    xn_ = AlignedBuffer<float>(n * widest);
    q_ = AlignedBuffer<float>(n * q_dim);
    k_ = AlignedBuffer<float>(n * kv_dim);
    v_ = AlignedBuffer<float>(n * kv_dim);
    attn_ = AlignedBuffer<float>(n * q_dim);
    ffn_ = AlignedBuffer<float>(n * c.n_ff);
    scores_ = AlignedBuffer<float>(n_threads * static_cast<size_t>(n_ctx_));
    rows_ = AlignedBuffer<float>(n_threads * static_cast<size_t>(c.n_embd));
    rope_cs_ = AlignedBuffer<float>(n * static_cast<size_t>(std::max<int64_t>(c.n_rot, 2)));
    act_stride_ = kernels::padded_k(widest);
    act_q_ = AlignedBuffer<int8_t>(n * act_stride_);
    act_scale_ = AlignedBuffer<float>(n);
    act_sum_ = AlignedBuffer<int32_t>(n);
    if (model_->has_lut()) lut_ = AlignedBuffer<uint8_t>(n * kernels::lut_bytes(act_stride_));
    acc_ = AlignedBuffer<int32_t>(n * widest);
    acc2_ = AlignedBuffer<int32_t>(n * widest);
    acc3_ = AlignedBuffer<int32_t>(n * kv_dim);
    if (model_->output_type() == OutputType::kQ8) {
        out_q_ = AlignedBuffer<int8_t>(n * c.n_embd);
        out_d_ = AlignedBuffer<float>(n * c.n_embd / kernels::kQ8Block);
    }
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

int64_t Session::granule(const PackedLinear& w, int64_t multiple_of) const {
    const int64_t base = w.kernel == kernels::TernaryKernel::kLut && !w.binary ? kernels::kL2TileRows : 8;
    return std::lcm(base, std::max<int64_t>(multiple_of, 1));
}

void Session::norm_quantize(const float* x, const float* norm, int64_t n_tokens, int64_t n) {
    const kernels::KernelTable& kt = model_->kernels();
    const float eps = model_->config().rms_eps;
    const int64_t k_pad = kernels::padded_k(n);
    const int64_t lut_stride = kernels::lut_bytes(act_stride_);
    const bool lut = model_->has_lut();
    auto token = [&](int64_t t) {
        const float* src = x + t * n;
        if (norm != nullptr) {
            kt.rms_norm(src, norm, n, eps, xn_.data() + t * n);
            src = xn_.data() + t * n;
        }
        int8_t* q = act_q_.data() + t * act_stride_;
        kt.quantize_i8(src, n, k_pad, q, act_scale_.data() + t, act_sum_.data() + t);
        if (lut) {
            const kernels::ActsI8 one{q, act_scale_.data() + t, act_sum_.data() + t, 1, act_stride_};
            kt.build_lut(one, k_pad, lut_.data() + t * lut_stride);
        }
    };
    if (n_tokens < 4 || pool_.n_threads() == 1) {
        for (int64_t t = 0; t < n_tokens; ++t) token(t);
    } else {
        pool_.run([&](int ith, int nth) {
            int64_t b = 0, e = 0;
            split_range(n_tokens, 1, ith, nth, &b, &e);
            for (int64_t t = b; t < e; ++t) token(t);
        });
    }
    acts_ = {act_q_.data(), act_scale_.data(), act_sum_.data(), n_tokens, act_stride_};
    act_k_pad_ = k_pad;
}

void Session::linear_rows(const PackedLinear& w, int64_t n_tokens, int64_t row_begin,
                          int64_t row_end, int32_t* acc) const {
    if (row_begin >= row_end) return;
    const kernels::KernelTable& kt = model_->kernels();
    if (w.binary) {
        kt.gemm_b1(w.b1(), acts_, row_begin, row_end, acc + row_begin, w.n_out);
    } else if (w.kernel == kernels::TernaryKernel::kLut) {
        const kernels::LutTables tables{lut_.data(), n_tokens, kernels::lut_bytes(act_stride_)};
        kt.gemm_l2(w.l2(), tables, row_begin, row_end, acc + row_begin, w.n_out);
    } else {
        kt.gemm_t2(w.t2(), acts_, row_begin, row_end, acc + row_begin, w.n_out);
    }
}

// BitLinear epilogue: y = (sum_j code * q) * beta / s_x, for rows [b, e) of every token.
#define BITNET_EPILOGUE(w, acc, n_tokens, b, e, STMT)                        \
    for (int64_t t = 0; t < (n_tokens); ++t) {                              \
        const float inv_act = 1.0f / acts_.scale[t];                        \
        const int32_t* a_ = (acc) + t * (w).n_out;                          \
        for (int64_t r = (b); r < (e); ++r) {                               \
            const float y = static_cast<float>(a_[r]) * (w).row_scale[r] * inv_act; \
            STMT;                                                           \
        }                                                                   \
    }

void Session::attention_layer(int64_t il, int64_t n, int64_t pos0) {
    const ModelConfig& c = model_->config();
    const kernels::KernelTable& kt = model_->kernels();
    const LayerWeights& l = model_->weights().layers[static_cast<size_t>(il)];
    const int64_t hd = c.head_dim;
    const int64_t q_dim = c.n_heads * hd;
    const int64_t kv_dim = c.n_kv_heads * hd;
    const int64_t n_rot = c.n_rot;
    float* q = q_.data();
    float* k = k_.data();
    float* v = v_.data();

    // Region 1: q, k, v rows of this thread; RoPE on its heads; K and V into the cache.
    pool_.run([&](int ith, int nth) {
        int64_t b = 0, e = 0;
        split_range(q_dim, granule(l.wq, hd), ith, nth, &b, &e);
        linear_rows(l.wq, n, b, e, acc_.data());
        BITNET_EPILOGUE(l.wq, acc_.data(), n, b, e, q[t * q_dim + r] = y)
        for (int64_t t = 0; t < n; ++t) {
            for (int64_t h = b / hd; h < e / hd; ++h) {
                rope_head(q + t * q_dim + h * hd, rope_cs_.data() + t * n_rot, n_rot, c.rope_style);
            }
        }
        split_range(kv_dim, granule(l.wk, hd), ith, nth, &b, &e);
        linear_rows(l.wk, n, b, e, acc2_.data());
        BITNET_EPILOGUE(l.wk, acc2_.data(), n, b, e, k[t * kv_dim + r] = y)
        for (int64_t t = 0; t < n; ++t) {
            for (int64_t h = b / hd; h < e / hd; ++h) {
                rope_head(k + t * kv_dim + h * hd, rope_cs_.data() + t * n_rot, n_rot, c.rope_style);
            }
        }
        int64_t vb = 0, ve = 0;
        split_range(kv_dim, granule(l.wv, hd), ith, nth, &vb, &ve);
        linear_rows(l.wv, n, vb, ve, acc3_.data());
        BITNET_EPILOGUE(l.wv, acc3_.data(), n, vb, ve, v[t * kv_dim + r] = y)
        for (int64_t t = 0; t < n; ++t) {
            const int64_t row = (pos0 + t) * kv_dim;
            if (kv_f16_) {
                uint16_t* kc = k_cache16_[static_cast<size_t>(il)].data() + row;
                uint16_t* vc = v_cache16_[static_cast<size_t>(il)].data() + row;
                if (e > b) kt.to_f16(k + t * kv_dim + b, kc + b, e - b);
                if (ve > vb) kt.to_f16(v + t * kv_dim + vb, vc + vb, ve - vb);
            } else {
                float* kc = k_cache_[static_cast<size_t>(il)].data() + row;
                float* vc = v_cache_[static_cast<size_t>(il)].data() + row;
                std::memcpy(kc + b, k + t * kv_dim + b, sizeof(float) * (e - b));
                std::memcpy(vc + vb, v + t * kv_dim + vb, sizeof(float) * (ve - vb));
            }
        }
    });

    // Region 2: causal grouped-query attention, (token, head) pairs split over the threads.
    const int64_t group = c.n_heads / c.n_kv_heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    pool_.run([&](int ith, int nth) {
        int64_t b = 0, e = 0;
        split_range(n * c.n_heads, 1, ith, nth, &b, &e);
        float* scores = scores_.data() + static_cast<int64_t>(ith) * n_ctx_;
        for (int64_t item = b; item < e; ++item) {
            const int64_t t = item / c.n_heads;
            const int64_t h = item % c.n_heads;
            const int64_t kv_off = (h / group) * hd;
            const int64_t n_keys = pos0 + t + 1;  // keys at positions <= this query's
            const float* qh = q + t * q_dim + h * hd;
            float* oh = attn_.data() + t * q_dim + h * hd;
            std::fill(oh, oh + hd, 0.0f);
            if (kv_f16_) {
                const uint16_t* kc = k_cache16_[static_cast<size_t>(il)].data() + kv_off;
                const uint16_t* vc = v_cache16_[static_cast<size_t>(il)].data() + kv_off;
                for (int64_t j = 0; j < n_keys; ++j) scores[j] = kt.dot_f16(qh, kc + j * kv_dim, hd) * scale;
                kt.softmax(scores, n_keys);
                for (int64_t j = 0; j < n_keys; ++j) kt.axpy_f16(scores[j], vc + j * kv_dim, oh, hd);
            } else {
                const float* kc = k_cache_[static_cast<size_t>(il)].data() + kv_off;
                const float* vc = v_cache_[static_cast<size_t>(il)].data() + kv_off;
                for (int64_t j = 0; j < n_keys; ++j) scores[j] = kt.dot_f32(qh, kc + j * kv_dim, hd) * scale;
                kt.softmax(scores, n_keys);
                for (int64_t j = 0; j < n_keys; ++j) kt.axpy_f32(scores[j], vc + j * kv_dim, oh, hd);
            }
        }
    });
}

void Session::forward(const int32_t* tokens, int64_t n, float* logits, bool all_logits) {
    const ModelConfig& c = model_->config();
    const ModelWeights& w = model_->weights();
    const int64_t q_dim = c.n_heads * c.head_dim;
    const int64_t pos0 = n_past_;
    float* x = x_.data();  // (n, n_embd)

    for (int64_t t = 0; t < n; ++t) {
        w.token_embd.row(tokens[t], x + t * c.n_embd);
        positions_[t] = static_cast<int32_t>(pos0 + t);
    }
    // cos/sin of every position and frequency, shared by all layers. Frequencies as Hugging
    // Face computes them in float32: inv_freq[i] = 1 / theta^(2i / n_rot).
    const int64_t half = c.n_rot / 2;
    for (int64_t i = 0; i < half; ++i) {
        const float exponent = static_cast<float>(2 * i) / static_cast<float>(c.n_rot);
        const float inv_freq = 1.0f / std::pow(c.rope_theta, exponent);
        for (int64_t t = 0; t < n; ++t) {
            const float angle = static_cast<float>(positions_[t]) * c.rope_freq_scale * inv_freq;
            rope_cs_[t * c.n_rot + 2 * i] = std::cos(angle);
            rope_cs_[t * c.n_rot + 2 * i + 1] = std::sin(angle);
        }
    }

    for (int64_t il = 0; il < c.n_layers; ++il) {
        const LayerWeights& l = w.layers[static_cast<size_t>(il)];

        // Attention block: x += o_proj(sub_norm(attention(rope(q), rope(k), v)))
        norm_quantize(x, l.attn_norm.data(), n, c.n_embd);
        attention_layer(il, n, pos0);
        norm_quantize(attn_.data(), l.attn_sub_norm.empty() ? nullptr : l.attn_sub_norm.data(), n,
                      q_dim);
        pool_.run([&](int ith, int nth) {
            int64_t b = 0, e = 0;
            split_range(c.n_embd, granule(l.wo, 1), ith, nth, &b, &e);
            linear_rows(l.wo, n, b, e, acc_.data());
            BITNET_EPILOGUE(l.wo, acc_.data(), n, b, e, x[t * c.n_embd + r] += y)
        });

        // Feed-forward block: x += down(sub_norm(act(gate(h)) * up(h))), h = ffn_norm(x)
        norm_quantize(x, l.ffn_norm.data(), n, c.n_embd);
        float* ffn = ffn_.data();
        pool_.run([&](int ith, int nth) {
            int64_t b = 0, e = 0;
            split_range(c.n_ff, std::lcm(granule(l.w_gate, 1), granule(l.w_up, 1)), ith, nth, &b, &e);
            linear_rows(l.w_gate, n, b, e, acc_.data());
            linear_rows(l.w_up, n, b, e, acc2_.data());
            BITNET_EPILOGUE(l.w_gate, acc_.data(), n, b, e, ffn[t * c.n_ff + r] = y)
            const bool relu2 = c.activation == Activation::kRelu2;
            BITNET_EPILOGUE(l.w_up, acc2_.data(), n, b, e, {
                float& g = ffn[t * c.n_ff + r];
                if (relu2) {
                    const float p = std::max(g, 0.0f);
                    g = (p * p) * y;
                } else {
                    g = (g / (1.0f + std::exp(-g))) * y;
                }
            })
        });
        norm_quantize(ffn, l.ffn_sub_norm.empty() ? nullptr : l.ffn_sub_norm.data(), n, c.n_ff);
        pool_.run([&](int ith, int nth) {
            int64_t b = 0, e = 0;
            split_range(c.n_embd, granule(l.w_down, 1), ith, nth, &b, &e);
            linear_rows(l.w_down, n, b, e, acc_.data());
            BITNET_EPILOGUE(l.w_down, acc_.data(), n, b, e, x[t * c.n_embd + r] += y)
        });
    }
    n_past_ += n;
    if (logits == nullptr) return;
    const int64_t first = all_logits ? 0 : n - 1;
    output_logits(first, n - first, logits);
}

#undef BITNET_EPILOGUE

// logits (n_out_tokens, n_vocab) = output_norm(x[first ..]) . output^T
void Session::output_logits(int64_t first, int64_t n_out_tokens, float* logits) {
    const ModelConfig& c = model_->config();
    const ModelWeights& w = model_->weights();
    const kernels::KernelTable& kt = model_->kernels();
    const bool q8 = model_->output_type() == OutputType::kQ8;
    const int64_t n_blocks = c.n_embd / kernels::kQ8Block;
    for (int64_t t = 0; t < n_out_tokens; ++t) {
        float* xn = xn_.data() + t * c.n_embd;
        kt.rms_norm(x_.data() + (first + t) * c.n_embd, w.output_norm.data(), c.n_embd, c.rms_eps, xn);
        if (q8) kt.quantize_q8(xn, c.n_embd, out_q_.data() + t * c.n_embd, out_d_.data() + t * n_blocks);
    }
    const GgufTensor& tensor = *w.output.tensor;
    const bool f16 = tensor.type == static_cast<uint32_t>(TensorType::F16);
    pool_.run([&](int ith, int nth) {
        int64_t b = 0, e = 0;
        split_range(c.n_vocab, 64, ith, nth, &b, &e);
        if (q8) {
            // Blocks of 64 rows stay in cache while every token is multiplied with them.
            const kernels::ActsQ8 xq{out_q_.data(), out_d_.data(), n_out_tokens, c.n_embd};
            for (int64_t r = b; r < e; r += 64) {
                const int64_t re = std::min(r + 64, e);
                kt.gemm_q8(w.output_q8.view(), xq, r, re, logits + r, c.n_vocab);
            }
            return;
        }
        float* row = rows_.data() + static_cast<int64_t>(ith) * c.n_embd;
        for (int64_t r = b; r < e; ++r) {
            if (f16) {
                const auto* h = reinterpret_cast<const uint16_t*>(tensor.data + r * w.output.row_bytes);
                for (int64_t t = 0; t < n_out_tokens; ++t) {
                    logits[t * c.n_vocab + r] = kt.dot_f16(xn_.data() + t * c.n_embd, h, c.n_embd);
                }
            } else {
                w.output.row(r, row);
                for (int64_t t = 0; t < n_out_tokens; ++t) {
                    logits[t * c.n_vocab + r] = kt.dot_f32(xn_.data() + t * c.n_embd, row, c.n_embd);
                }
            }
        }
    });
}

}  // namespace bitnet
