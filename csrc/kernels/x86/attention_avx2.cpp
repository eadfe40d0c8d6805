// AVX2 + FMA + F16C attention kernels over the KV cache (kernels.h, "attention over the KV
// cache"). Twins: ref::attn_* in ref/kernels_ref.cpp. Same rules as kernels_avx2.cpp: nothing
// here may be merged into baseline code.
//
// Scores: a block of 8 (head, row) pairs — 4 heads x 2 rows, 2 x 4 or 1 x 8 — keeps 8 float
// accumulators; each K vector is loaded (and converted from fp16) once per block and used by all
// its heads, each query vector once per i-step. Lane l of an accumulator sums the products of
// columns i = l (mod 8) in ascending order with fused multiply-adds; one transposing reduction
// (reduce8) then gives all 8 totals with the same tree for every pair:
//     ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)).
// A score's bits therefore depend only on its query head and row, never on the block it falls
// in: a tail of rows is padded by repeating the last row, and padded results are not stored.
// Accumulation of V: each output element is a sequential chain of fused multiply-adds over the
// rows, in row order, whatever block of heads and columns it is computed in.
// head_dim not a multiple of 8 goes to the reference kernels (deterministic as well).
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "kernels/isa_tables.h"
#include "kernels/prefetch.h"

namespace bitnet::kernels::avx2 {
namespace {

// All 8 horizontal sums, a[k] -> lane k, with one fixed tree per vector (see above).
inline __m256 reduce8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5, __m256 a6,
                      __m256 a7) {
    const __m256 t0 = _mm256_hadd_ps(a0, a1);
    const __m256 t1 = _mm256_hadd_ps(a2, a3);
    const __m256 t2 = _mm256_hadd_ps(a4, a5);
    const __m256 t3 = _mm256_hadd_ps(a6, a7);
    const __m256 u0 = _mm256_hadd_ps(t0, t1);  // sums of lanes 0-3 | 4-7 of a[0..3]
    const __m256 u1 = _mm256_hadd_ps(t2, t3);  // the same of a[4..7]
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// Stores the 8 reduced scores (lane h * RB + r -> s[h][r]) of a block, the first n_valid rows.
template <int HB, int RB>
inline void store_scores(__m256 sums, float* s, int64_t s_stride, int n_valid) {
    alignas(32) float out[8];
    _mm256_store_ps(out, sums);
    if (n_valid == RB) {  // constant bounds: plain scalar moves
        for (int h = 0; h < HB; ++h) {
            for (int r = 0; r < RB; ++r) s[h * s_stride + r] = out[h * RB + r];
        }
        return;
    }
    for (int h = 0; h < HB; ++h) {
        for (int r = 0; r < RB; ++r) {
            if (r < n_valid) s[h * s_stride + r] = out[h * RB + r];
        }
    }
}

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 load8(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// exp(x) for x <= 88.3 (Cephes' expf: 2^n * p(r), |r| <= ln2/2, about 2 ulp); below -87.3 it is
// 0, NaN stays NaN.
inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.33654f);
    const __m256 hi = _mm256_set1_ps(88.37626f);
    const __m256 nan_mask = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    const __m256 zero_mask = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    __m256 v = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    const __m256 fx = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.44269504088896341f)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), v);
    v = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), v);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, v, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, v, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, v, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, v, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, v, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(v, v), _mm256_add_ps(v, _mm256_set1_ps(1.0f)));
    const __m256i n = _mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127));
    __m256 r = _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(n, 23)));
    r = _mm256_andnot_ps(zero_mask, r);
    return _mm256_blendv_ps(r, x, nan_mask);
}

