// AVX-512 (F, BW, VL, DQ, CD) integer kernels: activation quantization, ternary MAD on T2 and
// binary B1 on 512-bit vectors without VNNI (Skylake-SP class).
//
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512cd (and the AVX2 flags); only
// reached through the KernelTable after cpu_features() confirmed these and the OS's opmask/ZMM
// state. Everything is in an anonymous namespace or in bitnet::kernels::avx512 and no
// standard-library template is instantiated, so no function compiled with AVX-512 can be merged
// by the linker into baseline code. The table starts as the avx2 one (the LUT and float kernels
// stay AVX2, and so does the Q8 output layer). Twins: the functions of the same names in ref/kernels_ref.cpp.
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and trip -Wuninitialized once
// inlined (GCC bug 105593, fixed in GCC 13): a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/isa_tables.h"
#include "kernels/x86/avx512_common.h"

namespace bitnet::kernels::avx512 {

// ---- activation quantization ------------------------------------------------------------------
//
// quantize_i8 (twin: ref::quantize_i8) and quantize_q8 (twin: ref::quantize_q8): bit-identical.
// max_ps(a, acc) returns acc when a is NaN, so NaN inputs are skipped by the absmax as by
// std::max in the reference; NaN lanes are zeroed before rounding; vcvtps2dq rounds with the
// current mode (round half to even by default), as std::nearbyint.

namespace {

// Rounds 16 floats to int32 after NaN -> 0 and clamping to [lo, hi].
inline __m512i round_clamp(__m512 v, __m512 lo, __m512 hi) {
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    return _mm512_cvtps_epi32(v);
}

// |x| max over n floats, NaN skipped (0 when n == 0).
inline float abs_max(const float* x, int64_t n) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    __m512 vmax = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) vmax = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + i)), vmax);
    if (i < n) {
        const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
        vmax = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_maskz_loadu_ps(m, x + i)), vmax);
    }
    return _mm512_reduce_max_ps(vmax);  // no NaN left: every lane is a max of finite or inf
}

}  // namespace

void quantize_i8(const float* x, int64_t n, int64_t n_pad, int8_t* q, float* scale, int32_t* sum) {
    const float amax = abs_max(x, n);
    const float s = 127.0f / (amax > 1e-5f ? amax : 1e-5f);
    const __m512 vs = _mm512_set1_ps(s);
    const __m512 lo = _mm512_set1_ps(-128.0f);
    const __m512 hi = _mm512_set1_ps(127.0f);
    __m512i vsum = _mm512_setzero_si512();
    for (int64_t i = 0; i < n; i += 16) {
        const int64_t left = n - i;
        const __mmask16 m = left >= 16 ? static_cast<__mmask16>(0xffff)
                                       : static_cast<__mmask16>((1u << left) - 1);
        const __m512i v = round_clamp(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs), lo, hi);
        vsum = _mm512_add_epi32(vsum, v);  // masked-off lanes are 0
        _mm_mask_storeu_epi8(q + i, m, _mm512_cvtsepi32_epi8(v));
    }
    if (n_pad > n) std::memset(q + n, 0, static_cast<size_t>(n_pad - n));
    *scale = s;
    *sum = _mm512_reduce_add_epi32(vsum);
}

void quantize_q8(const float* x, int64_t n, int8_t* q, float* d) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    const __m512 lo = _mm512_set1_ps(-127.0f);
    const __m512 hi = _mm512_set1_ps(127.0f);
    for (int64_t b = 0; b < n / kQ8Block; ++b) {
        const float* xb = x + b * kQ8Block;
        const __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
        __m512 m = _mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_setzero_ps());
        m = _mm512_max_ps(_mm512_andnot_ps(sign, v1), m);
        const float amax = _mm512_reduce_max_ps(m);
        const float db = amax / 127.0f;
        const float inv = db != 0.0f ? 1.0f / db : 0.0f;
        const __m512 vi = _mm512_set1_ps(inv);
        const __m128i q0 = _mm512_cvtsepi32_epi8(round_clamp(_mm512_mul_ps(v0, vi), lo, hi));
        const __m128i q1 = _mm512_cvtsepi32_epi8(round_clamp(_mm512_mul_ps(v1, vi), lo, hi));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * kQ8Block), q0);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * kQ8Block + 16), q1);
        d[b] = db;
    }
}

// ---- MAD: T2 x int8 ---------------------------------------------------------------------------
//
// Contract (twin: ref::gemm_t2): T2 rows, K_pad a multiple of 128, activations zero from k to
// K_pad. One 64-byte load holds two T2 blocks b, b+1; code plane k = (v >> 2k) & 3 holds the codes
// c = w + 1 of columns 32k .. 32k+31 of both blocks, so the activations are first rearranged per
// token (avx512_common.h, permute_t2_pairs) into the matching order
//     pair p, plane k: [x[256p + 32k .. +32) | x[256p + 128 + 32k .. +32)]   (64 bytes)
// and sum_j w_j x_j = sum_j c_j x_j - sum_j x_j. vpmaddubsw(c, x) gives int16 lanes
// c0*x0 + c1*x1 in [-512, 508]; each lane adds four of them per pair, 64 per group of 16 pairs:
// [-32768, 32512], exact in int16. vpmaddwd then widens into int32. An odd last block runs on
// 256-bit vectors against the natural activation order.

