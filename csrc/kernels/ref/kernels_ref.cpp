// Scalar reference kernels: plain loops that define the semantics every SIMD twin must match
// (kernels.h states each contract and layout).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/half.h"
#include "kernels/kernels.h"

namespace bitnet::kernels::ref {
namespace {

// The 2-bit code (w + 1) of column j of a T2 row.
int t2_code(const uint8_t* row, int64_t j) {
    const int64_t within = j % kT2Block;
    const uint8_t byte = row[(j / kT2Block) * kT2BlockBytes + within % 32];
    return (byte >> (2 * (within / 32))) & 3;
}

// The 5-bit index (0 .. 26) of group g (columns 3g .. 3g+2) of row r in a T3 matrix.
int t3_index(const T3Matrix& w, int64_t r, int64_t g) {
    const int64_t n_steps = w.k3 / kT3StepCols;
    const uint8_t* step = w.data + ((r / kT3TileRows) * n_steps + g / 4) * kT3StepBytes;
    const int64_t i = r % 16;
    const bool upper = (r % kT3TileRows) >= 16;  // rows 16..31 of the tile: high nibbles
    const int64_t lane = 4 * i + g % 4;
    const int nibble = upper ? step[lane] >> 4 : step[lane] & 15;
    const int bit = (step[64 + (upper ? 8 : 0) + lane / 8] >> (lane % 8)) & 1;
    return nibble | bit << 4;
}

// Clamps, then rounds half to even: the cast is defined for every input, NaN gives 0.
int8_t round_to_i8(float v, float lo, float hi) {
    if (std::isnan(v)) return 0;
    v = std::min(std::max(v, lo), hi);
    return static_cast<int8_t>(std::nearbyint(v));
}

}  // namespace

void quantize_i8(const float* x, int64_t n, int64_t n_pad, int8_t* q, float* scale, int32_t* sum) {
    float amax = 0.0f;
    for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));  // NaN is skipped
    // Same float32 operations as torch: 127 / clamp(max|x|, 1e-5), then round(x * s).
    const float s = 127.0f / std::max(amax, 1e-5f);
    int32_t total = 0;
    for (int64_t i = 0; i < n; ++i) {
        const int8_t qi = round_to_i8(x[i] * s, -128.0f, 127.0f);
        q[i] = qi;
        total += qi;
    }
    for (int64_t i = n; i < n_pad; ++i) q[i] = 0;
    *scale = s;
    *sum = total;
}

void gemm_t2(const T2Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end, int32_t* out,
             int64_t out_stride) {
    const int64_t row_bytes = w.k_pad / 4;
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.stride;
        for (int64_t r = row_begin; r < row_end; ++r) {
            const uint8_t* row = w.codes + r * row_bytes;
            int32_t acc = 0;
            for (int64_t j = 0; j < w.k_pad; ++j) acc += (t2_code(row, j) - 1) * xq[j];
            out[t * out_stride + (r - row_begin)] = acc;
        }
    }
}

void gemm_b1(const B1Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end, int32_t* out,
             int64_t out_stride) {
    const int64_t row_bytes = w.k_pad / 8;
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.stride;
        for (int64_t r = row_begin; r < row_end; ++r) {
            const uint8_t* row = w.bits + r * row_bytes;
            int32_t acc = 0;
            // Only the first k weights are real; padded activations are zero anyway.
            for (int64_t j = 0; j < w.k; ++j) {
                const int bit = (row[j / 8] >> (j % 8)) & 1;
                acc += bit ? xq[j] : -xq[j];
            }
            out[t * out_stride + (r - row_begin)] = acc;
        }
    }
}

void build_lut(const ActsI8& x, int64_t k_pad, uint8_t* tables) {
    const int64_t stride = lut_bytes(k_pad);
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.stride;
        uint8_t* tab = tables + t * stride;
        for (int64_t p = 0; p < k_pad / 2; ++p) {
            uint8_t* entry = tab + p * kLutPairBytes;
            for (int i = 0; i < 16; ++i) {
                const int v = i < 9 ? (i / 3 - 1) * xq[2 * p] + (i % 3 - 1) * xq[2 * p + 1] : 0;
                const auto bits = static_cast<uint16_t>(static_cast<int16_t>(v));
                entry[i] = static_cast<uint8_t>(bits & 0xff);
                entry[16 + i] = static_cast<uint8_t>(bits >> 8);
            }
        }
    }
}