// Scores of HB heads x RB rows (HB * RB == 8) against rows[0 .. RB); n_valid <= RB are stored.
template <int HB, int RB, typename K>
inline void scores_block(const float* q, int64_t hd, const K* const* rows, float* s,
                         int64_t s_stride, int n_valid) {
    static_assert(HB * RB == 8, "8 accumulators");
    __m256 acc[8] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < hd; i += 8) {
        __m256 qv[HB];
        for (int h = 0; h < HB; ++h) {
            qv[h] = _mm256_loadu_ps(q + h * hd + i);
            // Keeps each query vector in a register: the compiler would rather fold the load
            // into every multiply-add, which costs a load per FMA (two loads a cycle is the
            // limit here, not the two FMAs).
            if (RB > 1) __asm__("" : "+x"(qv[h]));
        }
        for (int r = 0; r < RB; ++r) {
            const __m256 kv = load8(rows[r] + i);
            for (int h = 0; h < HB; ++h) acc[h * RB + r] = _mm256_fmadd_ps(qv[h], kv, acc[h * RB + r]);
        }
    }
    store_scores<HB, RB>(reduce8(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7]), s,
                         s_stride, n_valid);
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

// Q8: per block of 32, maddubs(|k|, sign(q, k)) gives int16 pairs (|.| <= 2 * 127 * 127, exact:
// cache and query quants are in [-127, 127]) and madd widens them to 8 int32 lanes; the 8 pairs'
// lanes are summed exactly (reduce8_epi32), so each pair has its block's exact dot, and one
// multiply-add per block adds (q_d * k_d) * idot for all 8 pairs at once. A score is the chain
// of those multiply-adds over the blocks in order: the reference's terms, fused.
inline __m256i reduce8_epi32(__m256i a0, __m256i a1, __m256i a2, __m256i a3, __m256i a4, __m256i a5,
                             __m256i a6, __m256i a7) {
    const __m256i u0 = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
    const __m256i u1 = _mm256_hadd_epi32(_mm256_hadd_epi32(a4, a5), _mm256_hadd_epi32(a6, a7));
    return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20), _mm256_permute2x128_si256(u0, u1, 0x31));
}

constexpr int64_t kMaxQ8Blocks = 16;  // head_dim <= 512 (more goes to the reference kernel)

template <int HB, int RB>
inline void scores_q8_block(const int8_t* q, const __m256* q_dv, int64_t hd, const int8_t* const* rows,
                            const uint16_t* const* rows_d, float* s, int64_t s_stride, int n_valid) {
    static_assert(HB * RB == 8, "8 pairs");
    const int64_t nb = hd / kQ8Block;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();  // lane h * RB + r
    for (int64_t b = 0; b < nb; ++b) {
        __m256i qv[HB];
        for (int h = 0; h < HB; ++h) {
            qv[h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + h * hd + b * kQ8Block));
        }
        __m256i dot[8];
        float kd[RB];
        for (int r = 0; r < RB; ++r) {
            const __m256i kv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[r] + b * kQ8Block));
            const __m256i k_abs = _mm256_sign_epi8(kv, kv);
            kd[r] = _cvtsh_ss(rows_d[r][b]);
            for (int h = 0; h < HB; ++h) {
                dot[h * RB + r] = _mm256_madd_epi16(_mm256_maddubs_epi16(k_abs, _mm256_sign_epi8(qv[h], kv)), ones);
            }
        }
        const __m256i idot = reduce8_epi32(dot[0], dot[1], dot[2], dot[3], dot[4], dot[5], dot[6], dot[7]);
        const __m256 k_dv = _mm256_setr_ps(kd[0 % RB], kd[1 % RB], kd[2 % RB], kd[3 % RB], kd[4 % RB],
                                           kd[5 % RB], kd[6 % RB], kd[7 % RB]);
        acc = _mm256_fmadd_ps(_mm256_mul_ps(q_dv[b], k_dv), _mm256_cvtepi32_ps(idot), acc);
    }
    store_scores<HB, RB>(acc, s, s_stride, n_valid);
}

