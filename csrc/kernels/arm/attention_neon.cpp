// NEON attention kernels over the KV cache (kernels.h, "attention over the KV cache"), baseline
// armv8-a. Twins: ref::attn_* in ref/kernels_ref.cpp. Same structure as x86/attention_avx2.cpp:
// scores in blocks of 8 (head, row) pairs (4 x 2, 2 x 4, 1 x 8) with 4-lane accumulators, each
// K vector loaded and converted once per block; a score is lane-wise fused multiply-adds over
// its columns in order, then vaddvq_f32 of its accumulator, so its bits never depend on the block
// it falls in (a tail is padded by repeating the last row). The V accumulation runs one chain of
// fused multiply-adds per output element over the rows in order. head_dim not a multiple of 4
// goes to the reference kernels.
#include <arm_neon.h>

#include <cmath>
#include <cstdint>

#include "kernels/isa_tables.h"
#include "kernels/prefetch.h"

namespace bitnet::kernels::neon {
namespace {

inline float32x4_t load4(const float* p) { return vld1q_f32(p); }
inline float32x4_t load4(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
inline float f16_scalar(uint16_t h) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

// exp(x) as x86's exp8: Cephes' expf, 0 below -87.3, NaN stays NaN.
inline float32x4_t exp4(float32x4_t x) {
    const float32x4_t lo = vdupq_n_f32(-87.33654f);
    const uint32x4_t not_nan = vceqq_f32(x, x);
    const uint32x4_t tiny = vcltq_f32(x, lo);
    float32x4_t v = vminq_f32(vmaxq_f32(x, lo), vdupq_n_f32(88.37626f));
    const float32x4_t fx = vrndnq_f32(vmulq_f32(v, vdupq_n_f32(1.44269504088896341f)));
    v = vfmsq_f32(v, fx, vdupq_n_f32(0.693359375f));
    v = vfmsq_f32(v, fx, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t y = vdupq_n_f32(1.9875691500e-4f);
    y = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), y, v);
    y = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), y, v);
    y = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), y, v);
    y = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), y, v);
    y = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), y, v);
    y = vfmaq_f32(vaddq_f32(v, vdupq_n_f32(1.0f)), y, vmulq_f32(v, v));
    const int32x4_t n = vaddq_s32(vcvtq_s32_f32(fx), vdupq_n_s32(127));
    float32x4_t r = vmulq_f32(y, vreinterpretq_f32_s32(vshlq_n_s32(n, 23)));
    r = vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(r), tiny));
    return vbslq_f32(not_nan, r, x);
}

template <int HB, int RB, typename K>
inline void scores_block(const float* q, int64_t hd, const K* const* rows, float* s, int64_t s_stride,
                         int n_valid) {
    float32x4_t acc[8];
    for (auto& a : acc) a = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < hd; i += 4) {
        float32x4_t qv[HB];
        for (int h = 0; h < HB; ++h) qv[h] = vld1q_f32(q + h * hd + i);
        for (int r = 0; r < RB; ++r) {
            const float32x4_t kv = load4(rows[r] + i);
            for (int h = 0; h < HB; ++h) acc[h * RB + r] = vfmaq_f32(acc[h * RB + r], qv[h], kv);
        }
    }
    for (int h = 0; h < HB; ++h) {
        for (int r = 0; r < n_valid; ++r) s[h * s_stride + r] = vaddvq_f32(acc[h * RB + r]);
    }
}

template <int HB, typename K>
void scores_heads(const float* q, int64_t hd, const K* k, int64_t n, float* s, int64_t s_stride,
                  Prefetcher& pf, int64_t pf_lines) {
    constexpr int RB = 8 / HB;
    const K* rows[RB];
    for (int64_t j = 0; j < n; j += RB) {
        pf.next(pf_lines);
        const int valid = n - j < RB ? static_cast<int>(n - j) : RB;
        for (int r = 0; r < RB; ++r) rows[r] = k + (j + (r < valid ? r : valid - 1)) * hd;
        scores_block<HB, RB>(q, hd, rows, s + j, s_stride, valid);
    }
}

template <typename K>
void scores(const float* q, int64_t n_q, int64_t hd, const K* k, int64_t n, float* s, int64_t s_stride,
            const void* pf_ptr, int64_t pf_bytes) {
    Prefetcher pf(pf_ptr, pf_bytes);
    const int64_t lines = lines_per(pf_bytes, (n_q + 3) / 4 * ((n + 1) / 2));
    int64_t h = 0;
    for (; h + 4 <= n_q; h += 4) scores_heads<4>(q + h * hd, hd, k, n, s + h * s_stride, s_stride, pf, lines);
    for (; h + 2 <= n_q; h += 2) scores_heads<2>(q + h * hd, hd, k, n, s + h * s_stride, s_stride, pf, lines);
    for (; h < n_q; ++h) scores_heads<1>(q + h * hd, hd, k, n, s + h * s_stride, s_stride, pf, lines);
    pf.next(INT64_MAX);
}

