// AVX2 integer kernels: int8 activations times ternary (MAD and LUT), binary and Q8 weights.
//
// Compiled with -mavx2 -mfma -mf16c; only reached through the KernelTable after cpu_features()
// confirmed AVX2, FMA, F16C and OS support. Everything here is in an anonymous namespace or in
// bitnet::kernels::avx2, and no standard-library template is instantiated, so no function
// compiled with AVX2 can be merged by the linker into baseline code. Each kernel's scalar twin
// (the semantics) is the function of the same name in ref/kernels_ref.cpp.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/isa_tables.h"

namespace bitnet::kernels::avx2 {
namespace {

inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

inline float hsum_f32(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Quantizes 8 floats: NaN -> 0, clamp to [lo, hi], round half to even (the current rounding
// mode, round-to-nearest-even by default, as std::nearbyint in the reference).
inline __m256i round_clamp(__m256 v, __m256 lo, __m256 hi) {
    v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    return _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_CUR_DIRECTION));
}

// Packs 32 int32 (four vectors, each already in int8 range) into 32 int8 in order.
inline __m256i pack_i32x32(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i ab = _mm256_packs_epi32(a, b);  // lanes: a0-3 b0-3 | a4-7 b4-7
    const __m256i cd = _mm256_packs_epi32(c, d);
    const __m256i abcd = _mm256_packs_epi16(ab, cd);  // a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7
    return _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Sums the int8 values of v into 8 int32 lanes.
inline __m256i sum_i8(__m256i v) {
    const __m256i ones8 = _mm256_set1_epi8(1);
    const __m256i ones16 = _mm256_set1_epi16(1);
    // maddubs(unsigned 1, signed v): pairs of int8 into int16, exact.
    return _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16);
}

}  // namespace

// ---- activation quantization ------------------------------------------------------------------

void quantize_i8(const float* x, int64_t n, int64_t n_pad, int8_t* q, float* scale, int32_t* sum) {
    const __m256 sign_mask = _mm256_set1_ps(-0.0f);
    __m256 vmax = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        // max_ps returns its second operand when either is NaN: NaN inputs are skipped.
        vmax = _mm256_max_ps(_mm256_andnot_ps(sign_mask, _mm256_loadu_ps(x + i)), vmax);
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, vmax);
    float amax = 0.0f;
    for (float v : lanes) amax = v > amax ? v : amax;
    for (; i < n; ++i) {
        const float a = x[i] < 0.0f ? -x[i] : x[i];
        amax = a > amax ? a : amax;  // false for NaN: skipped
    }
    const float s = 127.0f / (amax > 1e-5f ? amax : 1e-5f);

    const __m256 vs = _mm256_set1_ps(s);
    const __m256 lo = _mm256_set1_ps(-128.0f);
    const __m256 hi = _mm256_set1_ps(127.0f);
    __m256i vsum = _mm256_setzero_si256();
    i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256i a = round_clamp(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs), lo, hi);
        const __m256i b = round_clamp(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vs), lo, hi);
        const __m256i c = round_clamp(_mm256_mul_ps(_mm256_loadu_ps(x + i + 16), vs), lo, hi);
        const __m256i d = round_clamp(_mm256_mul_ps(_mm256_loadu_ps(x + i + 24), vs), lo, hi);
        const __m256i packed = pack_i32x32(a, b, c, d);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), packed);
        vsum = _mm256_add_epi32(vsum, sum_i8(packed));
    }
    int32_t total = hsum_i32(vsum);
    if (i < n) {
        // The tail goes through the same vector code on a zero-padded copy.
        alignas(32) float tail[32] = {};
        std::memcpy(tail, x + i, static_cast<size_t>(n - i) * sizeof(float));
        const __m256i a = round_clamp(_mm256_mul_ps(_mm256_load_ps(tail), vs), lo, hi);
        const __m256i b = round_clamp(_mm256_mul_ps(_mm256_load_ps(tail + 8), vs), lo, hi);
        const __m256i c = round_clamp(_mm256_mul_ps(_mm256_load_ps(tail + 16), vs), lo, hi);
        const __m256i d = round_clamp(_mm256_mul_ps(_mm256_load_ps(tail + 24), vs), lo, hi);
        const __m256i packed = pack_i32x32(a, b, c, d);
        alignas(32) int8_t out[32];
        _mm256_store_si256(reinterpret_cast<__m256i*>(out), packed);
        std::memcpy(q + i, out, static_cast<size_t>(n - i));
        total += hsum_i32(sum_i8(packed));  // the zero padding adds 0
    }
    if (n_pad > n) std::memset(q + n, 0, static_cast<size_t>(n_pad - n));
    *scale = s;
    *sum = total;
}