template <int HB>
void scores_q8_heads(const int8_t* q, const float* q_d, int64_t hd, const int8_t* k,
                     const uint16_t* k_d, int64_t n, float* s, int64_t s_stride, Prefetcher& pf,
                     int64_t pf_lines) {
    constexpr int RB = 8 / HB;
    const int64_t nb = hd / kQ8Block;
    const int8_t* rows[RB];
    const uint16_t* rows_d[RB];
    __m256 q_dv[kMaxQ8Blocks];  // lane h * RB + r: the query scale of head h, per block
    for (int64_t b = 0; b < nb; ++b) {
        alignas(32) float lanes[8];
        for (int l = 0; l < 8; ++l) lanes[l] = q_d[(l / RB) * nb + b];
        q_dv[b] = _mm256_load_ps(lanes);
    }
    for (int64_t j = 0; j < n; j += RB) {
        pf.next(pf_lines);
        const int valid = n - j < RB ? static_cast<int>(n - j) : RB;
        for (int r = 0; r < RB; ++r) {
            const int64_t row = j + (r < valid ? r : valid - 1);
            rows[r] = k + row * hd;
            rows_d[r] = k_d + row * nb;
        }
        scores_q8_block<HB, RB>(q, q_dv, hd, rows, rows_d, s + j, s_stride, valid);
    }
}

// o[h][c0 .. c0 + 8*CB) += sum over rows j of p[h][j] * v[j][..] for HB heads.
template <int HB, int CB, typename V>
inline void accum_block(const float* p, int64_t p_stride, int64_t hd, const V* v, int64_t n,
                        float* o, int64_t o_stride, int64_t c0, Prefetcher& pf) {
    __m256 acc[HB][CB];
    for (int h = 0; h < HB; ++h) {
        for (int c = 0; c < CB; ++c) acc[h][c] = _mm256_loadu_ps(o + h * o_stride + c0 + 8 * c);
    }
    for (int64_t j = 0; j < n; ++j) {
        pf.next(1);
        __m256 vv[CB];
        for (int c = 0; c < CB; ++c) vv[c] = load8(v + j * hd + c0 + 8 * c);
        for (int h = 0; h < HB; ++h) {
            const __m256 w = _mm256_set1_ps(p[h * p_stride + j]);
            for (int c = 0; c < CB; ++c) acc[h][c] = _mm256_fmadd_ps(w, vv[c], acc[h][c]);
        }
    }
    for (int h = 0; h < HB; ++h) {
        for (int c = 0; c < CB; ++c) _mm256_storeu_ps(o + h * o_stride + c0 + 8 * c, acc[h][c]);
    }
}

// Rows in slices of kRowSlice, so that a slice of V stays in L1 while every column block of
// every head passes over it (each element's sum still runs over the rows in order).
constexpr int64_t kRowSlice = 64;

template <int HB, typename V>
void accum_heads(const float* p, int64_t p_stride, int64_t hd, const V* v, int64_t n, float* o,
                 int64_t o_stride, Prefetcher& pf) {
    constexpr int CB = HB == 4 ? 2 : 4;
    for (int64_t j0 = 0; j0 < n; j0 += kRowSlice) {
        const int64_t m = n - j0 < kRowSlice ? n - j0 : kRowSlice;
        int64_t c0 = 0;
        for (; c0 + 8 * CB <= hd; c0 += 8 * CB) {
            accum_block<HB, CB>(p + j0, p_stride, hd, v + j0 * hd, m, o, o_stride, c0, pf);
        }
        for (; c0 < hd; c0 += 8) accum_block<HB, 1>(p + j0, p_stride, hd, v + j0 * hd, m, o, o_stride, c0, pf);
    }
}

template <typename V>
void accum(const float* p, int64_t p_stride, int64_t n_q, int64_t hd, const V* v, int64_t n,
           float* o, int64_t o_stride, const void* pf_ptr, int64_t pf_bytes) {
    Prefetcher pf(pf_ptr, pf_bytes);
    int64_t h = 0;
    for (; h + 4 <= n_q; h += 4) accum_heads<4>(p + h * p_stride, p_stride, hd, v, n, o + h * o_stride, o_stride, pf);
    for (; h + 2 <= n_q; h += 2) accum_heads<2>(p + h * p_stride, p_stride, hd, v, n, o + h * o_stride, o_stride, pf);
    for (; h < n_q; ++h) accum_heads<1>(p + h * p_stride, p_stride, hd, v, n, o + h * o_stride, o_stride, pf);
    pf.next(INT64_MAX);
}