// Q8: 16-bit products in pairs (|.| <= 2 * 127 * 127, exact), widened to 4 int32 lanes, then the
// block scale q_d * k_d into the float accumulators.
template <int HB, int RB>
inline void scores_q8_block(const int8_t* q, const float* q_d, int64_t hd, const int8_t* const* rows,
                            const uint16_t* const* rows_d, float* s, int64_t s_stride, int n_valid) {
    const int64_t nb = hd / kQ8Block;
    float32x4_t acc[8];
    for (auto& a : acc) a = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; ++b) {
        int8x16_t q0[HB], q1[HB];
        for (int h = 0; h < HB; ++h) {
            q0[h] = vld1q_s8(q + h * hd + b * kQ8Block);
            q1[h] = vld1q_s8(q + h * hd + b * kQ8Block + 16);
        }
        for (int r = 0; r < RB; ++r) {
            const int8x16_t k0 = vld1q_s8(rows[r] + b * kQ8Block);
            const int8x16_t k1 = vld1q_s8(rows[r] + b * kQ8Block + 16);
            const float kd = f16_scalar(rows_d[r][b]);
            for (int h = 0; h < HB; ++h) {
                int16x8_t p0 = vmull_s8(vget_low_s8(q0[h]), vget_low_s8(k0));
                p0 = vmlal_s8(p0, vget_high_s8(q0[h]), vget_high_s8(k0));
                int16x8_t p1 = vmull_s8(vget_low_s8(q1[h]), vget_low_s8(k1));
                p1 = vmlal_s8(p1, vget_high_s8(q1[h]), vget_high_s8(k1));
                const int32x4_t idot = vpadalq_s16(vpaddlq_s16(p0), p1);
                acc[h * RB + r] = vfmaq_f32(acc[h * RB + r], vdupq_n_f32(q_d[h * nb + b] * kd), vcvtq_f32_s32(idot));
            }
        }
    }
    for (int h = 0; h < HB; ++h) {
        for (int r = 0; r < n_valid; ++r) s[h * s_stride + r] = vaddvq_f32(acc[h * RB + r]);
    }
}

template <int HB>
void scores_q8_heads(const int8_t* q, const float* q_d, int64_t hd, const int8_t* k, const uint16_t* k_d,
                     int64_t n, float* s, int64_t s_stride, Prefetcher& pf, int64_t pf_lines) {
    constexpr int RB = 8 / HB;
    const int64_t nb = hd / kQ8Block;
    const int8_t* rows[RB];
    const uint16_t* rows_d[RB];
    for (int64_t j = 0; j < n; j += RB) {
        pf.next(pf_lines);
        const int valid = n - j < RB ? static_cast<int>(n - j) : RB;
        for (int r = 0; r < RB; ++r) {
            const int64_t row = j + (r < valid ? r : valid - 1);
            rows[r] = k + row * hd;
            rows_d[r] = k_d + row * nb;
        }
        scores_q8_block<HB, RB>(q, q_d, hd, rows, rows_d, s + j, s_stride, valid);
    }
}

constexpr int64_t kRowSlice = 64;  // rows of V kept in L1 while every column block passes

template <int HB, int CB, typename V>
inline void accum_block(const float* p, int64_t p_stride, int64_t hd, const V* v, int64_t n, float* o,
                        int64_t o_stride, int64_t c0, Prefetcher& pf) {
    float32x4_t acc[HB][CB];
    for (int h = 0; h < HB; ++h) {
        for (int c = 0; c < CB; ++c) acc[h][c] = vld1q_f32(o + h * o_stride + c0 + 4 * c);
    }
    for (int64_t j = 0; j < n; ++j) {
        pf.next(1);
        float32x4_t vv[CB];
        for (int c = 0; c < CB; ++c) vv[c] = load4(v + j * hd + c0 + 4 * c);
        for (int h = 0; h < HB; ++h) {
            const float32x4_t w = vdupq_n_f32(p[h * p_stride + j]);
            for (int c = 0; c < CB; ++c) acc[h][c] = vfmaq_f32(acc[h][c], w, vv[c]);
        }
    }
    for (int h = 0; h < HB; ++h) {
        for (int c = 0; c < CB; ++c) vst1q_f32(o + h * o_stride + c0 + 4 * c, acc[h][c]);
    }
}

