// AVX-512 VNNI integer kernels: ternary MAD on T2, binary B1 and the Q8 output layer with
// vpdpbusd (four u8 x s8 products added into each int32 lane), Cascade Lake / Ice Lake / Zen 4
// class.
//
// Compiled with the avx512 flags plus -mavx512vnni; only reached through the KernelTable after
// cpu_features() confirmed AVX512_VNNI on top of the avx512 level. Everything is in an anonymous
// namespace or in bitnet::kernels::avx512vnni and no standard-library template is instantiated.
// The table starts as the avx512 one (quantization, LUT and float kernels come from below).
// Twins: the functions of the same names in ref/kernels_ref.cpp.
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

namespace bitnet::kernels::avx512vnni {
namespace {

// Sixteen int32 vectors -> one vector of their lane sums, lane L holding the sum of v[order[L]]
// with order = reduce_order() (avx512_common.h): the same shuffle tree one level deeper, 46 ops.
inline __m512i hsum16(const __m512i* v) {
    __m512i t[8];
    for (int i = 0; i < 8; ++i) {
        const __m512i a = v[2 * i], b = v[2 * i + 1];
        t[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
    }
    __m512i u[4];
    for (int i = 0; i < 4; ++i) {
        const __m512i a = t[2 * i], b = t[2 * i + 1];
        u[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
    }
    const __m512i w0 = _mm512_add_epi32(_mm512_unpacklo_epi64(u[0], u[1]), _mm512_unpackhi_epi64(u[0], u[1]));
    const __m512i w1 = _mm512_add_epi32(_mm512_unpacklo_epi64(u[2], u[3]), _mm512_unpackhi_epi64(u[2], u[3]));
    return add_adjacent_i32(w0, w1);
}

// Writes the lane sums of n <= 16 vectors v[i] (the rest must be zero vectors), minus sub[i], to
// dst[i].
inline void store_sums16(const __m512i* v, const int32_t* sub, int n, int32_t* dst) {
    alignas(64) int32_t lanes[16];
    alignas(64) int32_t order[16];
    _mm512_store_si512(lanes, hsum16(v));
    _mm512_store_si512(order, reduce_order());
    for (int l = 0; l < 16; ++l) {
        if (order[l] < n) dst[order[l]] = lanes[l] - sub[order[l]];
    }
}

}  // namespace

// ---- MAD: T2 x int8 ---------------------------------------------------------------------------
//
// Contract (twin: ref::gemm_t2): T2 rows as in kernels_avx512.cpp: a 64-byte load holds blocks
// b, b+1 and the activations are rearranged per token (permute_t2_pairs) to meet its four code
// planes; sum_j w_j x_j = sum_j c_j x_j - sum_j x_j with codes c = w + 1 in {0, 1, 2}.
//
// One token (GEMV): the planes are masked in place instead of shifted down,
//     v & 0x03 = c0,  v & 0x0c = 4 c1,  v & 0x30 = 16 c2,  v & 0xc0 = 64 c3   (all <= 128: u8)
// and vpdpbusd(a_s, v & mask_s, x_plane) accumulates each plane into its own scaled int32
// accumulator; sum c x = a1 + a4 / 4 + a16 / 16 + a64 / 64, exact per lane (every lane holds a
// multiple of its scale; arithmetic shifts). Bound: a lane of a64 gains four products of
// |64 c3 * x| <= 128 * 128 per block pair, so |a64| <= 65536 * K_pad / 256 = 256 K_pad < 2^31 for
// K_pad < 2^23. Per 256 weights and row: 1 load, 4 vpandd, 4 vpdpbusd.
//
// 2 to 15 tokens go to the level below (kLowerBelow). 16 or more (GEMM): codes unpacked with shifts (c in {0, 1, 2}), tiles of 4 rows x 4 tokens:
// per pair and plane the 4 tokens' activation vectors are loaded once and each row's code plane
// feeds 4 vpdpbusd (16 int32 accumulators, |lane| <= 2 * 128 * K_pad / 64). The 16 accumulators'
// lane sums come out of one shuffle tree (hsum16).
//
// An odd last block runs on 256-bit vectors (EVEX vpdpbusd) against the natural activations.

namespace {

constexpr int kGemvRows = 4;   // rows sharing the activation loads in the GEMV
// 2 .. kLowerBelow - 1 tokens go to the level below (its tiles measured faster there on Zen 4:
// kernel_bench --clock thread, docs/benchmarks.md); its integer sums are the same, exactly.
constexpr int64_t kLowerBelow = 16;
GemmT2Fn g_lower = nullptr;  // the level below's gemm_t2 (set once by register_kernels)
constexpr int kTileRows = 4;   // GEMM tile: rows
constexpr int kTileTokens = 4; // GEMM tile: tokens

// One token, 4 rows: the per-row sums sum_j c_j x_j (before the x_sum correction) as vectors
// whose lanes add up to them.
inline void gemv_t2_rows4(const uint8_t* row0, int64_t row_bytes, int64_t n_blocks, const int8_t* xp,
                          const int8_t* x, __m512i* sums) {
    const __m512i m0 = _mm512_set1_epi8(0x03), m1 = _mm512_set1_epi8(0x0c);
    const __m512i m2 = _mm512_set1_epi8(0x30), m3 = _mm512_set1_epi8(static_cast<char>(0xc0));
    // Sixteen named accumulators (four scales x four rows): arrays indexed in a loop made GCC 12
    // spill them to the stack.
    __m512i a1_0 = _mm512_setzero_si512(), a4_0 = a1_0, a16_0 = a1_0, a64_0 = a1_0;
    __m512i a1_1 = a1_0, a4_1 = a1_0, a16_1 = a1_0, a64_1 = a1_0;
    __m512i a1_2 = a1_0, a4_2 = a1_0, a16_2 = a1_0, a64_2 = a1_0;
    __m512i a1_3 = a1_0, a4_3 = a1_0, a16_3 = a1_0, a64_3 = a1_0;
    const uint8_t* r1p = row0 + row_bytes;
    const uint8_t* r2p = r1p + row_bytes;
    const uint8_t* r3p = r2p + row_bytes;
    const int64_t n_pairs = n_blocks / 2;
    // The hardware prefetchers follow four interleaved row streams poorly: fetch the next four
    // rows, which are one contiguous stream after these, four lines per pair (as much as the
    // pair reads).
    const char* next = reinterpret_cast<const char*>(row0 + kGemvRows * row_bytes);
    for (int64_t p = 0; p < n_pairs; ++p) {
        const __m512i x0 = _mm512_loadu_si512(xp + 256 * p);
        const __m512i x1 = _mm512_loadu_si512(xp + 256 * p + 64);
        const __m512i x2 = _mm512_loadu_si512(xp + 256 * p + 128);
        const __m512i x3 = _mm512_loadu_si512(xp + 256 * p + 192);
#define BITNET_VNNI_ROW(ptr, r)                                                          \
    {                                                                                    \
        _mm_prefetch(next + 256 * p + 64 * (r), _MM_HINT_T0);                            \
        const __m512i v = _mm512_loadu_si512((ptr) + 64 * p);                            \
        a1_##r = _mm512_dpbusd_epi32(a1_##r, _mm512_and_si512(v, m0), x0);               \
        a4_##r = _mm512_dpbusd_epi32(a4_##r, _mm512_and_si512(v, m1), x1);               \
        a16_##r = _mm512_dpbusd_epi32(a16_##r, _mm512_and_si512(v, m2), x2);             \
        a64_##r = _mm512_dpbusd_epi32(a64_##r, _mm512_and_si512(v, m3), x3);             \
    }
        BITNET_VNNI_ROW(row0, 0)
        BITNET_VNNI_ROW(r1p, 1)
        BITNET_VNNI_ROW(r2p, 2)
        BITNET_VNNI_ROW(r3p, 3)
#undef BITNET_VNNI_ROW
    }
    const __m512i a1[kGemvRows] = {a1_0, a1_1, a1_2, a1_3};
    const __m512i a4[kGemvRows] = {a4_0, a4_1, a4_2, a4_3};
    const __m512i a16[kGemvRows] = {a16_0, a16_1, a16_2, a16_3};
    const __m512i a64[kGemvRows] = {a64_0, a64_1, a64_2, a64_3};
    for (int r = 0; r < kGemvRows; ++r) {
        __m512i s = _mm512_add_epi32(a1[r], _mm512_srai_epi32(a4[r], 2));
        s = _mm512_add_epi32(s, _mm512_srai_epi32(a16[r], 4));
        s = _mm512_add_epi32(s, _mm512_srai_epi32(a64[r], 6));
        if (n_blocks % 2) {
            const __m256i y0 = _mm256_set1_epi8(0x03), y1 = _mm256_set1_epi8(0x0c);
            const __m256i y2 = _mm256_set1_epi8(0x30), y3 = _mm256_set1_epi8(static_cast<char>(0xc0));
            const int64_t b = n_blocks - 1;
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row0 + r * row_bytes + b * kT2BlockBytes));
            const __m256i* xv = reinterpret_cast<const __m256i*>(x + b * kT2Block);
            const __m256i z = _mm256_setzero_si256();
            __m256i l = _mm256_dpbusd_epi32(z, _mm256_and_si256(v, y0), _mm256_loadu_si256(xv));
            l = _mm256_add_epi32(l, _mm256_srai_epi32(_mm256_dpbusd_epi32(z, _mm256_and_si256(v, y1), _mm256_loadu_si256(xv + 1)), 2));
            l = _mm256_add_epi32(l, _mm256_srai_epi32(_mm256_dpbusd_epi32(z, _mm256_and_si256(v, y2), _mm256_loadu_si256(xv + 2)), 4));
            l = _mm256_add_epi32(l, _mm256_srai_epi32(_mm256_dpbusd_epi32(z, _mm256_and_si256(v, y3), _mm256_loadu_si256(xv + 3)), 6));
            s = _mm512_add_epi32(s, _mm512_castsi256_si512(l));  // upper lanes of the cast: zero
        }
        sums[r] = s;
    }
}

// R rows x NT tokens (R * NT <= 16): the lane-sum vectors of sum_j c_j x_j in sums[r * NT + t].
template <int R, int NT>
void gemm_t2_tile(const uint8_t* row0, int64_t row_bytes, int64_t n_blocks, const int8_t* xp,
                  int64_t xp_stride, const int8_t* x, int64_t x_stride, __m512i* sums) {
    const __m512i m3 = _mm512_set1_epi8(3);
    __m512i acc[R][NT];
    for (int r = 0; r < R; ++r) {
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_si512();
    }
    const int64_t n_pairs = n_blocks / 2;
    for (int64_t p = 0; p < n_pairs; ++p) {
        __m512i v[R];
        for (int r = 0; r < R; ++r) v[r] = _mm512_loadu_si512(row0 + r * row_bytes + 64 * p);
        for (int k = 0; k < 4; ++k) {
            __m512i xv[NT];
            for (int t = 0; t < NT; ++t) xv[t] = _mm512_loadu_si512(xp + t * xp_stride + 256 * p + 64 * k);
            for (int r = 0; r < R; ++r) {
                const __m512i c = k == 0 ? _mm512_and_si512(v[r], m3)
                                         : _mm512_and_si512(_mm512_srli_epi16(v[r], 2 * k), m3);
                for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], c, xv[t]);
            }
        }
    }
    if (n_blocks % 2) {
        const int64_t b = n_blocks - 1;
        const __m256i y3 = _mm256_set1_epi8(3);
        for (int r = 0; r < R; ++r) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row0 + r * row_bytes + b * kT2BlockBytes));
            for (int t = 0; t < NT; ++t) {
                const __m256i* xv = reinterpret_cast<const __m256i*>(x + t * x_stride + b * kT2Block);
                __m256i l = _mm256_setzero_si256();
                for (int k = 0; k < 4; ++k) {
                    const __m256i c = _mm256_and_si256(_mm256_srli_epi16(v, 2 * k), y3);
                    l = _mm256_dpbusd_epi32(l, c, _mm256_loadu_si256(xv + k));
                }
                acc[r][t] = _mm512_add_epi32(acc[r][t], _mm512_castsi256_si512(l));
            }
        }
    }
    for (int r = 0; r < R; ++r) {
        for (int t = 0; t < NT; ++t) sums[r * NT + t] = acc[r][t];
    }
}

