// AVX-512 (F, BW, VL, DQ) attention kernels over the KV cache (kernels.h, "attention over the KV
// cache"): the softmax statistics and the q8_0 V accumulation. Twins: ref::attn_softmax and
// ref::attn_accum_q8 in ref/kernels_ref.cpp. The q8_0 scores are the avx512vnni level's
// (attention_avx512vnni.cpp); the f32/f16 scores and accumulation stay on the avx2 kernels
// (16-lane versions measured no faster at depth on Zen 4: docs/kernels.md).
//
// Compiled with the avx512 flags of CMakeLists.txt; only reached through the KernelTable of the
// avx512 levels. Everything is in an anonymous namespace or in bitnet::kernels::avx512 and no
// standard-library template is instantiated, so nothing here can be merged into baseline code.
//
// Both compute the avx2 kernels' numbers bit for bit, so every x86 level decodes alike: the same
// operations per element, in the same order (see each function).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"  // GCC bug 105593, see kernels_avx512.cpp
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "kernels/isa_tables.h"
#include "kernels/prefetch.h"

namespace bitnet::kernels::avx512 {
namespace {

inline __mmask16 first_lanes(int64_t n) {
    return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
}

// 16 fp16 values (the first lanes of m; the others 0) as floats.
inline __m512 load16(const uint16_t* p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }

// exp(x) as attention_avx2.cpp's exp8 (Cephes' expf, about 2 ulp; below -87.3 it is 0, NaN
// stays NaN), 16 lanes.
inline __m512 exp16(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.33654f);
    const __m512 hi = _mm512_set1_ps(88.37626f);
    const __mmask16 nan_mask = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    const __mmask16 zero_mask = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    __m512 v = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    const __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), v);
    v = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), v);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, v, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, v, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, v, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, v, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, v, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(v, v), _mm512_add_ps(v, _mm512_set1_ps(1.0f)));
    const __m512i n = _mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127));
    __m512 r = _mm512_mul_ps(y, _mm512_castsi512_ps(_mm512_slli_epi32(n, 23)));
    r = _mm512_maskz_mov_ps(static_cast<__mmask16>(~zero_mask), r);
    return _mm512_mask_mov_ps(r, nan_mask, x);
}

// ---- softmax statistics ----------------------------------------------------------------------

// The total of a's 8 lanes by attention_avx2.cpp's reduce8 tree:
// ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)).
inline float reduce8_first(__m256 a) {
    const __m256 z = _mm256_setzero_ps();
    const __m256 t0 = _mm256_hadd_ps(a, z);
    const __m256 u0 = _mm256_hadd_ps(t0, z);
    return _mm256_cvtss_f32(_mm256_add_ps(_mm256_permute2f128_ps(u0, u0, 0x20), _mm256_permute2f128_ps(u0, u0, 0x31)));
}

// ---- V accumulation ---------------------------------------------------------------------------

// Rows in slices of kRowSlice, so that a slice of V stays in L1 while every column block of
// every head passes over it (each element's sum still runs over the rows in order).
constexpr int64_t kRowSlice = 64;
constexpr int64_t kMaxQ8Blocks = 16;  // head_dim <= 512 for q8_0 (more: the level below)

// Prefetch lines per row step of an accumulation, spread evenly over the call (a column block of
// up to 4 heads and 64 columns passes over each row once). Measured on Zen 4 at depth 4096 (one
// thread): spreading over the whole call, over its first half or a quarter, or one line per
// column vector, all within 1%.
inline int64_t accum_lines(int64_t pf_bytes, int64_t n_q, int64_t hd, int64_t n) {
    return lines_per(pf_bytes, (n_q + 3) / 4 * ((hd + 63) / 64) * n);
}

// Q8 V: a column vector of 16 lies inside one Q8 block, so each row's values are converted and
// scaled once for all heads.
template <int HB, int CB>
inline void accum_q8_block(const float* p, int64_t p_stride, const int8_t* v, const float* v_d, int64_t hd,
                           int64_t n, float* o, int64_t o_stride, int64_t c0, Prefetcher& pf, int64_t pf_lines) {
    const int64_t nb = hd / kQ8Block;
    __m512 acc[HB][CB];
    for (int h = 0; h < HB; ++h) {
        for (int c = 0; c < CB; ++c) acc[h][c] = _mm512_loadu_ps(o + h * o_stride + c0 + 16 * c);
    }
    for (int64_t j = 0; j < n; ++j) {
        pf.next(pf_lines);
        __m512 vv[CB];
        for (int c = 0; c < CB; ++c) {
            const __m512 d = _mm512_set1_ps(v_d[j * nb + (c0 + 16 * c) / kQ8Block]);
            const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v + j * hd + c0 + 16 * c));
            vv[c] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(raw)));
        }
        for (int h = 0; h < HB; ++h) {
            const __m512 w = _mm512_set1_ps(p[h * p_stride + j]);
            for (int c = 0; c < CB; ++c) acc[h][c] = _mm512_fmadd_ps(w, vv[c], acc[h][c]);
        }
    }
    for (int h = 0; h < HB; ++h) {
        for (int c = 0; c < CB; ++c) _mm512_storeu_ps(o + h * o_stride + c0 + 16 * c, acc[h][c]);
    }
}