// ---- MAD: T2 x int8 ---------------------------------------------------------------------------
//
// Contract (twin: ref::gemm_t2): T2 rows, K_pad a multiple of 128, activations padded with zeros
// to K_pad. Per 32-byte block, code plane k = (byte >> 2k) & 3 holds the codes c = w + 1 in
// {0, 1, 2} of columns 32k .. 32k+31, so sum_j w_j x_j = sum_j c_j x_j - sum_j x_j.
// maddubs(c, x) gives int16 lanes c0*x0 + c1*x1 in [-512, 508]; the four planes of kT2Group = 16
// blocks add 64 of them into an int16 accumulator, in [-32768, 32512]: exact. Then madd widens
// to int32.

namespace {

constexpr int64_t kT2Group = 16;  // blocks summed in int16 before widening (see above)

// Codes of one block's four planes.
struct Planes {
    __m256i c0, c1, c2, c3;
};

inline Planes unpack_t2(const uint8_t* block) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block));
    return {_mm256_and_si256(v, m3), _mm256_and_si256(_mm256_srli_epi16(v, 2), m3),
            _mm256_and_si256(_mm256_srli_epi16(v, 4), m3),
            _mm256_and_si256(_mm256_srli_epi16(v, 6), m3)};
}


// One token, four rows at a time: the activation loads are shared by the rows. The four planes'
// maddubs results go straight into int16 accumulators, widened to int32 every kT2Group blocks.
void gemv_t2_rows4(const uint8_t* r0, int64_t row_bytes, int64_t n_blocks, const int8_t* x,
                   int32_t x_sum, int32_t* out) {
    const uint8_t* r1 = r0 + row_bytes;
    const uint8_t* r2 = r1 + row_bytes;
    const uint8_t* r3 = r2 + row_bytes;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i ones16 = _mm256_set1_epi16(1);
    // The hardware prefetchers follow four interleaved row streams poorly (each crosses pages
    // often): fetch the next group of four rows, which is contiguous, two lines per block.
    const char* next = reinterpret_cast<const char*>(r0 + 4 * row_bytes);
    for (int64_t b0 = 0; b0 < n_blocks; b0 += kT2Group) {
        const int64_t b_end = b0 + kT2Group < n_blocks ? b0 + kT2Group : n_blocks;
        __m256i h0 = _mm256_setzero_si256(), h1 = h0, h2 = h0, h3 = h0;
        for (int64_t b = b0; b < b_end; ++b) {
            _mm_prefetch(next + b * 128, _MM_HINT_T0);
            _mm_prefetch(next + b * 128 + 64, _MM_HINT_T0);
            const __m256i* xv = reinterpret_cast<const __m256i*>(x + b * kT2Block);
            const __m256i x0 = _mm256_loadu_si256(xv);
            const __m256i x1 = _mm256_loadu_si256(xv + 1);
            const __m256i x2 = _mm256_loadu_si256(xv + 2);
            const __m256i x3 = _mm256_loadu_si256(xv + 3);
            const int64_t off = b * kT2BlockBytes;
#define BITNET_T2_ROW(ptr, h)                                                                     \
    {                                                                                             \
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>((ptr) + off));      \
        h = _mm256_add_epi16(h, _mm256_maddubs_epi16(_mm256_and_si256(v, m3), x0));               \
        h = _mm256_add_epi16(h, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 2), m3), x1)); \
        h = _mm256_add_epi16(h, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), m3), x2)); \
        h = _mm256_add_epi16(h, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 6), m3), x3)); \
    }
            BITNET_T2_ROW(r0, h0)
            BITNET_T2_ROW(r1, h1)
            BITNET_T2_ROW(r2, h2)
            BITNET_T2_ROW(r3, h3)
#undef BITNET_T2_ROW
        }
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(h0, ones16));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(h1, ones16));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(h2, ones16));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(h3, ones16));
    }
    out[0] = hsum_i32(a0) - x_sum;
    out[1] = hsum_i32(a1) - x_sum;
    out[2] = hsum_i32(a2) - x_sum;
    out[3] = hsum_i32(a3) - x_sum;
}

