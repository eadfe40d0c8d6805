// AVX2 twin of the Q4H pre-pass of the exact-top-k output layer (kernels.h, layout Q4H).
//
// Compiled with -mavx2 -mfma -mf16c like kernels_avx2.cpp and registered into the avx2 table by
// it; everything is in an anonymous namespace or in bitnet::kernels::avx2. Twin: ref::gemm_q4h.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/isa_tables.h"

namespace bitnet::kernels::avx2 {

// gemm_q4h (twin: ref::gemm_q4h). One 32-byte load holds two blocks: its low nibbles are columns
// 0..15 of both, its high nibbles columns 16..31, so each token's activations are first
// rearranged per group of four blocks into xp[128 g + 16 k .. +16) = x[32 (4g + k) .. +16) and
// xp[128 g + 64 + 16 k .. +16) = x[32 (4g + k) + 16 .. +16). vpmaddubsw(hi, x) gives int16 pairs
// (|.| <= 2 * 15 * 127, exact) and vpmaddwd int32 lanes; two vphaddd levels turn four pairs of
// blocks into their eight exact sums S_b (lane j: block 2j, lane 4 + j: block 2j + 1), then
// I_b = 16 S_b - 120 sum_b x and each term (fp16(d_w) * d_x) * float(I_b) is the reference's bit
// for bit; only the sum over blocks is reassociated. Blocks past the end are zeros (a zeroed copy
// of the row's tail).

namespace {

// The eight-block lane order of the reduction: lane L holds block kOrder[L].
inline __m256i q4h_order() { return _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7); }

// Exact sums S_b of 8 blocks from nibbles `hi` (8 * 16 bytes) and rearranged activations xp of
// the two groups of four blocks they belong to.
inline __m256i block_sums8(const uint8_t* hi, const int8_t* xp) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i v[4];
    for (int p = 0; p < 4; ++p) {
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi + 32 * p));
        const int8_t* g = xp + 128 * (p / 2) + 32 * (p % 2);
        const __m256i xl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g));
        const __m256i xh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 64));
        const __m256i lo = _mm256_maddubs_epi16(_mm256_and_si256(w, m4), xl);
        const __m256i up = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w, 4), m4), xh);
        v[p] = _mm256_madd_epi16(_mm256_add_epi16(lo, up), ones);
    }
    return _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
}

}  // namespace