namespace {

constexpr int64_t kPairGroup = 16;  // block pairs summed in int16 before widening (see above)
// 2 .. kLowerBelow - 1 tokens go to the level below (avx2: its tiles measured faster there on
// Zen 4, docs/benchmarks.md); its integer sums are the same, exactly.
constexpr int64_t kLowerBelow = 8;
GemmT2Fn g_lower = nullptr;  // the level below's gemm_t2 (set once by register_kernels)

struct Planes {
    __m512i c0, c1, c2, c3;
};

inline Planes unpack(const uint8_t* p) {
    const __m512i m3 = _mm512_set1_epi8(3);
    const __m512i v = _mm512_loadu_si512(p);
    return {_mm512_and_si512(v, m3), _mm512_and_si512(_mm512_srli_epi16(v, 2), m3),
            _mm512_and_si512(_mm512_srli_epi16(v, 4), m3),
            _mm512_and_si512(_mm512_srli_epi16(v, 6), m3)};
}

inline __m512i dot_planes(const Planes& c, const int8_t* xp) {
    __m512i h = _mm512_maddubs_epi16(c.c0, _mm512_loadu_si512(xp));
    h = _mm512_add_epi16(h, _mm512_maddubs_epi16(c.c1, _mm512_loadu_si512(xp + 64)));
    h = _mm512_add_epi16(h, _mm512_maddubs_epi16(c.c2, _mm512_loadu_si512(xp + 128)));
    return _mm512_add_epi16(h, _mm512_maddubs_epi16(c.c3, _mm512_loadu_si512(xp + 192)));
}

// sum c x of one odd last T2 block (natural activation order), 256-bit: int32 lanes.
inline __m256i dot_last_block(const uint8_t* block, const int8_t* x) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block));
    const __m256i* xv = reinterpret_cast<const __m256i*>(x);
    __m256i h = _mm256_maddubs_epi16(_mm256_and_si256(v, m3), _mm256_loadu_si256(xv));
    h = _mm256_add_epi16(h, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 2), m3),
                                                 _mm256_loadu_si256(xv + 1)));
    h = _mm256_add_epi16(h, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), m3),
                                                 _mm256_loadu_si256(xv + 2)));
    h = _mm256_add_epi16(h, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 6), m3),
                                                 _mm256_loadu_si256(xv + 3)));
    return _mm256_madd_epi16(h, _mm256_set1_epi16(1));
}

// R rows x NT tokens: the unpacked codes of each row are shared by the NT tokens, the
// activation loads of each token by the R rows. xp: the tokens' rearranged activations
// (stride xp_stride); x: their natural ones (for an odd last block).
template <int R, int NT>
void tile_t2(const uint8_t* row0, int64_t row_bytes, int64_t n_blocks, const int8_t* xp,
             int64_t xp_stride, const int8_t* x, int64_t x_stride, const int32_t* x_sum,
             int32_t* out, int64_t out_stride) {
    const __m512i ones16 = _mm512_set1_epi16(1);
    __m512i acc[R][NT];
    for (int r = 0; r < R; ++r) {
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_si512();
    }
    const int64_t n_pairs = n_blocks / 2;
    // Prefetch the next R rows, one contiguous stream after these, as many lines per pair as the
    // pair reads (separate per-row prefetch streams halved the DRAM bandwidth on Zen 4).
    const char* next = reinterpret_cast<const char*>(row0 + R * row_bytes);
    for (int64_t p0 = 0; p0 < n_pairs; p0 += kPairGroup) {
        const int64_t p_end = p0 + kPairGroup < n_pairs ? p0 + kPairGroup : n_pairs;
        __m512i h[R][NT];
        for (int r = 0; r < R; ++r) {
            for (int t = 0; t < NT; ++t) h[r][t] = _mm512_setzero_si512();
        }
        for (int64_t p = p0; p < p_end; ++p) {
            for (int r = 0; r < R; ++r) _mm_prefetch(next + (R * p + r) * 64, _MM_HINT_T0);
            for (int r = 0; r < R; ++r) {
                const Planes c = unpack(row0 + r * row_bytes + p * 64);
                for (int t = 0; t < NT; ++t) {
                    h[r][t] = _mm512_add_epi16(h[r][t], dot_planes(c, xp + t * xp_stride + p * 256));
                }
            }
        }
        for (int r = 0; r < R; ++r) {
            for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_add_epi32(acc[r][t], _mm512_madd_epi16(h[r][t], ones16));
        }
    }
    for (int r = 0; r < R; ++r) {
        for (int t = 0; t < NT; ++t) {
            int32_t s = _mm512_reduce_add_epi32(acc[r][t]);
            if (n_blocks % 2) {
                const __m256i last = dot_last_block(row0 + r * row_bytes + (n_blocks - 1) * kT2BlockBytes,
                                                    x + t * x_stride + (n_blocks - 1) * kT2Block);
                s += hsum_i32x8(last);
            }
            out[t * out_stride + r] = s - x_sum[t];
        }
    }
}