// Q8 V: each term is p[h][j] * (d[j][block] * v[j][i]): a column block of 8 * CB (<= 32) values
// lies inside one Q8 block, so each row's values are converted and scaled once for all heads.
template <int HB, int CB>
inline void accum_q8_block(const float* p, int64_t p_stride, const int8_t* v, const float* v_d,
                           int64_t hd, int64_t n, float* o, int64_t o_stride, int64_t c0, Prefetcher& pf) {
    const int64_t nb = hd / kQ8Block;
    const int64_t b = c0 / kQ8Block;
    __m256 acc[HB][CB];
    for (int h = 0; h < HB; ++h) {
        for (int c = 0; c < CB; ++c) acc[h][c] = _mm256_loadu_ps(o + h * o_stride + c0 + 8 * c);
    }
    for (int64_t j = 0; j < n; ++j) {
        pf.next(1);
        const __m256 d = _mm256_broadcast_ss(v_d + j * nb + b);
        __m256 vv[CB];
        for (int c = 0; c < CB; ++c) vv[c] = _mm256_mul_ps(d, load8(v + j * hd + c0 + 8 * c));
        for (int h = 0; h < HB; ++h) {
            const __m256 w = _mm256_set1_ps(p[h * p_stride + j]);
            for (int c = 0; c < CB; ++c) acc[h][c] = _mm256_fmadd_ps(w, vv[c], acc[h][c]);
        }
    }
    for (int h = 0; h < HB; ++h) {
        for (int c = 0; c < CB; ++c) _mm256_storeu_ps(o + h * o_stride + c0 + 8 * c, acc[h][c]);
    }
}

template <int HB>
void accum_q8_heads(const float* p, int64_t p_stride, int64_t hd, const int8_t* v, const uint16_t* v_d,
                    int64_t n, float* o, int64_t o_stride, Prefetcher& pf) {
    constexpr int CB = HB == 4 ? 2 : 4;
    const int64_t nb = hd / kQ8Block;
    alignas(32) float d[kRowSlice * kMaxQ8Blocks];  // the slice's scales as floats
    for (int64_t j0 = 0; j0 < n; j0 += kRowSlice) {
        const int64_t m = n - j0 < kRowSlice ? n - j0 : kRowSlice;
        int64_t i = 0;
        for (; i + 8 <= m * nb; i += 8) _mm256_store_ps(d + i, load8(v_d + j0 * nb + i));
        for (; i < m * nb; ++i) d[i] = _cvtsh_ss(v_d[j0 * nb + i]);
        for (int64_t c0 = 0; c0 < hd; c0 += 8 * CB) {
            accum_q8_block<HB, CB>(p + j0, p_stride, v + j0 * hd, d, hd, m, o, o_stride, c0, pf);
        }
    }
}

}  // namespace

void attn_scores_f32(const float* q, int64_t n_q, int64_t hd, const float* k, int64_t n, float* s,
                     int64_t s_stride, const void* pf, int64_t pf_bytes) {
    if (hd % 8 != 0) return ref::attn_scores_f32(q, n_q, hd, k, n, s, s_stride, pf, pf_bytes);
    scores(q, n_q, hd, k, n, s, s_stride, pf, pf_bytes);
}

void attn_scores_f16(const float* q, int64_t n_q, int64_t hd, const uint16_t* k, int64_t n,
                     float* s, int64_t s_stride, const void* pf, int64_t pf_bytes) {
    if (hd % 8 != 0) return ref::attn_scores_f16(q, n_q, hd, k, n, s, s_stride, pf, pf_bytes);
    scores(q, n_q, hd, k, n, s, s_stride, pf, pf_bytes);
}