// Rows [r_begin, r_end) x tokens [t0, t0 + NT) in tiles of kTileRows rows.
template <int NT>
void gemm_t2_tokens(const T2Matrix& w, const int8_t* xp, int64_t xp_stride, const ActsI8& x,
                    int64_t t0, int64_t r_begin, int64_t r_end, int32_t* out, int64_t out_stride) {
    const int64_t row_bytes = w.k_pad / 4;
    const int64_t n_blocks = w.k_pad / kT2Block;
    const int8_t* xn = x.q + t0 * x.stride;
    for (int64_t r = r_begin; r < r_end; r += kTileRows) {
        const int64_t nr = r_end - r < kTileRows ? r_end - r : kTileRows;
        __m512i sums[16];
        for (auto& s : sums) s = _mm512_setzero_si512();
        const uint8_t* row0 = w.codes + r * row_bytes;
        if (nr == 4) gemm_t2_tile<4, NT>(row0, row_bytes, n_blocks, xp, xp_stride, xn, x.stride, sums);
        if (nr == 3) gemm_t2_tile<3, NT>(row0, row_bytes, n_blocks, xp, xp_stride, xn, x.stride, sums);
        if (nr == 2) gemm_t2_tile<2, NT>(row0, row_bytes, n_blocks, xp, xp_stride, xn, x.stride, sums);
        if (nr == 1) gemm_t2_tile<1, NT>(row0, row_bytes, n_blocks, xp, xp_stride, xn, x.stride, sums);
        alignas(64) int32_t got[16];
        int32_t zero[16] = {};
        store_sums16(sums, zero, static_cast<int>(nr) * NT, got);
        for (int64_t i = 0; i < nr; ++i) {
            for (int t = 0; t < NT; ++t) {
                out[(t0 + t) * out_stride + (r - r_begin) + i] = got[i * NT + t] - x.sum[t0 + t];
            }
        }
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
    const int64_t row_bytes = w.k_pad / 4;
    const int64_t n_blocks = w.k_pad / kT2Block;
    if (x.n_tokens == 1) {
        // Groups of 16 rows: four 4-row GEMV tiles, then one shuffle tree for the 16 sums.
        for (int64_t r = row_begin; r < row_end; r += 16) {
            const int64_t nr = row_end - r < 16 ? row_end - r : 16;
            __m512i sums[16];
            int64_t i = 0;
            for (; i + kGemvRows <= nr; i += kGemvRows) {
                gemv_t2_rows4(w.codes + (r + i) * row_bytes, row_bytes, n_blocks, xp, x.q, sums + i);
            }
            for (; i < nr; ++i) {
                gemm_t2_tile<1, 1>(w.codes + (r + i) * row_bytes, row_bytes, n_blocks, xp, xp_stride,
                                   x.q, x.stride, sums + i);
            }
            for (; i < 16; ++i) sums[i] = _mm512_setzero_si512();
            int32_t sub[16];
            for (auto& s : sub) s = x.sum[0];
            store_sums16(sums, sub, static_cast<int>(nr), out + (r - row_begin));
        }
        return;
    }
    // Tiles of 16 rows x all tokens in groups of 4 (the last group 1-3): a tile's codes stay in L1
    // while every token group passes over them.
    for (int64_t r0 = row_begin; r0 < row_end; r0 += 16) {
        const int64_t r1 = r0 + 16 < row_end ? r0 + 16 : row_end;
        for (int64_t t = 0; t < x.n_tokens; t += kTileTokens) {
            const int64_t nt = x.n_tokens - t < kTileTokens ? x.n_tokens - t : kTileTokens;
            const int8_t* xt = xp + t * xp_stride;
            int32_t* o = out + (r0 - row_begin);
            if (nt == 4) gemm_t2_tokens<4>(w, xt, xp_stride, x, t, r0, r1, o - r0 + r0, out_stride);
            if (nt == 3) gemm_t2_tokens<3>(w, xt, xp_stride, x, t, r0, r1, o, out_stride);
            if (nt == 2) gemm_t2_tokens<2>(w, xt, xp_stride, x, t, r0, r1, o, out_stride);
            if (nt == 1) gemm_t2_tokens<1>(w, xt, xp_stride, x, t, r0, r1, o, out_stride);
        }
    }
}

// ---- binary: B1 x int8 ------------------------------------------------------------------------
//
// Contract (twin: ref::gemm_b1): as in kernels_avx512.cpp, eight bytes of a B1 row are the opmask
// of 64 activation bytes; vpdpbusd(acc, 1, x masked) adds the masked values four to a lane
// (|lane| <= 128 * K_pad / 64). sum = 2 * sum_{bit set} x - sum x.

void gemm_b1(const B1Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end, int32_t* out,
             int64_t out_stride) {
    const int64_t row_bytes = w.k_pad / 8;
    const __m512i ones8 = _mm512_set1_epi8(1);
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.stride;
        for (int64_t r = row_begin; r < row_end; ++r) {
            const uint8_t* row = w.bits + r * row_bytes;
            __m512i acc = _mm512_setzero_si512();
            for (int64_t j = 0; j < w.k_pad; j += 64) {
                uint64_t bits;
                std::memcpy(&bits, row + j / 8, 8);
                const __m512i xv = _mm512_maskz_loadu_epi8(static_cast<__mmask64>(bits), xq + j);
                acc = _mm512_dpbusd_epi32(acc, ones8, xv);
            }
            out[t * out_stride + (r - row_begin)] = 2 * _mm512_reduce_add_epi32(acc) - x.sum[t];
        }
    }
}