template <int HB, typename V>
void accum_heads(const float* p, int64_t p_stride, int64_t hd, const V* v, int64_t n, float* o,
                 int64_t o_stride, Prefetcher& pf) {
    constexpr int CB = HB == 4 ? 4 : 8;
    for (int64_t j0 = 0; j0 < n; j0 += kRowSlice) {
        const int64_t m = n - j0 < kRowSlice ? n - j0 : kRowSlice;
        int64_t c0 = 0;
        for (; c0 + 4 * CB <= hd; c0 += 4 * CB) {
            accum_block<HB, CB>(p + j0, p_stride, hd, v + j0 * hd, m, o, o_stride, c0, pf);
        }
        for (; c0 < hd; c0 += 4) accum_block<HB, 1>(p + j0, p_stride, hd, v + j0 * hd, m, o, o_stride, c0, pf);
    }
}

template <typename V>
void accum(const float* p, int64_t p_stride, int64_t n_q, int64_t hd, const V* v, int64_t n, float* o,
           int64_t o_stride, const void* pf_ptr, int64_t pf_bytes) {
    Prefetcher pf(pf_ptr, pf_bytes);
    int64_t h = 0;
    for (; h + 4 <= n_q; h += 4) accum_heads<4>(p + h * p_stride, p_stride, hd, v, n, o + h * o_stride, o_stride, pf);
    for (; h + 2 <= n_q; h += 2) accum_heads<2>(p + h * p_stride, p_stride, hd, v, n, o + h * o_stride, o_stride, pf);
    for (; h < n_q; ++h) accum_heads<1>(p + h * p_stride, p_stride, hd, v, n, o + h * o_stride, o_stride, pf);
    pf.next(INT64_MAX);
}

// Q8 V in column blocks of 8 (inside one Q8 block): term p[h][j] * (d[j][block] * v[j][i]).
template <int HB>
void accum_q8_heads(const float* p, int64_t p_stride, int64_t hd, const int8_t* v, const uint16_t* v_d,
                    int64_t n, float* o, int64_t o_stride, Prefetcher& pf) {
    const int64_t nb = hd / kQ8Block;
    for (int64_t j0 = 0; j0 < n; j0 += kRowSlice) {
        const int64_t m = n - j0 < kRowSlice ? n - j0 : kRowSlice;
        for (int64_t c0 = 0; c0 < hd; c0 += 8) {
            float32x4_t acc[HB][2];
            for (int h = 0; h < HB; ++h) {
                acc[h][0] = vld1q_f32(o + h * o_stride + c0);
                acc[h][1] = vld1q_f32(o + h * o_stride + c0 + 4);
            }
            for (int64_t j = j0; j < j0 + m; ++j) {
                pf.next(1);
                const float d = f16_scalar(v_d[j * nb + c0 / kQ8Block]);
                const int16x8_t w16 = vmovl_s8(vld1_s8(v + j * hd + c0));
                const float32x4_t v0 = vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(w16))), d);
                const float32x4_t v1 = vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(w16))), d);
                for (int h = 0; h < HB; ++h) {
                    const float32x4_t w = vdupq_n_f32(p[h * p_stride + j]);
                    acc[h][0] = vfmaq_f32(acc[h][0], w, v0);
                    acc[h][1] = vfmaq_f32(acc[h][1], w, v1);
                }
            }
            for (int h = 0; h < HB; ++h) {
                vst1q_f32(o + h * o_stride + c0, acc[h][0]);
                vst1q_f32(o + h * o_stride + c0 + 4, acc[h][1]);
            }
        }
    }
}

}  // namespace

void attn_scores_f32(const float* q, int64_t n_q, int64_t hd, const float* k, int64_t n, float* s,
                     int64_t s_stride, const void* pf, int64_t pf_bytes) {
    if (hd % 4 != 0) return ref::attn_scores_f32(q, n_q, hd, k, n, s, s_stride, pf, pf_bytes);
    scores(q, n_q, hd, k, n, s, s_stride, pf, pf_bytes);
}

void attn_scores_f16(const float* q, int64_t n_q, int64_t hd, const uint16_t* k, int64_t n, float* s,
                     int64_t s_stride, const void* pf, int64_t pf_bytes) {
    if (hd % 4 != 0) return ref::attn_scores_f16(q, n_q, hd, k, n, s, s_stride, pf, pf_bytes);
    scores(q, n_q, hd, k, n, s, s_stride, pf, pf_bytes);
}