template <int R, int NT>
void rows_t2(const T2Matrix& w, const int8_t* xp, int64_t xp_stride, const ActsI8& x, int64_t t0,
             int64_t r_begin, int64_t r_end, int32_t* out, int64_t out_stride) {
    const int64_t row_bytes = w.k_pad / 4;
    const int64_t n_blocks = w.k_pad / kT2Block;
    int64_t r = r_begin;
    for (; r + R <= r_end; r += R) {
        tile_t2<R, NT>(w.codes + r * row_bytes, row_bytes, n_blocks, xp, xp_stride,
                       x.q + t0 * x.stride, x.stride, x.sum + t0, out + (r - r_begin), out_stride);
    }
    for (; r < r_end; ++r) {
        tile_t2<1, NT>(w.codes + r * row_bytes, row_bytes, n_blocks, xp, xp_stride,
                       x.q + t0 * x.stride, x.stride, x.sum + t0, out + (r - r_begin), out_stride);
    }
}

}  // namespace

void gemm_t2(const T2Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end, int32_t* out,
             int64_t out_stride) {
    if (row_begin >= row_end) return;
    if (x.n_tokens > 1 && x.n_tokens < kLowerBelow) {
        g_lower(w, x, row_begin, row_end, out, out_stride);
        return;
    }
    const int64_t xp_stride = w.k_pad;
    int8_t* xp = reinterpret_cast<int8_t*>(kernel_scratch(x.n_tokens * xp_stride));
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        permute_t2_pairs(x.q + t * x.stride, w.k_pad, xp + t * xp_stride);
    }
    if (x.n_tokens == 1) {
        rows_t2<4, 1>(w, xp, xp_stride, x, 0, row_begin, row_end, out, out_stride);
        return;
    }
    // Tiles of 16 rows; tokens in groups of 4 (the last group 1-3), rows 2 at a time (2 x 4
    // int32 and 2 x 4 int16 accumulators fit the 32 registers with the codes).
    constexpr int64_t kTileRows = 16;
    for (int64_t r0 = row_begin; r0 < row_end; r0 += kTileRows) {
        const int64_t r1 = r0 + kTileRows < row_end ? r0 + kTileRows : row_end;
        int32_t* o = out + (r0 - row_begin);
        for (int64_t t = 0; t < x.n_tokens; t += 4) {
            const int64_t nt = x.n_tokens - t < 4 ? x.n_tokens - t : 4;
            const int8_t* xt = xp + t * xp_stride;
            int32_t* ot = o + t * out_stride;
            if (nt == 4) rows_t2<2, 4>(w, xt, xp_stride, x, t, r0, r1, ot, out_stride);
            if (nt == 3) rows_t2<2, 3>(w, xt, xp_stride, x, t, r0, r1, ot, out_stride);
            if (nt == 2) rows_t2<2, 2>(w, xt, xp_stride, x, t, r0, r1, ot, out_stride);
            if (nt == 1) rows_t2<2, 1>(w, xt, xp_stride, x, t, r0, r1, ot, out_stride);
        }
    }
}

// ---- binary: B1 x int8 ------------------------------------------------------------------------
//
// Contract (twin: ref::gemm_b1): bit j of a row set means +1, clear -1; sum = 2 * sum_{bit set} x
// - sum x. Eight bytes of a B1 row are exactly the opmask of its 64 activation bytes (bit j <->
// byte j), so the masked sum is vpmaddubsw(1, x masked) (int16, |.| <= 256) and vpmaddwd.

void gemm_b1(const B1Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end, int32_t* out,
             int64_t out_stride) {
    const int64_t row_bytes = w.k_pad / 8;
    const __m512i ones8 = _mm512_set1_epi8(1);
    const __m512i ones16 = _mm512_set1_epi16(1);
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.stride;
        for (int64_t r = row_begin; r < row_end; ++r) {
            const uint8_t* row = w.bits + r * row_bytes;
            __m512i acc = _mm512_setzero_si512();
            for (int64_t j = 0; j < w.k_pad; j += 64) {
                uint64_t bits;
                std::memcpy(&bits, row + j / 8, 8);
                const __m512i xv = _mm512_maskz_loadu_epi8(static_cast<__mmask64>(bits), xq + j);
                acc = _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(ones8, xv), ones16));
            }
            out[t * out_stride + (r - row_begin)] = 2 * _mm512_reduce_add_epi32(acc) - x.sum[t];
        }
    }
}

// The Q8 output layer stays on the avx2 kernel: a 512-bit version without VNNI measured no faster
// from DRAM and slower from cache on Zen 4.

void register_kernels(KernelTable& table) {
    g_lower = table.gemm_t2;
    table.quantize_i8 = quantize_i8;
    table.quantize_q8 = quantize_q8;
    table.gemm_t2 = gemm_t2;
    table.gemm_b1 = gemm_b1;
}

}  // namespace bitnet::kernels::avx512
