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
// gemm_q8 (twin: ref::gemm_q8): a 64-byte chunk holds blocks 2c and 2c+1 of a row, so int32 lanes
// 0-7 of a vpdpbusd belong to block 2c and lanes 8-15 to block 2c+1. w ^ 0x80 = w + 128 in
// [0, 255] as u8, so vpdpbusd(-128 sum x, w ^ 0x80, x) is each lane's exact share of the block's
// dot product sum w x (|lane| <= 4 * 255 * 127 before the correction, < 2^24: exact in float); the
// correction 128 sum x per lane is vpdpbusd(0, 0x80, x), once per token and chunk. The lanes are
// converted and accumulated with one FMA by the block scale product d_w * d_x (each block's
// scales broadcast to its eight lanes): the same terms as the twin, reassociated (float rounding
// only). A last single block runs on the low half with masked loads (the high lanes add 0 * 0).
//
// Tiles of up to 4 rows x 4 tokens: every (row, token) has its own accumulator, so no FMA waits
// on another (one accumulator per row was latency-bound at a quarter of the multiply rate on Zen
// 4), and each chunk of a row is loaded once for all the tile's tokens. Row tiles are the outer
// loop, so a tile's rows stay in L1 while every token group passes over them, and the weights are
// read once per call however many tokens there are; the next tile's rows, one contiguous stream,
// are prefetched while the first token group runs. Each (row, token) value is computed by the
// same sequence of operations whatever tile it is in (chunks in order, then one fixed 16-lane
// sum), so a row's value depends only on its own row and token: the exact-top-k output layer and
// batch invariance rely on that. One token (decode of a single sequence, the exact-top-k
// recomputation) runs the same operations lane for lane on 256-bit halves, two rows at a time
// (q8_gemv): at 512 bits a single thread streamed the 2B4T output layer 20% slower from DRAM.
// Measured on Zen 4 (kernel_bench --family q8, 2b4t output, one thread): 8 tokens 56 -> 102
// GOP/s, 1 token 30.7 -> 31-33 GB/s.

namespace {

constexpr int kQ8TileRows = 4;
constexpr int kQ8TileTokens = 4;
constexpr int kQ8GemvRows = 2;       // one token: rows per pass (4 measured 30% slower on Zen 4)
constexpr int kQ8PrefetchTiles = 2;  // prefetch distance, in tiles of rows

// The broadcast of two consecutive block scales s[0], s[1] to lanes 0-7 and 8-15 (one = true:
// s[0] only, lanes 8-15 zero).
inline __m512 q8_pair_scales(const float* s, bool one) {
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    // _mm_loadl_epi64 is an unaligned 8-byte load (_mm_load_sd would need 8-byte alignment).
    const __m128 v = one ? _mm_load_ss(s) : _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s)));
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v));
}

// Rows [r0, r0 + R) x tokens [t0, t0 + T) into out (row r, token t at out[t * out_stride + r -
// row_base]); prefetch: the next R rows' bytes to fetch while this tile runs (nullptr: none).
template <int R, int T>
void q8_tile(const Q8Matrix& w, const ActsQ8& x, int64_t r0, int64_t t0, int64_t row_base,
             float* out, int64_t out_stride, const char* prefetch) {
    const int64_t n = w.n_cols;
    const int64_t n_blocks = n / kQ8Block;
    const int64_t n_chunks = (n_blocks + 1) / 2;
    const __m512i c80 = _mm512_set1_epi8(static_cast<char>(0x80));
    __m512 acc[R][T];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
    }
    const int8_t* wq = w.q + r0 * n;
    const float* wd = w.d + r0 * n_blocks;
    const int8_t* xq = x.q + t0 * n;
    const float* xd = x.d + t0 * n_blocks;
    for (int64_t c = 0; c < n_chunks; ++c) {
        const bool one = 2 * c + 1 == n_blocks;  // a last single block
        const __mmask64 bytes = one ? 0xffffffffULL : ~0ULL;
        if (prefetch != nullptr) {
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r) _mm_prefetch(prefetch + (c * R + r) * 64, _MM_HINT_T0);
        }
        __m512i wu[R];
        __m512 dw[R];
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
            wu[r] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(bytes, wq + r * n + 64 * c), c80);
            dw[r] = q8_pair_scales(wd + r * n_blocks + 2 * c, one);
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
            const __m512i xv = _mm512_maskz_loadu_epi8(bytes, xq + t * n + 64 * c);
            const __m512i neg = _mm512_sub_epi32(_mm512_setzero_si512(),
                                                 _mm512_dpbusd_epi32(_mm512_setzero_si512(), c80, xv));
            const __m512 dx = q8_pair_scales(xd + t * n_blocks + 2 * c, one);
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r) {
                const __m512i lanes = _mm512_dpbusd_epi32(neg, wu[r], xv);
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lanes), _mm512_mul_ps(dw[r], dx), acc[r][t]);
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) out[(t0 + t) * out_stride + (r0 + r - row_base)] = _mm512_reduce_add_ps(acc[r][t]);
    }
}

template <int H>
struct Half {
    static constexpr int value = H;
};