void gemm_q4h(const Q4HMatrix& w, const ActsQ8& x, int64_t row_begin, int64_t row_end, float* out,
              int64_t out_stride) {
    const int64_t n_blocks = w.n_cols / kQ8Block;
    const int64_t n_oct = (n_blocks + 7) / 8;  // groups of 8 blocks (the last zero-padded)
    // Per token: xp (n_oct * 256 bytes) then corr (n_oct * 8 int32, 120 * block sums in
    // q4h_order) and dx (n_oct * 8 floats, natural order, 0 past the end).
    const int64_t per_token = n_oct * (256 + 32 + 32);
    uint8_t* scratch = kernel_scratch(x.n_tokens * per_token);
    std::memset(scratch, 0, static_cast<size_t>(x.n_tokens * per_token));
    alignas(32) int32_t order[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(order), q4h_order());
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        int8_t* xp = reinterpret_cast<int8_t*>(scratch + t * per_token);
        int32_t* corr = reinterpret_cast<int32_t*>(scratch + t * per_token + n_oct * 256);
        float* dx = reinterpret_cast<float*>(scratch + t * per_token + n_oct * 288);
        const int8_t* xq = x.q + t * x.n_cols;
        for (int64_t b = 0; b < n_blocks; ++b) {
            std::memcpy(xp + 128 * (b / 4) + 16 * (b % 4), xq + 32 * b, 16);
            std::memcpy(xp + 128 * (b / 4) + 64 + 16 * (b % 4), xq + 32 * b + 16, 16);
            dx[b] = x.d[t * n_blocks + b];
        }
        for (int64_t g = 0; g < n_oct; ++g) {
            for (int l = 0; l < 8; ++l) {
                const int64_t b = 8 * g + order[l];
                int32_t s = 0;
                if (b < n_blocks) {
                    for (int64_t j = 0; j < kQ8Block; ++j) s += xq[32 * b + j];
                }
                corr[8 * g + l] = 120 * s;
            }
        }
    }
    const int64_t row_bytes = w.n_cols / 2;
    const int64_t n_full = n_blocks / 8;
    // The terms of group g of one row: its tail (fewer than 8 blocks) from a zeroed copy.
    auto group_term = [&](const uint8_t* hi, const uint16_t* d16, int64_t g, const uint8_t* tail_hi,
                          const uint16_t* tail_d, const int8_t* xp, const int32_t* corr, const float* dx) {
        const bool full = g < n_full;
        const uint8_t* h = full ? hi + 128 * g : tail_hi;
        const uint16_t* d = full ? d16 + 8 * g : tail_d;
        const __m256i s = block_sums8(h, xp + 256 * g);
        const __m256i ib = _mm256_sub_epi32(
            _mm256_slli_epi32(s, 4), _mm256_load_si256(reinterpret_cast<const __m256i*>(corr + 8 * g)));
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(d)));
        const __m256 sc = _mm256_permutevar8x32_ps(_mm256_mul_ps(dw, _mm256_loadu_ps(dx + 8 * g)), q4h_order());
        return _mm256_mul_ps(sc, _mm256_cvtepi32_ps(ib));
    };
    auto hsum = [](__m256 acc) {
        __m128 v = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        v = _mm_add_ps(v, _mm_movehl_ps(v, v));
        v = _mm_add_ss(v, _mm_movehdup_ps(v));
        return _mm_cvtss_f32(v);
    };
    // Two rows at a time and the next two rows prefetched as one contiguous stream.
    for (int64_t r = row_begin; r < row_end; r += 2) {
        const bool pair = r + 1 < row_end;
        const uint8_t* h0 = w.hi + r * row_bytes;
        const uint8_t* h1 = pair ? h0 + row_bytes : h0;
        const uint16_t* d0 = w.d + r * n_blocks;
        const uint16_t* d1 = pair ? d0 + n_blocks : d0;
        alignas(32) uint8_t tail_hi[2][128] = {};
        alignas(32) uint16_t tail_d[2][8] = {};
        if (n_full < n_oct) {
            const auto nbt = static_cast<size_t>(n_blocks - 8 * n_full);
            std::memcpy(tail_hi[0], h0 + 128 * n_full, 16 * nbt);
            std::memcpy(tail_hi[1], h1 + 128 * n_full, 16 * nbt);
            std::memcpy(tail_d[0], d0 + 8 * n_full, 2 * nbt);
            std::memcpy(tail_d[1], d1 + 8 * n_full, 2 * nbt);
        }
        const char* next = reinterpret_cast<const char*>(h0 + 6 * row_bytes);
        for (int64_t t = 0; t < x.n_tokens; ++t) {
            const uint8_t* base = scratch + t * per_token;
            const int8_t* xp = reinterpret_cast<const int8_t*>(base);
            const int32_t* corr = reinterpret_cast<const int32_t*>(base + n_oct * 256);
            const float* dx = reinterpret_cast<const float*>(base + n_oct * 288);
            __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
            for (int64_t g = 0; g < n_oct; ++g) {
                if (t == 0) {
                    for (int64_t l = 0; l < 4; ++l) _mm_prefetch(next + 256 * g + 64 * l, _MM_HINT_T0);
                }
                acc0 = _mm256_add_ps(acc0, group_term(h0, d0, g, tail_hi[0], tail_d[0], xp, corr, dx));
                acc1 = _mm256_add_ps(acc1, group_term(h1, d1, g, tail_hi[1], tail_d[1], xp, corr, dx));
            }
            out[t * out_stride + (r - row_begin)] = hsum(acc0);
            if (pair) out[t * out_stride + (r + 1 - row_begin)] = hsum(acc1);
        }
    }
}

void register_q4h(KernelTable& table) { table.gemm_q4h = gemm_q4h; }

}  // namespace bitnet::kernels::avx2
