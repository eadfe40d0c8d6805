// Scalar float ops of the decoder (see ops.h for shapes and contracts).
#include "model/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace bitnet::ops {

void rms_norm(const float* x, const float* weight, int64_t n_tokens, int64_t n, float eps,
              float* out) {
    for (int64_t t = 0; t < n_tokens; ++t) {
        const float* xt = x + t * n;
        float* ot = out + t * n;
        double sum_sq = 0.0;
        for (int64_t i = 0; i < n; ++i) sum_sq += static_cast<double>(xt[i]) * xt[i];
        const float mean_sq = static_cast<float>(sum_sq / static_cast<double>(n));
        // torch: x * rsqrt(var + eps), then weight * that (two float multiplies, in this order).
        const float inv = 1.0f / std::sqrt(mean_sq + eps);
        for (int64_t i = 0; i < n; ++i) ot[i] = weight[i] * (xt[i] * inv);
    }
}

void rope(float* x, const int32_t* pos, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
          int64_t n_rot, float theta, float freq_scale, RopeStyle style) {
    const int64_t half = n_rot / 2;
    // inv_freq[i] = 1 / theta^(2i / n_rot), in float32 as Hugging Face computes it.
    std::vector<float> inv_freq(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i) {
        const float exponent = static_cast<float>(2 * i) / static_cast<float>(n_rot);
        inv_freq[i] = 1.0f / std::pow(theta, exponent);
    }
    for (int64_t t = 0; t < n_tokens; ++t) {
        const float p = static_cast<float>(pos[t]) * freq_scale;
        for (int64_t i = 0; i < half; ++i) {
            const float angle = p * inv_freq[i];
            const float c = std::cos(angle);
            const float s = std::sin(angle);
            for (int64_t h = 0; h < n_heads; ++h) {
                float* head = x + (t * n_heads + h) * head_dim;
                const int64_t a = style == RopeStyle::kNeox ? i : 2 * i;
                const int64_t b = style == RopeStyle::kNeox ? i + half : 2 * i + 1;
                const float x0 = head[a];
                const float x1 = head[b];
                head[a] = x0 * c - x1 * s;
                head[b] = x1 * c + x0 * s;
            }
        }
    }
}

void gated_activation(float* gate, const float* up, int64_t n, Activation act) {
    if (act == Activation::kRelu2) {
        for (int64_t i = 0; i < n; ++i) {
            const float r = std::max(gate[i], 0.0f);
            gate[i] = (r * r) * up[i];
        }
    } else {
        for (int64_t i = 0; i < n; ++i) {
            const float g = gate[i];
            gate[i] = (g / (1.0f + std::exp(-g))) * up[i];
        }
    }
}

void attention(const float* q, const float* k_cache, const float* v_cache, int64_t n_tokens,
               int64_t pos0, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float* out,
               float* scores) {
    const int64_t group = n_heads / n_kv_heads;
    const int64_t q_stride = n_heads * head_dim;
    const int64_t kv_stride = n_kv_heads * head_dim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    for (int64_t t = 0; t < n_tokens; ++t) {
        const int64_t n_keys = pos0 + t + 1;  // causal: keys at positions <= this query's
        for (int64_t h = 0; h < n_heads; ++h) {
            const float* qh = q + t * q_stride + h * head_dim;
            const int64_t kvh = h / group;
            float max_score = -INFINITY;
            for (int64_t j = 0; j < n_keys; ++j) {
                scores[j] = dot(qh, k_cache + j * kv_stride + kvh * head_dim, head_dim) * scale;
                max_score = std::max(max_score, scores[j]);
            }
            float total = 0.0f;
            for (int64_t j = 0; j < n_keys; ++j) {
                scores[j] = std::exp(scores[j] - max_score);
                total += scores[j];
            }
            float* oh = out + t * q_stride + h * head_dim;
            std::fill(oh, oh + head_dim, 0.0f);
            for (int64_t j = 0; j < n_keys; ++j) {
                const float p = scores[j] / total;
                const float* vj = v_cache + j * kv_stride + kvh * head_dim;
                for (int64_t d = 0; d < head_dim; ++d) oh[d] += p * vj[d];
            }
        }
    }
}

float dot(const float* a, const float* b, int64_t n) {
    float acc = 0.0f;
    for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
    return acc;
}

}  // namespace bitnet::ops