// ---- Q8 output layer --------------------------------------------------------------------------
//
// gemm_q8 (twin: ref::gemm_q8): per block of 32, w ^ 0x80 = w + 128 in [1, 255] as u8, so
// vpdpbusd(w ^ 0x80, x) = sum w x + 128 sum x per int32 lane of four products (|lane| <= 4 * 255
// * 127: exact), and vpdpbusd(1, x) << 7 is the lane's 128 sum x: their difference is the lane's
// exact share of the block's dot product (|.| <= 4 * 127 * 127 < 2^24, exact in float). The lanes
// are converted and accumulated with one FMA by the block's scale product d_w * d_x, as in the avx2
// twin: the same terms, reassociated (float rounding only). Two rows share each activation block
// and the next two rows are prefetched as one contiguous stream (one stream per row left DRAM
// bandwidth 25% short on Zen 4). A row's value depends only on its own row and token.

namespace {

inline __m256i q8_lanes(const int8_t* w, __m256i xv, __m256i corr) {
    const __m256i a = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)),
                                       _mm256_set1_epi8(static_cast<char>(0x80)));
    return _mm256_sub_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), a, xv), corr);
}

inline float hsum_f32x8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

}  // namespace

void gemm_q8(const Q8Matrix& w, const ActsQ8& x, int64_t row_begin, int64_t row_end, float* out,
             int64_t out_stride) {
    const int64_t n_blocks = w.n_cols / kQ8Block;
    const __m256i ones = _mm256_set1_epi8(1);
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.n_cols;
        const float* xd = x.d + t * n_blocks;
        int64_t r = row_begin;
        for (; r + 2 <= row_end; r += 2) {
            const int8_t* w0 = w.q + r * w.n_cols;
            const int8_t* w1 = w0 + w.n_cols;
            const float* d0 = w.d + r * n_blocks;
            const float* d1 = d0 + n_blocks;
            __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
            const char* next = reinterpret_cast<const char*>(w1 + w.n_cols);
            for (int64_t b = 0; b < n_blocks; ++b) {
                _mm_prefetch(next + b * 64, _MM_HINT_T0);
                const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * kQ8Block));
                const __m256i c = _mm256_slli_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, xv), 7);
                const __m256i i0 = q8_lanes(w0 + b * kQ8Block, xv, c);
                const __m256i i1 = q8_lanes(w1 + b * kQ8Block, xv, c);
                acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d0[b] * xd[b]), _mm256_cvtepi32_ps(i0), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d1[b] * xd[b]), _mm256_cvtepi32_ps(i1), acc1);
            }
            out[t * out_stride + (r - row_begin)] = hsum_f32x8(acc0);
            out[t * out_stride + (r + 1 - row_begin)] = hsum_f32x8(acc1);
        }
        for (; r < row_end; ++r) {
            const int8_t* w0 = w.q + r * w.n_cols;
            const float* d0 = w.d + r * n_blocks;
            __m256 acc0 = _mm256_setzero_ps();
            for (int64_t b = 0; b < n_blocks; ++b) {
                const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * kQ8Block));
                const __m256i c = _mm256_slli_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, xv), 7);
                acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d0[b] * xd[b]), _mm256_cvtepi32_ps(q8_lanes(w0 + b * kQ8Block, xv, c)), acc0);
            }
            out[t * out_stride + (r - row_begin)] = hsum_f32x8(acc0);
        }
    }
}

// The Q4H pre-pass of the exact-top-k output layer stays on the avx2 kernel: a 512-bit VNNI twin
// was 1.6x faster from cache but 12% slower streaming from DRAM on Zen 4, where a 2B4T pre-pass
// (185 MB) always comes from.

void register_kernels(KernelTable& table) {
    g_lower = table.gemm_t2;
    table.gemm_t2 = gemm_t2;
    table.gemm_b1 = gemm_b1;
    table.gemm_q8 = gemm_q8;
}

}  // namespace bitnet::kernels::avx512vnni