// One token, R rows, on 256-bit vectors: the same operations lane for lane as q8_tile (lanes 0-7
// of its accumulator are acc_even here, lanes 8-15 acc_odd; the block scale product is the same
// float product, broadcast), so the values are bit-identical; half-width operations leave a single
// thread more room to keep DRAM busy.
template <int R>
void q8_gemv(const Q8Matrix& w, const ActsQ8& x, int64_t r0, int64_t row_base, float* out,
             const char* prefetch) {
    const int64_t n = w.n_cols;
    const int64_t n_blocks = n / kQ8Block;
    const __m256i c80 = _mm256_set1_epi8(static_cast<char>(0x80));
    __m256 acc[R][2];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    const int8_t* wq = w.q + r0 * n;
    const float* wd = w.d + r0 * n_blocks;
    const int8_t* xq = x.q;
    const float* xd = x.d;
    // Block b of every row into acc[.][H] (H = b % 2).
    auto block = [&](int64_t b, auto half) {
        constexpr int H = decltype(half)::value;
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * kQ8Block));
        const __m256i neg = _mm256_sub_epi32(_mm256_setzero_si256(),
                                             _mm256_dpbusd_epi32(_mm256_setzero_si256(), c80, xv));
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
            const __m256i wu = _mm256_xor_si256(
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq + r * n + b * kQ8Block)), c80);
            const __m256i lanes = _mm256_dpbusd_epi32(neg, wu, xv);
            const __m256 s = _mm256_set1_ps(wd[r * n_blocks + b] * xd[b]);
            acc[r][H] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), s, acc[r][H]);
        }
    };
    int64_t b = 0;
    for (; b + 2 <= n_blocks; b += 2) {
        if (prefetch != nullptr) {
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r) _mm_prefetch(prefetch + (b / 2 * R + r) * 64, _MM_HINT_T0);
        }
        block(b, Half<0>{});
        block(b + 1, Half<1>{});
    }
    if (b < n_blocks) block(b, Half<0>{});
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
        const __m512 v = _mm512_insertf32x8(_mm512_castps256_ps512(acc[r][0]), acc[r][1], 1);
        out[r0 + r - row_base] = _mm512_reduce_add_ps(v);
    }
}

template <int R>
void q8_rows(const Q8Matrix& w, const ActsQ8& x, int64_t r0, int64_t row_base, float* out,
             int64_t out_stride, const char* prefetch) {
    int64_t t = 0;
    for (; t + kQ8TileTokens <= x.n_tokens; t += kQ8TileTokens) {
        q8_tile<R, kQ8TileTokens>(w, x, r0, t, row_base, out, out_stride, t == 0 ? prefetch : nullptr);
    }
    const char* pf = t == 0 ? prefetch : nullptr;
    switch (x.n_tokens - t) {
        case 3: q8_tile<R, 3>(w, x, r0, t, row_base, out, out_stride, pf); break;
        case 2: q8_tile<R, 2>(w, x, r0, t, row_base, out, out_stride, pf); break;
        case 1: q8_tile<R, 1>(w, x, r0, t, row_base, out, out_stride, pf); break;
        default: break;
    }
}

// The first byte of the tile of R rows kQ8PrefetchTiles tiles after row r, or nullptr when that
// tile is not all rows of the matrix.
inline const char* q8_ahead(const Q8Matrix& w, int64_t r, int R) {
    const int64_t ahead = r + kQ8PrefetchTiles * R;
    return ahead + R <= w.n_rows ? reinterpret_cast<const char*>(w.q + ahead * w.n_cols) : nullptr;
}

template <int R>
void q8_drive(const Q8Matrix& w, const ActsQ8& x, int64_t row_begin, int64_t row_end, float* out,
              int64_t out_stride) {
    int64_t r = row_begin;
    for (; r + R <= row_end; r += R) q8_rows<R>(w, x, r, row_begin, out, out_stride, q8_ahead(w, r, R));
    switch (row_end - r) {
        case 3: q8_rows<3>(w, x, r, row_begin, out, out_stride, nullptr); break;
        case 2: q8_rows<2>(w, x, r, row_begin, out, out_stride, nullptr); break;
        case 1: q8_rows<1>(w, x, r, row_begin, out, out_stride, nullptr); break;
        default: break;
    }
}

}  // namespace

void gemm_q8(const Q8Matrix& w, const ActsQ8& x, int64_t row_begin, int64_t row_end, float* out,
             int64_t out_stride) {
    if (x.n_tokens == 1) {
        int64_t r = row_begin;
        for (; r + kQ8GemvRows <= row_end; r += kQ8GemvRows) {
            q8_gemv<kQ8GemvRows>(w, x, r, row_begin, out, q8_ahead(w, r, kQ8GemvRows));
        }
        for (; r < row_end; ++r) q8_gemv<1>(w, x, r, row_begin, out, nullptr);
    } else {
        q8_drive<kQ8TileRows>(w, x, row_begin, row_end, out, out_stride);
    }
}

// The Q4H pre-pass of the exact-top-k output layer stays on the avx2 kernel: a 512-bit VNNI twin
// was 1.6x faster from cache but 12% slower streaming from DRAM on Zen 4, where a 2B4T pre-pass
// (185 MB) always comes from.

void register_attention_kernels(KernelTable& table);  // attention_avx512vnni.cpp

void register_kernels(KernelTable& table) {
    g_lower = table.gemm_t2;
    table.gemm_t2 = gemm_t2;
    table.gemm_b1 = gemm_b1;
    table.gemm_q8 = gemm_q8;
    register_attention_kernels(table);
}

}  // namespace bitnet::kernels::avx512vnni
