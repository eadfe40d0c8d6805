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

// The order in which a three-level add_adjacent_i32 tree over four vectors of 4 x 4 lanes (and
// avx512vnni's hsum16) leaves 16 sums: lane 4c + m holds item c + 4m.
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

}  // namespace
}  // namespace bitnet::kernels