void attn_scores_q8(const int8_t* q, const float* q_d, int64_t n_q, int64_t hd, const int8_t* k,
                    const uint16_t* k_d, int64_t n, float* s, int64_t s_stride, const void* pf_ptr,
                    int64_t pf_bytes) {
    const int64_t nb = hd / kQ8Block;
    if (nb > kMaxQ8Blocks) return ref::attn_scores_q8(q, q_d, n_q, hd, k, k_d, n, s, s_stride, pf_ptr, pf_bytes);
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

// Per row: the max (vector max, then the 8 lanes), exp8 of the differences (the tail through
// a padded vector: padding is -inf, exp 0), and the sum in 8 lanes reduced with reduce8's tree.
void attn_softmax(float* s, int64_t n_q, int64_t n, int64_t s_stride, float* m, float* l) {
    for (int64_t h = 0; h < n_q; ++h) {
        float* row = s + h * s_stride;
        const int64_t n8 = n / 8 * 8;
        __m256 vmax = _mm256_set1_ps(-INFINITY);
        for (int64_t j = 0; j < n8; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(row + j));
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, vmax);
        float max_v = -INFINITY;
        for (float v : lanes) max_v = v > max_v ? v : max_v;
        for (int64_t j = n8; j < n; ++j) max_v = row[j] > max_v ? row[j] : max_v;
        const __m256 vm = _mm256_set1_ps(max_v);
        __m256 sum = _mm256_setzero_ps();
        for (int64_t j = 0; j < n8; j += 8) {
            const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + j), vm));
            _mm256_storeu_ps(row + j, e);
            sum = _mm256_add_ps(sum, e);
        }
        if (n8 < n) {
            alignas(32) float tail[8];
            for (int64_t j = 0; j < 8; ++j) tail[j] = n8 + j < n ? row[n8 + j] : -INFINITY;
            const __m256 e = exp8(_mm256_sub_ps(_mm256_load_ps(tail), vm));
            _mm256_store_ps(tail, e);
            for (int64_t j = n8; j < n; ++j) row[j] = tail[j - n8];
            sum = _mm256_add_ps(sum, e);
        }
        const __m256 z = _mm256_setzero_ps();
        m[h] = max_v;
        l[h] = _mm256_cvtss_f32(reduce8(sum, z, z, z, z, z, z, z));
    }
}

void attn_accum_f32(const float* p, int64_t p_stride, int64_t n_q, int64_t hd, const float* v,
                    int64_t n, float* o, int64_t o_stride, const void* pf, int64_t pf_bytes) {
    if (hd % 8 != 0) return ref::attn_accum_f32(p, p_stride, n_q, hd, v, n, o, o_stride, pf, pf_bytes);
    accum(p, p_stride, n_q, hd, v, n, o, o_stride, pf, pf_bytes);
}

void attn_accum_f16(const float* p, int64_t p_stride, int64_t n_q, int64_t hd, const uint16_t* v,
                    int64_t n, float* o, int64_t o_stride, const void* pf, int64_t pf_bytes) {
    if (hd % 8 != 0) return ref::attn_accum_f16(p, p_stride, n_q, hd, v, n, o, o_stride, pf, pf_bytes);
    accum(p, p_stride, n_q, hd, v, n, o, o_stride, pf, pf_bytes);
}

void attn_accum_q8(const float* p, int64_t p_stride, int64_t n_q, int64_t hd, const int8_t* v,
                   const uint16_t* v_d, int64_t n, float* o, int64_t o_stride, const void* pf_ptr,
                   int64_t pf_bytes) {
    if (hd / kQ8Block > kMaxQ8Blocks) {
        return ref::attn_accum_q8(p, p_stride, n_q, hd, v, v_d, n, o, o_stride, pf_ptr, pf_bytes);
    }
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

}  // namespace bitnet::kernels::avx2
