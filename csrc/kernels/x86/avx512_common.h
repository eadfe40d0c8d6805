// Helpers shared by the AVX-512 kernel files (kernels_avx512*.cpp). Internal to kernels/x86/.
//
// Only files compiled with at least -mavx512f -mavx512bw -mavx512vl -mavx512dq include this
// header, and everything in it has internal linkage (an anonymous namespace), so each includer
// gets its own copy compiled for its own flags and the linker never merges one into baseline code.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/kernels.h"

namespace bitnet::kernels {
namespace {

inline int32_t hsum_i32x8(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

// Rearranges one token's T2-ordered activations (k_pad bytes, k_pad a multiple of 128) so that a
// 64-byte load of two T2 blocks (b, b+1) = pair p meets its activations plane by plane:
//     xp[256p + 64k .. +32) = x[256p + 32k .. +32),  xp[256p + 64k + 32 .. +32) = x[256p + 128 + 32k .. +32)
// for k = 0..3. An odd last block is left out (the kernels read it in natural order).
inline void permute_t2_pairs(const int8_t* x, int64_t k_pad, int8_t* xp) {
    const int64_t n_pairs = k_pad / 256;
    for (int64_t p = 0; p < n_pairs; ++p) {
        const int8_t* src = x + 256 * p;
        int8_t* dst = xp + 256 * p;
        for (int k = 0; k < 4; ++k) {
            const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32 * k));
            const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 128 + 32 * k));
            _mm512_storeu_si512(dst + 64 * k, _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1));
        }
    }
}

// Two Q8 blocks (64 bytes) from p, or one (the upper half zero) when only one is left.
inline __m512i load_q8_blocks(const int8_t* p, int64_t n_left_blocks) {
    return n_left_blocks >= 2 ? _mm512_loadu_si512(p)
                              : _mm512_maskz_loadu_epi8(static_cast<__mmask64>(0xffffffffull), p);
}

// The order in which reduce_blocks16 leaves its 16 block sums: lane 4c + m holds block c + 4m.
inline __m512i reduce_order() {
    return _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
}

// Within each 128-bit chunk: [a0 + a1, a2 + a3, b0 + b1, b2 + b3] (int32).
inline __m512i add_adjacent_i32(__m512i a, __m512i b) {
    const __m512 af = _mm512_castsi512_ps(a), bf = _mm512_castsi512_ps(b);
    const __m512i even = _mm512_castps_si512(_mm512_shuffle_ps(af, bf, _MM_SHUFFLE(2, 0, 2, 0)));
    const __m512i odd = _mm512_castps_si512(_mm512_shuffle_ps(af, bf, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_epi32(even, odd);
}

// p[j] holds int32 partial sums of Q8 blocks 2j (lanes 0-7) and 2j+1 (lanes 8-15); returns the
// 16 exact block sums in reduce_order(). 22 shuffles and adds for 16 blocks:
//   level 1: p[2i], p[2i+1] -> 4 blocks x 4 lanes (128-bit chunks: blocks 4i .. 4i+3)
//   level 2: 2 lanes per block (chunk c of r0: blocks c, 4 + c; of r1: blocks 8 + c, 12 + c);
//   level 3: 1 lane per block.
inline __m512i reduce_blocks16(const __m512i* p) {
    __m512i q[4];
    for (int i = 0; i < 4; ++i) {
        const __m512i a = p[2 * i], b = p[2 * i + 1];
        q[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
    }
    const __m512i r0 = _mm512_add_epi32(_mm512_unpacklo_epi64(q[0], q[1]), _mm512_unpackhi_epi64(q[0], q[1]));
    const __m512i r1 = _mm512_add_epi32(_mm512_unpacklo_epi64(q[2], q[3]), _mm512_unpackhi_epi64(q[2], q[3]));
    return add_adjacent_i32(r0, r1);
}

// The float terms (wd[b] * xd[b]) * float(sum_b) of nb <= 16 blocks whose exact sums are in
// reduce_order() (blocks nb..15 must be 0): the same two roundings as the reference per block.
inline __m512 scale_blocks16(__m512i sums, const float* wd, const float* xd, int64_t nb) {
    // Plain loads for full groups: masked loads that miss the cache are slow on Zen 4.
    __m512 s;
    if (nb >= 16) {
        s = _mm512_mul_ps(_mm512_loadu_ps(wd), _mm512_loadu_ps(xd));
    } else {
        const __mmask16 m = static_cast<__mmask16>((1u << nb) - 1);
        s = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, wd), _mm512_maskz_loadu_ps(m, xd));
    }
    return _mm512_mul_ps(_mm512_permutexvar_ps(reduce_order(), s), _mm512_cvtepi32_ps(sums));
}

}  // namespace
}  // namespace bitnet::kernels