// One row, NT tokens at a time: the unpacked codes are shared by the tokens; int16 accumulators
// as in gemv_t2_rows4.
template <int NT>
void gemm_t2_row(const uint8_t* row, int64_t n_blocks, const int8_t* x, int64_t x_stride,
                 const int32_t* x_sum, int32_t* out, int64_t out_stride) {
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256i acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_si256();
    for (int64_t b0 = 0; b0 < n_blocks; b0 += kT2Group) {
        const int64_t b_end = b0 + kT2Group < n_blocks ? b0 + kT2Group : n_blocks;
        __m256i h[NT];
        for (int t = 0; t < NT; ++t) h[t] = _mm256_setzero_si256();
        for (int64_t b = b0; b < b_end; ++b) {
            const Planes p = unpack_t2(row + b * kT2BlockBytes);
            for (int t = 0; t < NT; ++t) {
                const __m256i* xv = reinterpret_cast<const __m256i*>(x + t * x_stride + b * kT2Block);
                h[t] = _mm256_add_epi16(h[t], _mm256_maddubs_epi16(p.c0, _mm256_loadu_si256(xv)));
                h[t] = _mm256_add_epi16(h[t], _mm256_maddubs_epi16(p.c1, _mm256_loadu_si256(xv + 1)));
                h[t] = _mm256_add_epi16(h[t], _mm256_maddubs_epi16(p.c2, _mm256_loadu_si256(xv + 2)));
                h[t] = _mm256_add_epi16(h[t], _mm256_maddubs_epi16(p.c3, _mm256_loadu_si256(xv + 3)));
            }
        }
        for (int t = 0; t < NT; ++t) acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(h[t], ones16));
    }
    for (int t = 0; t < NT; ++t) out[t * out_stride] = hsum_i32(acc[t]) - x_sum[t];
}

}  // namespace

void gemm_t2(const T2Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end, int32_t* out,
             int64_t out_stride) {
    const int64_t row_bytes = w.k_pad / 4;
    const int64_t n_blocks = w.k_pad / kT2Block;
    if (x.n_tokens == 1) {
        int64_t r = row_begin;
        for (; r + 4 <= row_end; r += 4) {
            gemv_t2_rows4(w.codes + r * row_bytes, row_bytes, n_blocks, x.q, x.sum[0],
                          out + (r - row_begin));
        }
        for (; r < row_end; ++r) {
            gemm_t2_row<1>(w.codes + r * row_bytes, n_blocks, x.q, x.stride, x.sum,
                           out + (r - row_begin), out_stride);
        }
        return;
    }
    // Many tokens: tiles of rows x groups of 4 tokens, so that both the tile's codes and the
    // group's activations stay in L1 while they are combined.
    // 16 rows measured best on the 2B4T shapes (K = 2560 and 6912).
    constexpr int64_t kTileRows = 16;
    for (int64_t r0 = row_begin; r0 < row_end; r0 += kTileRows) {
        const int64_t r1 = r0 + kTileRows < row_end ? r0 + kTileRows : row_end;
        for (int64_t t = 0; t < x.n_tokens; t += 4) {
            const int64_t nt = x.n_tokens - t < 4 ? x.n_tokens - t : 4;
            const int8_t* xq = x.q + t * x.stride;
            for (int64_t r = r0; r < r1; ++r) {
                const uint8_t* row = w.codes + r * row_bytes;
                int32_t* o = out + (r - row_begin) + t * out_stride;
                if (nt == 4) gemm_t2_row<4>(row, n_blocks, xq, x.stride, x.sum + t, o, out_stride);
                if (nt == 3) gemm_t2_row<3>(row, n_blocks, xq, x.stride, x.sum + t, o, out_stride);
                if (nt == 2) gemm_t2_row<2>(row, n_blocks, xq, x.stride, x.sum + t, o, out_stride);
                if (nt == 1) gemm_t2_row<1>(row, n_blocks, xq, x.stride, x.sum + t, o, out_stride);
            }
        }
    }
}

// ---- binary: B1 x int8 ------------------------------------------------------------------------
//
// Contract (twin: ref::gemm_b1): bit j of a row set means +1, clear -1, over the first k columns;
// columns k .. k_pad have zero activations, so sum_{j<k} w_j x_j = 2 * sum_{bit set} x_j - sum x.
// The masked sums go through maddubs(1, x & mask) (int16, |.| <= 256) and madd into int32.