template <int HB>
void accum_q8_heads(const float* p, int64_t p_stride, int64_t hd, const int8_t* v, const uint16_t* v_d, int64_t n,
                    float* o, int64_t o_stride, Prefetcher& pf, int64_t pf_lines) {
    constexpr int CB = HB == 4 ? 4 : 8;
    const int64_t nb = hd / kQ8Block;
    alignas(64) float d[kRowSlice * kMaxQ8Blocks];  // the slice's scales as floats
    for (int64_t j0 = 0; j0 < n; j0 += kRowSlice) {
        const int64_t m = n - j0 < kRowSlice ? n - j0 : kRowSlice;
        for (int64_t i = 0; i < m * nb; i += 16) {
            _mm512_store_ps(d + i, load16(v_d + j0 * nb + i, first_lanes(m * nb - i)));
        }
        int64_t c0 = 0;
        for (; c0 + 16 * CB <= hd; c0 += 16 * CB) {
            accum_q8_block<HB, CB>(p + j0, p_stride, v + j0 * hd, d, hd, m, o, o_stride, c0, pf, pf_lines);
        }
        for (; c0 < hd; c0 += 16) {
            accum_q8_block<HB, 1>(p + j0, p_stride, v + j0 * hd, d, hd, m, o, o_stride, c0, pf, pf_lines);
        }
    }
}

}  // namespace

// The same numbers as the avx2 kernel, bit for bit (so that every x86 level decodes alike): the
// max as there (8 lanes, then the lanes and the tail in order), exp16 with exp8's operations per
// lane, and the sum of each 16 values added to avx2's 8-lane accumulator as its two halves in
// order (padding lanes add exp(-inf) = +0, which changes no sum), reduced with reduce8's tree.
void attn_softmax(float* s, int64_t n_q, int64_t n, int64_t s_stride, float* m, float* l) {
    const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
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
        const __m512 vm = _mm512_set1_ps(max_v);
        __m256 sum = _mm256_setzero_ps();
        for (int64_t j = 0; j < n; j += 16) {
            const __mmask16 valid = first_lanes(n - j);
            const __m512 e = exp16(_mm512_sub_ps(_mm512_mask_loadu_ps(neg_inf, valid, row + j), vm));
            _mm512_mask_storeu_ps(row + j, valid, e);
            sum = _mm256_add_ps(sum, _mm512_castps512_ps256(e));
            sum = _mm256_add_ps(sum, _mm512_extractf32x8_ps(e, 1));
        }
        m[h] = max_v;
        l[h] = reduce8_first(sum);
    }
}

void attn_accum_q8(const float* p, int64_t p_stride, int64_t n_q, int64_t hd, const int8_t* v,
                   const uint16_t* v_d, int64_t n, float* o, int64_t o_stride, const void* pf_ptr,
                   int64_t pf_bytes) {
    if (hd / kQ8Block > kMaxQ8Blocks) {
        return ref::attn_accum_q8(p, p_stride, n_q, hd, v, v_d, n, o, o_stride, pf_ptr, pf_bytes);
    }
    Prefetcher pf(pf_ptr, pf_bytes);
    const int64_t lines = accum_lines(pf_bytes, n_q, hd, n);
    int64_t h = 0;
    for (; h + 4 <= n_q; h += 4) {
        accum_q8_heads<4>(p + h * p_stride, p_stride, hd, v, v_d, n, o + h * o_stride, o_stride, pf, lines);
    }
    for (; h + 2 <= n_q; h += 2) {
        accum_q8_heads<2>(p + h * p_stride, p_stride, hd, v, v_d, n, o + h * o_stride, o_stride, pf, lines);
    }
    for (; h < n_q; ++h) {
        accum_q8_heads<1>(p + h * p_stride, p_stride, hd, v, v_d, n, o + h * o_stride, o_stride, pf, lines);
    }
    pf.next(INT64_MAX);
}

void register_attention_kernels(KernelTable& table) {
    table.attn_softmax = attn_softmax;
    table.attn_accum_q8 = attn_accum_q8;
}

}  // namespace bitnet::kernels::avx512