void gemm_l2(const L2Matrix& w, const LutTables& x, int64_t row_begin, int64_t row_end,
             int32_t* out, int64_t out_stride) {
    const int64_t n_chunks = w.k_pad / 4;
    const int64_t tile_bytes = n_chunks * kL2ChunkBytes;
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const uint8_t* tab = x.data + t * x.stride;
        for (int64_t r = row_begin; r < row_end; ++r) {
            const uint8_t* tile = w.data + (r / kL2TileRows) * tile_bytes;
            const int64_t lane = r % kL2TileRows;
            int32_t acc = 0;
            for (int64_t c = 0; c < n_chunks; ++c) {
                const uint8_t byte = tile[c * kL2ChunkBytes + lane];
                for (int h = 0; h < 2; ++h) {
                    const int idx = (byte >> (4 * h)) & 0x0f;
                    const uint8_t* entry = tab + (2 * c + h) * kLutPairBytes;
                    const auto bits = static_cast<uint16_t>(entry[idx] | (entry[16 + idx] << 8));
                    acc += static_cast<int16_t>(bits);
                }
            }
            out[t * out_stride + (r - row_begin)] = acc;
        }
    }
}

void gemm_t3(const T3Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end, int32_t* out,
             int64_t out_stride) {
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.stride;
        for (int64_t r = row_begin; r < row_end; ++r) {
            int32_t acc = 0;
            for (int64_t g = 0; g < w.k3 / 3; ++g) {
                const int idx = t3_index(w, r, g);
                const int w3[3] = {idx / 9 - 1, idx / 3 % 3 - 1, idx % 3 - 1};
                for (int c = 0; c < 3; ++c) {
                    const int64_t j = 3 * g + c;
                    if (j < w.k) acc += w3[c] * xq[j];  // padding columns: no activation there
                }
            }
            out[t * out_stride + (r - row_begin)] = acc;
        }
    }
}

void quantize_q8(const float* x, int64_t n, int8_t* q, float* d) {
    for (int64_t b = 0; b < n / kQ8Block; ++b) {
        const float* xb = x + b * kQ8Block;
        float amax = 0.0f;
        for (int64_t i = 0; i < kQ8Block; ++i) amax = std::max(amax, std::fabs(xb[i]));
        const float db = amax / 127.0f;
        const float inv = db != 0.0f ? 1.0f / db : 0.0f;
        for (int64_t i = 0; i < kQ8Block; ++i) {
            q[b * kQ8Block + i] = round_to_i8(xb[i] * inv, -127.0f, 127.0f);
        }
        d[b] = db;
    }
}

void gemm_q8(const Q8Matrix& w, const ActsQ8& x, int64_t row_begin, int64_t row_end, float* out,
             int64_t out_stride) {
    const int64_t n_blocks = w.n_cols / kQ8Block;
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.n_cols;
        const float* xd = x.d + t * n_blocks;
        for (int64_t r = row_begin; r < row_end; ++r) {
            const int8_t* wq = w.q + r * w.n_cols;
            const float* wd = w.d + r * n_blocks;
            float acc = 0.0f;
            for (int64_t b = 0; b < n_blocks; ++b) {
                int32_t idot = 0;
                for (int64_t i = 0; i < kQ8Block; ++i) {
                    idot += wq[b * kQ8Block + i] * xq[b * kQ8Block + i];
                }
                acc += (wd[b] * xd[b]) * static_cast<float>(idot);
            }
            out[t * out_stride + (r - row_begin)] = acc;
        }
    }
}

void gemm_q4h(const Q4HMatrix& w, const ActsQ8& x, int64_t row_begin, int64_t row_end, float* out,
              int64_t out_stride) {
    const int64_t n_blocks = w.n_cols / kQ8Block;
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.n_cols;
        const float* xd = x.d + t * n_blocks;
        for (int64_t r = row_begin; r < row_end; ++r) {
            const uint8_t* hi = w.hi + r * (w.n_cols / 2);
            float acc = 0.0f;
            for (int64_t b = 0; b < n_blocks; ++b) {
                int32_t idot = 0;
                for (int64_t j = 0; j < kQ8Block; ++j) {
                    const uint8_t byte = hi[16 * b + j % 16];
                    const int h = j < 16 ? byte & 15 : byte >> 4;
                    idot += (16 * h - 120) * xq[b * kQ8Block + j];
                }
                acc += (fp16_to_float(w.d[r * n_blocks + b]) * xd[b]) * static_cast<float>(idot);
            }
            out[t * out_stride + (r - row_begin)] = acc;
        }
    }
}

float dot_f32(const float* a, const float* b, int64_t n) {
    float acc = 0.0f;
    for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
    return acc;
}