void gemm_b1(const B1Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end, int32_t* out,
             int64_t out_stride) {
    const int64_t row_bytes = w.k_pad / 8;
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
    const __m256i ones8 = _mm256_set1_epi8(1);
    const __m256i ones16 = _mm256_set1_epi16(1);
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.stride;
        for (int64_t r = row_begin; r < row_end; ++r) {
            const uint8_t* row = w.bits + r * row_bytes;
            __m256i acc = _mm256_setzero_si256();
            for (int64_t j = 0; j < w.k_pad; j += 32) {
                int32_t word;
                std::memcpy(&word, row + j / 8, 4);
                const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(word), spread);
                const __m256i mask = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
                const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + j));
                const __m256i s = _mm256_maddubs_epi16(ones8, _mm256_and_si256(xv, mask));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(s, ones16));
            }
            out[t * out_stride + (r - row_begin)] = 2 * hsum_i32(acc) - x.sum[t];
        }
    }
}

// ---- LUT: L2 x tables -------------------------------------------------------------------------
//
// build_lut (twin: ref::build_lut): the 16 int16 entries of a pair are a * ca + b * cb with
// ca, cb in {-1, 0, +1} (sign_epi16), split into low and high bytes.
//
// gemm_l2 (twin: ref::gemm_l2): one 32-byte chunk holds the 4-bit indices of 32 rows for two
// column pairs; vpshufb looks the low and the high bytes of each entry up in the pair's table
// (broadcast to both 128-bit lanes: lane 0 serves rows 0..15, lane 1 rows 16..31), and
// unpacklo/hi_epi8(low, high) rebuilds the int16 entries: rows 0-7 | 16-23 and 8-15 | 24-31.
// int16 accumulators gain at most 2 * 256 per chunk: flushed to int32 every 32 chunks
// (32 * 512 = 16384 < 32767).

void build_lut(const ActsI8& x, int64_t k_pad, uint8_t* tables) {
    const int64_t stride = lut_bytes(k_pad);
    const __m256i ca = _mm256_setr_epi16(-1, -1, -1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0);
    const __m256i cb = _mm256_setr_epi16(-1, 0, 1, -1, 0, 1, -1, 0, 1, 0, 0, 0, 0, 0, 0, 0);
    // In each lane: low bytes of the 8 entries, then their high bytes.
    const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,  //
                                           0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.stride;
        uint8_t* tab = tables + t * stride;
        for (int64_t p = 0; p < k_pad / 2; ++p) {
            const __m256i a = _mm256_set1_epi16(xq[2 * p]);
            const __m256i b = _mm256_set1_epi16(xq[2 * p + 1]);
            const __m256i e = _mm256_add_epi16(_mm256_sign_epi16(a, ca), _mm256_sign_epi16(b, cb));
            // quads: lo0-7 hi0-7 | lo8-15 hi8-15  ->  lo0-7 lo8-15 hi0-7 hi8-15
            const __m256i bytes = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(e, split),
                                                           _MM_SHUFFLE(3, 1, 2, 0));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(tab + p * kLutPairBytes), bytes);
        }
    }
}