void attn_scores_q8(const int8_t* q, const float* q_d, int64_t n_q, int64_t hd, const int8_t* k,
                    const uint16_t* k_d, int64_t n, float* s, int64_t s_stride, const void* pf_ptr,
                    int64_t pf_bytes) {
    const int64_t nb = hd / kQ8Block;
    Prefetcher pf(pf_ptr, pf_bytes);
    const int64_t lines = lines_per(pf_bytes, (n_q + 3) / 4 * ((n + 1) / 2));
    int64_t h = 0;
    for (; h + 4 <= n_q; h += 4) {
        scores_q8_heads<4>(q + h * hd, q_d + h * nb, hd, k, k_d, n, s + h * s_stride, s_stride, pf, lines);
    }
    for (; h + 2 <= n_q; h += 2) {
        scores_q8_heads<2>(q + h * hd, q_d + h * nb, hd, k, k_d, n, s + h * s_stride, s_stride, pf, lines);
    }
    for (; h < n_q; ++h) {
        scores_q8_heads<1>(q + h * hd, q_d + h * nb, hd, k, k_d, n, s + h * s_stride, s_stride, pf, lines);
    }
    pf.next(INT64_MAX);
}

void attn_softmax(float* s, int64_t n_q, int64_t n, int64_t s_stride, float* m, float* l) {
    for (int64_t h = 0; h < n_q; ++h) {
        float* row = s + h * s_stride;
        const int64_t n4 = n / 4 * 4;
        float32x4_t vmax = vdupq_n_f32(-INFINITY);
        for (int64_t j = 0; j < n4; j += 4) vmax = vmaxq_f32(vmax, vld1q_f32(row + j));
        float max_v = vmaxvq_f32(vmax);
        for (int64_t j = n4; j < n; ++j) max_v = row[j] > max_v ? row[j] : max_v;
        const float32x4_t vm = vdupq_n_f32(max_v);
        float32x4_t sum = vdupq_n_f32(0.0f);
        for (int64_t j = 0; j < n4; j += 4) {
            const float32x4_t e = exp4(vsubq_f32(vld1q_f32(row + j), vm));
            vst1q_f32(row + j, e);
            sum = vaddq_f32(sum, e);
        }
        if (n4 < n) {
            float tail[4];
            for (int64_t j = 0; j < 4; ++j) tail[j] = n4 + j < n ? row[n4 + j] : -INFINITY;
            const float32x4_t e = exp4(vsubq_f32(vld1q_f32(tail), vm));
            vst1q_f32(tail, e);
            for (int64_t j = n4; j < n; ++j) row[j] = tail[j - n4];
            sum = vaddq_f32(sum, e);
        }
        m[h] = max_v;
        l[h] = vaddvq_f32(sum);
    }
}

void attn_accum_f32(const float* p, int64_t p_stride, int64_t n_q, int64_t hd, const float* v, int64_t n,
                    float* o, int64_t o_stride, const void* pf, int64_t pf_bytes) {
    if (hd % 4 != 0) return ref::attn_accum_f32(p, p_stride, n_q, hd, v, n, o, o_stride, pf, pf_bytes);
    accum(p, p_stride, n_q, hd, v, n, o, o_stride, pf, pf_bytes);
}

void attn_accum_f16(const float* p, int64_t p_stride, int64_t n_q, int64_t hd, const uint16_t* v,
                    int64_t n, float* o, int64_t o_stride, const void* pf, int64_t pf_bytes) {
    if (hd % 4 != 0) return ref::attn_accum_f16(p, p_stride, n_q, hd, v, n, o, o_stride, pf, pf_bytes);
    accum(p, p_stride, n_q, hd, v, n, o, o_stride, pf, pf_bytes);
}

void attn_accum_q8(const float* p, int64_t p_stride, int64_t n_q, int64_t hd, const int8_t* v,
                   const uint16_t* v_d, int64_t n, float* o, int64_t o_stride, const void* pf_ptr,
                   int64_t pf_bytes) {
    Prefetcher pf(pf_ptr, pf_bytes);
    int64_t h = 0;
    for (; h + 4 <= n_q; h += 4) {
        accum_q8_heads<4>(p + h * p_stride, p_stride, hd, v, v_d, n, o + h * o_stride, o_stride, pf);
    }
    for (; h + 2 <= n_q; h += 2) {
        accum_q8_heads<2>(p + h * p_stride, p_stride, hd, v, v_d, n, o + h * o_stride, o_stride, pf);
    }
    for (; h < n_q; ++h) accum_q8_heads<1>(p + h * p_stride, p_stride, hd, v, v_d, n, o + h * o_stride, o_stride, pf);
    pf.next(INT64_MAX);
}

void register_attention_kernels(KernelTable& table) {
    table.attn_scores_f32 = attn_scores_f32;
    table.attn_scores_f16 = attn_scores_f16;
    table.attn_scores_q8 = attn_scores_q8;
    table.attn_softmax = attn_softmax;
    table.attn_accum_f32 = attn_accum_f32;
    table.attn_accum_f16 = attn_accum_f16;
    table.attn_accum_q8 = attn_accum_q8;
}

}  // namespace bitnet::kernels::neon
