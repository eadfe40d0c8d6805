// The decoder forward pass, top-down like the papers (BitNet b1.58 on a LLaMA-style stack), over
// every token of a step at once, run by the decoder's thread pool: every parallel region splits
// rows of a matrix (or attention work, or tokens) over the threads, and the float epilogue of
// each BitLinear (scales, RoPE, the KV-cache store, the gated activation, the residual add) runs
// in the same region on the rows the thread just computed. No float sum is ever split between
// threads or tokens, which is what makes every token's result independent of the step around it.
#include "model/decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "format/types.h"

namespace bitnet {
namespace {

int checked_threads(int n) {
    BITNET_CHECK(n >= 0 && n <= 1024, ShapeError, "n_threads must be in [0, 1024], got ", n);
    return n > 0 ? n : ThreadPool::default_threads();
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

BatchDecoder::BatchDecoder(std::shared_ptr<const Model> model, std::shared_ptr<KvCache> cache,
                           int64_t n_batch, int n_threads)
    : model_(std::move(model)),
      cache_(std::move(cache)),
      n_batch_(n_batch),
      pool_(checked_threads(n_threads)),
      attention_(model_->config(), pool_.n_threads()) {
    const ModelConfig& c = model_->config();
    BITNET_CHECK(cache_ != nullptr, ShapeError, "the decoder needs a KV cache");
    BITNET_CHECK(cache_->fits(c), ShapeError, "the KV cache was made for ", cache_->n_layers(),
                 " layers, ", cache_->n_kv_heads(), " kv heads of head_dim ", cache_->head_dim(),
                 "; this model has ", c.n_layers, ", ", c.n_kv_heads, " and ", c.head_dim);
    BITNET_CHECK(n_batch >= 1 && n_batch <= (int64_t{1} << 20), ShapeError,
                 "n_batch must be in [1, 2^20], got ", n_batch);

    const int64_t q_dim = c.n_heads * c.head_dim;
    const int64_t kv_dim = c.n_kv_heads * c.head_dim;
    const int64_t widest = std::max({c.n_embd, q_dim, c.n_ff});
    const auto n = static_cast<size_t>(n_batch_);
    const auto n_threads_z = static_cast<size_t>(pool_.n_threads());
    x_ = AlignedBuffer<float>(n * c.n_embd);
    xn_ = AlignedBuffer<float>(n * widest);
    q_ = AlignedBuffer<float>(n * q_dim);
    if (cache_->type() == KvType::kQ8_0) {
        q8_ = AlignedBuffer<int8_t>(n * q_dim);
        q8_d_ = AlignedBuffer<float>(n * q_dim / kernels::kQ8Block);
    }
    k_ = AlignedBuffer<float>(n * kv_dim);
    v_ = AlignedBuffer<float>(n * kv_dim);
    attn_ = AlignedBuffer<float>(n * q_dim);
    ffn_ = AlignedBuffer<float>(n * c.n_ff);
    rows_ = AlignedBuffer<float>(n_threads_z * static_cast<size_t>(c.n_embd));
    kv_scales_ = AlignedBuffer<float>(n_threads_z * static_cast<size_t>(c.head_dim / kernels::kQ8Block + 1));
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
}

// ---- the step: validation, then the forward pass ------------------------------------------------

int64_t BatchDecoder::validate(const std::vector<SequenceStep>& seqs) {
    std::lock_guard<std::mutex> lock(step_mutex_);
    return validate_locked(seqs);
}

// Checks every sequence before anything is written. Beyond each sequence's own inputs, the
// blocks of a step must not conflict: a block appears once in a table (a position has one
// home), no two sequences write the same block, and no sequence reads rows another one writes
// in the same step (that would race between threads and depend on the step's composition).
int64_t BatchDecoder::validate_locked(const std::vector<SequenceStep>& seqs) {
    const ModelConfig& c = model_->config();
    const int64_t bt = cache_->block_tokens();
    const int64_t n_blocks = cache_->n_blocks();
    BITNET_CHECK(!seqs.empty(), ShapeError, "a step needs at least one sequence");
    int64_t total = 0;
    int64_t rows = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
        const SequenceStep& s = seqs[i];
        BITNET_CHECK(s.n_tokens >= 1, ShapeError, "sequence ", i,
                     ": no tokens (every sequence of a step needs at least one)");
        BITNET_CHECK(s.tokens != nullptr, ShapeError, "sequence ", i, ": no token array");
        for (int64_t j = 0; j < s.n_tokens; ++j) {
            BITNET_CHECK(s.tokens[j] >= 0 && s.tokens[j] < c.n_vocab, ShapeError, "sequence ", i,
                         ": token id ", s.tokens[j], " at index ", j, " is out of range [0, ",
                         c.n_vocab, ")");
        }
        BITNET_CHECK(s.n_past >= 0 && s.n_past <= kMaxPositions - s.n_tokens, ShapeError,
                     "sequence ", i, ": n_past ", s.n_past, " plus ", s.n_tokens,
                     " tokens is out of range [0, ", kMaxPositions, "]");
        const int logits = static_cast<int>(s.logits);
        BITNET_CHECK(logits >= 0 && logits <= 2, ShapeError, "sequence ", i, ": logits must be 0 "
                     "(none), 1 (last token) or 2 (every token), not ", logits);
        BITNET_CHECK(s.topk >= 0, ShapeError, "sequence ", i, ": topk must be >= 0, not ", s.topk);
        BITNET_CHECK(s.topk == 0 || !model_->output_topk().empty(), UnsupportedError, "sequence ", i,
                     ": topk needs a model loaded with the exact-top-k pre-pass (topk_prepass)");
        for (int64_t j = 0; j < s.n_topk_forced; ++j) {
            BITNET_CHECK(s.topk_forced[j] >= 0 && s.topk_forced[j] < c.n_vocab, ShapeError, "sequence ", i,
                         ": forced token id ", s.topk_forced[j], " is out of range [0, ", c.n_vocab, ")");
        }
        const int64_t end = s.n_past + s.n_tokens;
        const int64_t used = (end + bt - 1) / bt;
        BITNET_CHECK(s.n_table >= used && s.block_table != nullptr, ShapeError, "sequence ", i,
                     ": its block table has ", s.n_table, " blocks (", s.n_table * bt,
                     " positions), fewer than n_past + tokens = ", end, " needs (", used,
                     " blocks of ", bt, ")");
        for (int64_t e = 0; e < used; ++e) {
            const int64_t id = s.block_table[e];
            BITNET_CHECK(id >= 0 && id < n_blocks, ShapeError, "sequence ", i, ": block_table[", e,
                         "] = ", id, " is not a block of the cache (0 <= id < ", n_blocks, ")");
        }
        total += s.n_tokens;
        rows += s.logits == LogitsMode::kAll ? s.n_tokens : s.logits == LogitsMode::kLast ? 1 : 0;
    }
    BITNET_CHECK(total <= n_batch_, ShapeError, "the step has ", total,
                 " tokens, more than n_batch = ", n_batch_);

    // Block conflicts, with marks per block id that are cleared again before returning.
    if (static_cast<int64_t>(block_writer_.size()) < n_blocks) {
        block_writer_.assign(static_cast<size_t>(n_blocks), -1);
        block_first_.assign(static_cast<size_t>(n_blocks), -1);
        block_seen_.assign(static_cast<size_t>(n_blocks), -1);
    }
    struct Clear {
        BatchDecoder* d;
        const std::vector<SequenceStep>& seqs;
        int64_t bt;
        ~Clear() {
            for (const SequenceStep& s : seqs) {
                const int64_t used = std::min(s.n_table, (s.n_past + s.n_tokens + bt - 1) / bt);
                for (int64_t e = 0; e < used; ++e) {
                    const auto id = static_cast<size_t>(s.block_table[e]);
                    d->block_writer_[id] = d->block_first_[id] = d->block_seen_[id] = -1;
                }
            }
        }
    } clear{this, seqs, bt};
    for (size_t i = 0; i < seqs.size(); ++i) {
        const SequenceStep& s = seqs[i];
        const int64_t used = (s.n_past + s.n_tokens + bt - 1) / bt;
        for (int64_t e = 0; e < used; ++e) {
            const auto id = static_cast<size_t>(s.block_table[e]);
            BITNET_CHECK(block_seen_[id] != static_cast<int32_t>(i), ShapeError, "sequence ", i,
                         ": block ", id, " appears more than once in its block table");
            block_seen_[id] = static_cast<int32_t>(i);
            if (e < s.n_past / bt) continue;  // only read
            BITNET_CHECK(block_writer_[id] < 0, ShapeError, "sequences ", block_writer_[id], " and ",
                         i, " both write block ", id, " in this step");
            block_writer_[id] = static_cast<int32_t>(i);
            block_first_[id] = static_cast<int32_t>(e == s.n_past / bt ? s.n_past % bt : 0);
        }
    }
    for (size_t i = 0; i < seqs.size(); ++i) {
        const SequenceStep& s = seqs[i];
        const int64_t end = s.n_past + s.n_tokens;
        const int64_t used = (end + bt - 1) / bt;
        for (int64_t e = 0; e < used; ++e) {
            const auto id = static_cast<size_t>(s.block_table[e]);
            const int32_t writer = block_writer_[id];
            if (writer < 0 || writer == static_cast<int32_t>(i)) continue;
            const int64_t read_end = std::min(bt, end - e * bt);
            BITNET_CHECK(block_first_[id] >= read_end, ShapeError, "sequence ", i, " reads rows of block ",
                         id, " that sequence ", writer, " writes in this step");
        }
    }
    return rows;
}

void BatchDecoder::step(const std::vector<SequenceStep>& seqs, float* logits) {
    std::lock_guard<std::mutex> lock(step_mutex_);
    std::lock_guard<std::mutex> cache_lock(cache_->mutex());
    validate_locked(seqs);
    tokens_.clear();
    positions_.clear();
    queries_.clear();
    logit_rows_.clear();
    logit_topk_.clear();
    for (const SequenceStep& s : seqs) {
        const TopKRequest topk{s.topk, s.topk_forced, s.n_topk_forced, s.topk_allowed};
        const auto first = static_cast<int64_t>(tokens_.size());
        for (int64_t i = 0; i < s.n_tokens; ++i) {
            tokens_.push_back(s.tokens[i]);
            positions_.push_back(static_cast<int32_t>(s.n_past + i));
            queries_.push_back({s.block_table, s.n_past + i});
        }
        const auto end = static_cast<int64_t>(tokens_.size());
        if (s.logits == LogitsMode::kLast) logit_rows_.push_back(end - 1);
        if (s.logits == LogitsMode::kAll) {
            for (int64_t t = first; t < end; ++t) logit_rows_.push_back(t);
        }
        logit_topk_.resize(logit_rows_.size(), topk);
    }
    attention_.plan(queries_);
    forward(logits);
}

void BatchDecoder::forward(float* logits) {
    const ModelConfig& c = model_->config();
    const auto n = static_cast<int64_t>(tokens_.size());
    embed_and_rope();
    for (int64_t il = 0; il < c.n_layers; ++il) {
        attention_layer(il, n);  // x += o_proj(sub_norm(attention(rope(q), rope(k), v)))
        ffn_layer(il, n);        // x += down(sub_norm(act(gate(h)) * up(h))), h = ffn_norm(x)
    }
    if (!logit_rows_.empty()) output_logits(logits);
}

// x (n, n_embd) = the embedding rows of the tokens; cos/sin of every token's position and
// frequency, shared by all layers. Frequencies as Hugging Face computes them in float32:
// inv_freq[i] = 1 / theta^(2i / n_rot).
void BatchDecoder::embed_and_rope() {
    const ModelConfig& c = model_->config();
    const ModelWeights& w = model_->weights();
    const auto n = static_cast<int64_t>(tokens_.size());
    float* x = x_.data();
    for (int64_t t = 0; t < n; ++t) w.token_embd.row(tokens_[t], x + t * c.n_embd);
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

void BatchDecoder::attention_layer(int64_t il, int64_t n) {
    const ModelConfig& c = model_->config();
    const kernels::KernelTable& kt = model_->kernels();
    const LayerWeights& l = model_->weights().layers[static_cast<size_t>(il)];
    const int64_t hd = c.head_dim;
    const int64_t q_dim = c.n_heads * hd;
    const int64_t kv_dim = c.n_kv_heads * hd;
    const int64_t n_rot = c.n_rot;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const bool q8 = cache_->type() == KvType::kQ8_0;
    KvCache& cache = *cache_;
    const int64_t bt = cache.block_tokens();
    float* q = q_.data();
    float* k = k_.data();
    float* v = v_.data();

    norm_quantize(x_.data(), l.attn_norm.data(), n, c.n_embd);

    // q, k, v rows of this thread (whole heads); RoPE on them; the queries scaled by
    // 1/sqrt(head_dim) (and quantized for a q8_0 cache); K and V into the cache.
    pool_.run([&](int ith, int nth) {
        int64_t b = 0, e = 0;
        split_range(q_dim, granule(l.wq, hd), ith, nth, &b, &e);
        linear_rows(l.wq, n, b, e, acc_.data());
        BITNET_EPILOGUE(l.wq, acc_.data(), n, b, e, q[t * q_dim + r] = y)
        for (int64_t t = 0; t < n; ++t) {
            float* qt = q + t * q_dim;
            for (int64_t h = b / hd; h < e / hd; ++h) rope_head(qt + h * hd, rope_cs_.data() + t * n_rot, n_rot, c.rope_style);
            for (int64_t r = b; r < e; ++r) qt[r] *= scale;
            if (q8 && e > b) {
                kt.quantize_q8(qt + b, e - b, q8_.data() + t * q_dim + b,
                               q8_d_.data() + (t * q_dim + b) / kernels::kQ8Block);
            }
        }
        float* kv_scales = kv_scales_.data() + static_cast<int64_t>(ith) * (hd / kernels::kQ8Block + 1);
        split_range(kv_dim, granule(l.wk, hd), ith, nth, &b, &e);
        linear_rows(l.wk, n, b, e, acc2_.data());
        BITNET_EPILOGUE(l.wk, acc2_.data(), n, b, e, k[t * kv_dim + r] = y)
        for (int64_t t = 0; t < n; ++t) {
            const int64_t pos = positions_[t];
            const int64_t block = queries_[t].block_table[pos / bt];
            for (int64_t h = b / hd; h < e / hd; ++h) {
                float* kh = k + t * kv_dim + h * hd;
                rope_head(kh, rope_cs_.data() + t * n_rot, n_rot, c.rope_style);
                cache.store_row(kt, kh, cache.tile(block, il, h, false), pos % bt, kv_scales);
            }
        }
        split_range(kv_dim, granule(l.wv, hd), ith, nth, &b, &e);
        linear_rows(l.wv, n, b, e, acc3_.data());
        BITNET_EPILOGUE(l.wv, acc3_.data(), n, b, e, v[t * kv_dim + r] = y)
        for (int64_t t = 0; t < n; ++t) {
            const int64_t pos = positions_[t];
            const int64_t block = queries_[t].block_table[pos / bt];
            for (int64_t h = b / hd; h < e / hd; ++h) {
                cache.store_row(kt, v + t * kv_dim + h * hd, cache.tile(block, il, h, true), pos % bt, kv_scales);
            }
        }
    });

    // Causal grouped-query attention of every token over its own sequence's cache.
    attention_.run(pool_, kt, cache, il, q, q8_.data(), q8_d_.data(), attn_.data());

    norm_quantize(attn_.data(), l.attn_sub_norm.empty() ? nullptr : l.attn_sub_norm.data(), n, q_dim);
    float* x = x_.data();
    pool_.run([&](int ith, int nth) {
        int64_t b = 0, e = 0;
        split_range(c.n_embd, granule(l.wo, 1), ith, nth, &b, &e);
        linear_rows(l.wo, n, b, e, acc_.data());
        BITNET_EPILOGUE(l.wo, acc_.data(), n, b, e, x[t * c.n_embd + r] += y)
    });
}

void BatchDecoder::ffn_layer(int64_t il, int64_t n) {
    const ModelConfig& c = model_->config();
    const LayerWeights& l = model_->weights().layers[static_cast<size_t>(il)];
    float* x = x_.data();
    float* ffn = ffn_.data();
    norm_quantize(x, l.ffn_norm.data(), n, c.n_embd);
    pool_.run([&](int ith, int nth) {
        int64_t b = 0, e = 0;
        split_range(c.n_ff, std::lcm(granule(l.w_gate, 1), granule(l.w_up, 1)), ith, nth, &b, &e);
        linear_rows(l.w_gate, n, b, e, acc_.data());
        linear_rows(l.w_up, n, b, e, acc2_.data());
        gated_epilogue(l, n, b, e, ffn);
    });
    norm_quantize(ffn, l.ffn_sub_norm.empty() ? nullptr : l.ffn_sub_norm.data(), n, c.n_ff);
    pool_.run([&](int ith, int nth) {
        int64_t b = 0, e = 0;
        split_range(c.n_embd, granule(l.w_down, 1), ith, nth, &b, &e);
        linear_rows(l.w_down, n, b, e, acc_.data());
        BITNET_EPILOGUE(l.w_down, acc_.data(), n, b, e, x[t * c.n_embd + r] += y)
    });
}

#undef BITNET_EPILOGUE

// ffn (n_tokens, n_ff) rows [b, e) = act(gate) * up from the integer sums in acc_ (gate) and acc2_
// (up): the BitLinear epilogue of both, then the activation, as separate branch-free loops over
// plain pointers so that the compiler vectorizes them (one loop with the activation chosen per
// element ran scalar, with a mispredicted branch for every sign of the gate: 6% of an 8-sequence
// decode step on Zen 4).
void BatchDecoder::gated_epilogue(const LayerWeights& l, int64_t n_tokens, int64_t b, int64_t e,
                                  float* ffn) const {
    const int64_t n_ff = model_->config().n_ff;
    const bool relu2 = model_->config().activation == Activation::kRelu2;
    const float* __restrict gs = l.w_gate.row_scale.data();
    const float* __restrict us = l.w_up.row_scale.data();
    for (int64_t t = 0; t < n_tokens; ++t) {
        const float inv_act = 1.0f / acts_.scale[t];
        const int32_t* __restrict ga = acc_.data() + t * l.w_gate.n_out;
        const int32_t* __restrict ua = acc2_.data() + t * l.w_up.n_out;
        float* __restrict f = ffn + t * n_ff;
        if (relu2) {
            for (int64_t r = b; r < e; ++r) {
                const float g = static_cast<float>(ga[r]) * gs[r] * inv_act;
                const float u = static_cast<float>(ua[r]) * us[r] * inv_act;
                // std::max(g, 0.0f) on the bits (a float compare blocks vectorization under
                // trapping math): a negative sign bit clears the value unless g is a NaN, which
                // passes through as before; -0 becomes +0, whose square is the same.
                int32_t bits;
                std::memcpy(&bits, &g, sizeof bits);
                const int32_t nan = (bits & 0x7fffffff) > 0x7f800000 ? -1 : 0;
                bits &= ~(bits >> 31) | nan;
                float p;
                std::memcpy(&p, &bits, sizeof p);
                f[r] = (p * p) * u;
            }
        } else {
            for (int64_t r = b; r < e; ++r) f[r] = static_cast<float>(ga[r]) * gs[r] * inv_act;
            for (int64_t r = b; r < e; ++r) {
                const float g = f[r];
                const float u = static_cast<float>(ua[r]) * us[r] * inv_act;
                f[r] = (g / (1.0f + std::exp(-g))) * u;
            }
        }
    }
}

// ---- building blocks --------------------------------------------------------------------------

int64_t BatchDecoder::granule(const PackedLinear& w, int64_t multiple_of) const {
    const int64_t base = w.binary                                   ? 8
                         : w.kernel == kernels::TernaryKernel::kLut ? kernels::kL2TileRows
                         : w.kernel == kernels::TernaryKernel::kT3  ? kernels::kT3TileRows
                                                                    : 8;
    return std::lcm(base, std::max<int64_t>(multiple_of, 1));
}

// Quantizes x (n_tokens, n), after an optional RMSNorm with weight norm, into acts_ (and LUT
// tables when the model has LUT matrices). Parallel over tokens.
void BatchDecoder::norm_quantize(const float* x, const float* norm, int64_t n_tokens, int64_t n) {
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
}

// The integer sums of rows [row_begin, row_end) of w for acts_ into acc (n_tokens, w.n_out).
void BatchDecoder::linear_rows(const PackedLinear& w, int64_t n_tokens, int64_t row_begin,
                               int64_t row_end, int32_t* acc) const {
    if (row_begin >= row_end) return;
    const kernels::KernelTable& kt = model_->kernels();
    if (w.binary) {
        kt.gemm_b1(w.b1(), acts_, row_begin, row_end, acc + row_begin, w.n_out);
    } else if (w.kernel == kernels::TernaryKernel::kLut) {
        const kernels::LutTables tables{lut_.data(), n_tokens, kernels::lut_bytes(act_stride_)};
        kt.gemm_l2(w.l2(), tables, row_begin, row_end, acc + row_begin, w.n_out);
    } else if (w.kernel == kernels::TernaryKernel::kT3) {
        kt.gemm_t3(w.t3(), acts_, row_begin, row_end, acc + row_begin, w.n_out);
    } else {
        kt.gemm_t2(w.t2(), acts_, row_begin, row_end, acc + row_begin, w.n_out);
    }
}

// logits (rows, n_vocab) = output_norm(x[row]) . output^T for the requested rows, in order.
void BatchDecoder::output_logits(float* logits) {
    const ModelConfig& c = model_->config();
    const auto n_out = static_cast<int64_t>(logit_rows_.size());
    bool any_topk = false;
    for (const TopKRequest& r : logit_topk_) any_topk = any_topk || r.k > 0;
    if (!any_topk) {
        full_logits(0, n_out, logits);
        return;
    }
    // Mixed: rows are grouped by mode (full rows first, then top-k rows) into scratch, the
    // results copied back in order. Every row's values depend only on its own activations.
    std::vector<int64_t> order;
    for (int64_t i = 0; i < n_out; ++i) if (logit_topk_[static_cast<size_t>(i)].k == 0) order.push_back(i);
    const auto n_full = static_cast<int64_t>(order.size());
    for (int64_t i = 0; i < n_out; ++i) if (logit_topk_[static_cast<size_t>(i)].k > 0) order.push_back(i);
    std::vector<int64_t> rows(logit_rows_);
    std::vector<TopKRequest> reqs;
    for (size_t j = 0; j < order.size(); ++j) {
        logit_rows_[j] = rows[static_cast<size_t>(order[j])];
        if (static_cast<int64_t>(j) >= n_full) reqs.push_back(logit_topk_[static_cast<size_t>(order[j])]);
    }
    std::vector<float> scratch(static_cast<size_t>(n_out * c.n_vocab));
    full_logits(0, n_out, scratch.data(), n_full);
    const int64_t n_blocks = c.n_embd / kernels::kQ8Block;
    const kernels::ActsQ8 xq{out_q_.data() + n_full * c.n_embd, out_d_.data() + n_full * n_blocks,
                             n_out - n_full, c.n_embd};
    std::vector<TopKStats> stats(reqs.size());
    topk_logits(model_->weights().output_q8, model_->output_topk(), model_->kernels(), pool_, xq,
                reqs.data(), scratch.data() + n_full * c.n_vocab, stats.data());
    int64_t exact = 0;
    for (const TopKStats& st : stats) exact += st.n_exact;
    topk_rows_ += static_cast<int64_t>(reqs.size());
    topk_exact_rows_ += exact;
    for (size_t j = 0; j < order.size(); ++j) {
        std::copy(scratch.begin() + static_cast<int64_t>(j) * c.n_vocab,
                  scratch.begin() + static_cast<int64_t>(j + 1) * c.n_vocab,
                  logits + order[j] * c.n_vocab);
    }
    logit_rows_ = rows;
}

// Normalizes (and for the Q8 layer quantizes) logit rows [first, first + n) of logit_rows_ into
// out_q_/xn_ row i, and computes the full output layer for the first n_compute of them into
// logits (n_compute, n_vocab).
void BatchDecoder::full_logits(int64_t first, int64_t n, float* logits, int64_t n_compute) {
    const ModelConfig& c = model_->config();
    const ModelWeights& w = model_->weights();
    const kernels::KernelTable& kt = model_->kernels();
    const bool q8 = model_->output_type() == OutputType::kQ8;
    const int64_t n_blocks = c.n_embd / kernels::kQ8Block;
    for (int64_t i = 0; i < n; ++i) {
        float* xn = xn_.data() + i * c.n_embd;
        kt.rms_norm(x_.data() + logit_rows_[static_cast<size_t>(first + i)] * c.n_embd,
                    w.output_norm.data(), c.n_embd, c.rms_eps, xn);
        if (q8) kt.quantize_q8(xn, c.n_embd, out_q_.data() + i * c.n_embd, out_d_.data() + i * n_blocks);
    }
    const int64_t n_out = n_compute < 0 ? n : n_compute;
    if (n_out == 0) return;
    const GgufTensor& tensor = *w.output.tensor;
    const bool f16 = tensor.type == static_cast<uint32_t>(TensorType::F16);
    pool_.run([&](int ith, int nth) {
        int64_t b = 0, e = 0;
        split_range(c.n_vocab, 64, ith, nth, &b, &e);
        if (q8) {
            // Blocks of 64 rows stay in cache while every token is multiplied with them.
            const kernels::ActsQ8 xq{out_q_.data(), out_d_.data(), n_out, c.n_embd};
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
                for (int64_t t = 0; t < n_out; ++t) {
                    logits[t * c.n_vocab + r] = kt.dot_f16(xn_.data() + t * c.n_embd, h, c.n_embd);
                }
            } else {
                w.output.row(r, row);
                for (int64_t t = 0; t < n_out; ++t) {
                    logits[t * c.n_vocab + r] = kt.dot_f32(xn_.data() + t * c.n_embd, row, c.n_embd);
                }
            }
        }
    });
}

}  // namespace bitnet