namespace {

// Sums of one 32-row tile for NT tokens into out32[t][32] (row order 0..31).
template <int NT>
void gemm_l2_tile(const uint8_t* tile, int64_t n_chunks, const uint8_t* const* tabs,
                  int32_t (*out32)[32]) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i wide[NT][4];
    for (int t = 0; t < NT; ++t) {
        for (int i = 0; i < 4; ++i) wide[t][i] = _mm256_setzero_si256();
    }
    for (int64_t c0 = 0; c0 < n_chunks; c0 += 32) {
        const int64_t c_end = c0 + 32 < n_chunks ? c0 + 32 : n_chunks;
        __m256i acc[NT][2];
        for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_si256();
        for (int64_t c = c0; c < c_end; ++c) {
            // A tile is one linear stream; fetch 1 KiB ahead (the next tile at the end).
            _mm_prefetch(reinterpret_cast<const char*>(tile + c * kL2ChunkBytes) + 1024, _MM_HINT_T0);
            const __m256i v =
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + c * kL2ChunkBytes));
            const __m256i ia = _mm256_and_si256(v, m4);
            const __m256i ib = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            for (int t = 0; t < NT; ++t) {
                const uint8_t* e = tabs[t] + 2 * c * kLutPairBytes;
                const __m256i a_lo = _mm256_broadcastsi128_si256(
                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(e)));
                const __m256i a_hi = _mm256_broadcastsi128_si256(
                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(e + 16)));
                const __m256i b_lo = _mm256_broadcastsi128_si256(
                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(e + 32)));
                const __m256i b_hi = _mm256_broadcastsi128_si256(
                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(e + 48)));
                const __m256i la = _mm256_shuffle_epi8(a_lo, ia);
                const __m256i ha = _mm256_shuffle_epi8(a_hi, ia);
                const __m256i lb = _mm256_shuffle_epi8(b_lo, ib);
                const __m256i hb = _mm256_shuffle_epi8(b_hi, ib);
                acc[t][0] = _mm256_add_epi16(acc[t][0], _mm256_add_epi16(_mm256_unpacklo_epi8(la, ha),
                                                                         _mm256_unpacklo_epi8(lb, hb)));
                acc[t][1] = _mm256_add_epi16(acc[t][1], _mm256_add_epi16(_mm256_unpackhi_epi8(la, ha),
                                                                         _mm256_unpackhi_epi8(lb, hb)));
            }
        }
        for (int t = 0; t < NT; ++t) {
            // acc[0]: rows 0-7 | 16-23, acc[1]: rows 8-15 | 24-31.
            wide[t][0] = _mm256_add_epi32(wide[t][0], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc[t][0])));
            wide[t][1] = _mm256_add_epi32(wide[t][1], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc[t][1])));
            wide[t][2] = _mm256_add_epi32(wide[t][2], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(acc[t][0], 1)));
            wide[t][3] = _mm256_add_epi32(wide[t][3], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(acc[t][1], 1)));
        }
    }
    for (int t = 0; t < NT; ++t) {
        for (int i = 0; i < 4; ++i) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out32[t] + 8 * i), wide[t][i]);
        }
    }
}

}  // namespace

void gemm_l2(const L2Matrix& w, const LutTables& x, int64_t row_begin, int64_t row_end,
             int32_t* out, int64_t out_stride) {
    const int64_t n_chunks = w.k_pad / 4;
    const int64_t tile_bytes = n_chunks * kL2ChunkBytes;
    for (int64_t r0 = row_begin; r0 < row_end; r0 += kL2TileRows) {
        const uint8_t* tile = w.data + (r0 / kL2TileRows) * tile_bytes;
        const int64_t n_rows = row_end - r0 < kL2TileRows ? row_end - r0 : kL2TileRows;
        for (int64_t t = 0; t < x.n_tokens;) {
            const int64_t nt = x.n_tokens - t >= 4 ? 4 : x.n_tokens - t;
            const uint8_t* tabs[4];
            for (int64_t i = 0; i < nt; ++i) tabs[i] = x.data + (t + i) * x.stride;
            alignas(32) int32_t sums[4][32];
            if (nt == 4) gemm_l2_tile<4>(tile, n_chunks, tabs, sums);
            if (nt == 3) gemm_l2_tile<3>(tile, n_chunks, tabs, sums);
            if (nt == 2) gemm_l2_tile<2>(tile, n_chunks, tabs, sums);
            if (nt == 1) gemm_l2_tile<1>(tile, n_chunks, tabs, sums);
            for (int64_t i = 0; i < nt; ++i) {
                std::memcpy(out + (t + i) * out_stride + (r0 - row_begin), sums[i],
                            static_cast<size_t>(n_rows) * sizeof(int32_t));
            }
            t += nt;
        }
    }
}

// ---- Q8 output layer --------------------------------------------------------------------------
//
// quantize_q8 (twin: ref::quantize_q8): bit-identical (same float operations per block).
// gemm_q8 (twin: ref::gemm_q8): per block of 32, maddubs(|w|, sign(x, w)) gives int16 pairs
// (|.| <= 2 * 127 * 127 = 32258, exact) and madd widens to int32; the block's float scale
// multiplies it into 8 float lanes, summed at the end (reassociated float sum).