float dot_f16(const float* a, const uint16_t* b, int64_t n) {
    float acc = 0.0f;
    for (int64_t i = 0; i < n; ++i) acc += a[i] * fp16_to_float(b[i]);
    return acc;
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void axpy_f16(float a, const uint16_t* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * fp16_to_float(x[i]);
}

void rms_norm(const float* x, const float* weight, int64_t n, float eps, float* out) {
    double sum_sq = 0.0;
    for (int64_t i = 0; i < n; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
    const float mean_sq = static_cast<float>(sum_sq / static_cast<double>(n));
    // torch: x * rsqrt(var + eps), then weight * that (two float multiplies, in this order).
    const float inv = 1.0f / std::sqrt(mean_sq + eps);
    for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * inv);
}

void softmax(float* x, int64_t n) {
    float max_v = -INFINITY;
    for (int64_t i = 0; i < n; ++i) max_v = std::max(max_v, x[i]);
    float total = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
        x[i] = std::exp(x[i] - max_v);
        total += x[i];
    }
    const float inv = 1.0f / total;
    for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void to_f16(const float* x, uint16_t* out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = float_to_fp16(x[i]);
}

void from_f16(const uint16_t* x, float* out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = fp16_to_float(x[i]);
}

// ---- attention over the KV cache (engine-core) --------------------------------------------------

// The prefetch hints (pf, pf_bytes) of the attention kernels change nothing: ignored here.

void attn_scores_f32(const float* q, int64_t n_q, int64_t hd, const float* k, int64_t n, float* s,
                     int64_t s_stride, const void*, int64_t) {
    for (int64_t h = 0; h < n_q; ++h) {
        for (int64_t j = 0; j < n; ++j) s[h * s_stride + j] = dot_f32(q + h * hd, k + j * hd, hd);
    }
}

void attn_scores_f16(const float* q, int64_t n_q, int64_t hd, const uint16_t* k, int64_t n,
                     float* s, int64_t s_stride, const void*, int64_t) {
    for (int64_t h = 0; h < n_q; ++h) {
        for (int64_t j = 0; j < n; ++j) s[h * s_stride + j] = dot_f16(q + h * hd, k + j * hd, hd);
    }
}

void attn_scores_q8(const int8_t* q, const float* q_d, int64_t n_q, int64_t hd, const int8_t* k,
                    const uint16_t* k_d, int64_t n, float* s, int64_t s_stride, const void*,
                    int64_t) {
    const int64_t n_blocks = hd / kQ8Block;
    for (int64_t h = 0; h < n_q; ++h) {
        for (int64_t j = 0; j < n; ++j) {
            float acc = 0.0f;
            for (int64_t b = 0; b < n_blocks; ++b) {
                int32_t idot = 0;
                for (int64_t i = b * kQ8Block; i < (b + 1) * kQ8Block; ++i) {
                    idot += q[h * hd + i] * k[j * hd + i];
                }
                acc += (q_d[h * n_blocks + b] * fp16_to_float(k_d[j * n_blocks + b])) *
                       static_cast<float>(idot);
            }
            s[h * s_stride + j] = acc;
        }
    }
}

void attn_softmax(float* s, int64_t n_q, int64_t n, int64_t s_stride, float* m, float* l) {
    for (int64_t h = 0; h < n_q; ++h) {
        float* row = s + h * s_stride;
        float max_v = -INFINITY;
        for (int64_t j = 0; j < n; ++j) max_v = std::max(max_v, row[j]);  // NaN is skipped
        float total = 0.0f;
        for (int64_t j = 0; j < n; ++j) {
            row[j] = std::exp(row[j] - max_v);
            total += row[j];
        }
        m[h] = max_v;
        l[h] = total;
    }
}

void attn_accum_f32(const float* p, int64_t p_stride, int64_t n_q, int64_t hd, const float* v,
                    int64_t n, float* o, int64_t o_stride, const void*, int64_t) {
    for (int64_t h = 0; h < n_q; ++h) {
        for (int64_t j = 0; j < n; ++j) axpy_f32(p[h * p_stride + j], v + j * hd, o + h * o_stride, hd);
    }
}

void attn_accum_f16(const float* p, int64_t p_stride, int64_t n_q, int64_t hd, const uint16_t* v,
                    int64_t n, float* o, int64_t o_stride, const void*, int64_t) {
    for (int64_t h = 0; h < n_q; ++h) {
        for (int64_t j = 0; j < n; ++j) axpy_f16(p[h * p_stride + j], v + j * hd, o + h * o_stride, hd);
    }
}

void attn_accum_q8(const float* p, int64_t p_stride, int64_t n_q, int64_t hd, const int8_t* v,
                   const uint16_t* v_d, int64_t n, float* o, int64_t o_stride, const void*, int64_t) {
    const int64_t n_blocks = hd / kQ8Block;
    for (int64_t h = 0; h < n_q; ++h) {
        float* oh = o + h * o_stride;
        for (int64_t j = 0; j < n; ++j) {
            for (int64_t i = 0; i < hd; ++i) {
                const float value = fp16_to_float(v_d[j * n_blocks + i / kQ8Block]) * static_cast<float>(v[j * hd + i]);
                oh[i] += p[h * p_stride + j] * value;
            }
        }
    }
}

}  // namespace bitnet::kernels::ref