void quantize_q8(const float* x, int64_t n, int8_t* q, float* d) {
    const __m256 sign_mask = _mm256_set1_ps(-0.0f);
    const __m256 lo = _mm256_set1_ps(-127.0f);
    const __m256 hi = _mm256_set1_ps(127.0f);
    for (int64_t b = 0; b < n / kQ8Block; ++b) {
        const float* xb = x + b * kQ8Block;
        const __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
        const __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
        __m256 m = _mm256_max_ps(_mm256_andnot_ps(sign_mask, v0), _mm256_setzero_ps());
        m = _mm256_max_ps(_mm256_andnot_ps(sign_mask, v1), m);
        m = _mm256_max_ps(_mm256_andnot_ps(sign_mask, v2), m);
        m = _mm256_max_ps(_mm256_andnot_ps(sign_mask, v3), m);
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, m);
        float amax = 0.0f;
        for (float l : lanes) amax = l > amax ? l : amax;
        const float db = amax / 127.0f;
        const float inv = db != 0.0f ? 1.0f / db : 0.0f;
        const __m256 vi = _mm256_set1_ps(inv);
        const __m256i packed = pack_i32x32(round_clamp(_mm256_mul_ps(v0, vi), lo, hi),
                                           round_clamp(_mm256_mul_ps(v1, vi), lo, hi),
                                           round_clamp(_mm256_mul_ps(v2, vi), lo, hi),
                                           round_clamp(_mm256_mul_ps(v3, vi), lo, hi));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kQ8Block), packed);
        d[b] = db;
    }
}

namespace {

inline __m256i dot_q8_block(__m256i w, __m256i x) {
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

}  // namespace

void gemm_q8(const Q8Matrix& w, const ActsQ8& x, int64_t row_begin, int64_t row_end, float* out,
             int64_t out_stride) {
    const int64_t n_blocks = w.n_cols / kQ8Block;
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.n_cols;
        const float* xd = x.d + t * n_blocks;
        int64_t r = row_begin;
        for (; r + 2 <= row_end; r += 2) {
            // Two rows share each activation block.
            const int8_t* w0 = w.q + r * w.n_cols;
            const int8_t* w1 = w0 + w.n_cols;
            const float* d0 = w.d + r * n_blocks;
            const float* d1 = d0 + n_blocks;
            __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
            // Prefetch the next pair of rows (contiguous): one line per block of each row.
            const char* next = reinterpret_cast<const char*>(w1 + w.n_cols);
            for (int64_t b = 0; b < n_blocks; ++b) {
                _mm_prefetch(next + b * 64, _MM_HINT_T0);
                const __m256i xv =
                    _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * kQ8Block));
                const __m256i i0 = dot_q8_block(
                    _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + b * kQ8Block)), xv);
                const __m256i i1 = dot_q8_block(
                    _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w1 + b * kQ8Block)), xv);
                acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d0[b] * xd[b]), _mm256_cvtepi32_ps(i0), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d1[b] * xd[b]), _mm256_cvtepi32_ps(i1), acc1);
            }
            out[t * out_stride + (r - row_begin)] = hsum_f32(acc0);
            out[t * out_stride + (r + 1 - row_begin)] = hsum_f32(acc1);
        }
        for (; r < row_end; ++r) {
            const int8_t* w0 = w.q + r * w.n_cols;
            const float* d0 = w.d + r * n_blocks;
            __m256 acc0 = _mm256_setzero_ps();
            for (int64_t b = 0; b < n_blocks; ++b) {
                const __m256i xv =
                    _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * kQ8Block));
                const __m256i i0 = dot_q8_block(
                    _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + b * kQ8Block)), xv);
                acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d0[b] * xd[b]), _mm256_cvtepi32_ps(i0), acc0);
            }
            out[t * out_stride + (r - row_begin)] = hsum_f32(acc0);
        }
    }
}

void register_float_kernels(KernelTable& table);  // ops_avx2.cpp
void register_attention_kernels(KernelTable& table);  // attention_avx2.cpp
void register_q4h(KernelTable& table);             // q4h_avx2.cpp

void register_kernels(KernelTable& table) {
    table.quantize_i8 = quantize_i8;
    table.gemm_t2 = gemm_t2;
    table.gemm_b1 = gemm_b1;
    table.build_lut = build_lut;
    table.gemm_l2 = gemm_l2;
    table.quantize_q8 = quantize_q8;
    table.gemm_q8 = gemm_q8;
    register_float_kernels(table);
    register_attention_kernels(table);
    register_q4h(table);
}

}  // namespace bitnet::kernels::avx2
