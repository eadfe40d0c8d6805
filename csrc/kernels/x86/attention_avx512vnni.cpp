// AVX-512 VNNI attention kernel: q8_0 scores (kernels.h, "attention over the KV cache"). Twin:
// ref::attn_scores_q8 in ref/kernels_ref.cpp.
//
// Compiled with the avx512 flags plus -mavx512vnni; only reached through the avx512vnni level's
// KernelTable. Everything is in an anonymous namespace or in bitnet::kernels::avx512vnni and no
// standard-library template is instantiated, so nothing here can be merged into baseline code.
//
// Contract (the same numbers as the level below, bit for bit): a score is the chain
//     acc = 0;  for blocks b ascending: acc = fma(q_d[h][b] * k_d[j][b], float(idot(h, j, b)), acc)
// with idot the exact int32 dot product of block b, which is what the avx2 kernel computes (one
// rounded product of the scales, one fused multiply-add per block). So heads and shapes this
// kernel leaves to the level below get the same bits, and a head's scores never depend on how
// many heads come with it.
//
// idot on vpdpbusd (unsigned x signed bytes): the keys are biased to unsigned (k ^ 0x80 = k + 128,
// exact for any int8), so dpbusd sums (k + 128) * q, and each accumulator starts at
// -128 * sum(q over the block): the sum is then exactly idot. int32 is safe: |idot| <= 32 * 128 *
// 127 and the biased partial sums stay below 32 * 255 * 128 + 128 * 32 * 128 < 2^21.
//
// Layout (head_dim 128, 4 Q8 blocks a row): 4 rows are 16 blocks of 32 bytes, 512 contiguous
// bytes of the cache. Eight 64-byte loads hold them block-major; a transposition of 32-bit words
// (three rounds of 8 two-source shuffles) turns them into 8 vectors V_s whose lane p holds word s
// of block L(p) = 2 (p mod 8) + p / 8. One vpdpbusd of V_s with the query's word s of the same
// block (prepared once per call, per lane) then advances 16 (row, block) sums at once, for each
// of the 4 heads of a group: no horizontal sums. The epilogue regroups the 4 heads' sums into
// vectors of (head, row) lanes per block and runs the fused chain above on them.
//
// GCC 12's AVX-512 intrinsics trip -Wuninitialized once inlined (GCC bug 105593; see
// kernels_avx512.cpp): a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>

#include "kernels/isa_tables.h"
#include "kernels/prefetch.h"

namespace bitnet::kernels::avx512vnni {
namespace {

AttnScoresQ8Fn g_lower_scores_q8 = nullptr;  // the level below's kernel (set by register)

constexpr int64_t kNb = 4;      // Q8 blocks per row this kernel takes (head_dim 128)
constexpr int kRows = 4;        // rows per group: 16 blocks, one per lane
constexpr int kHeads = 4;       // heads per pass

// Lane p of the transposed vectors holds block L(p) = 2 (p mod 8) + p / 8 of the group (block
// L = row L / 4, block L mod 4 of that row); lane_of_block(L) is its inverse.
constexpr int lane_of_block(int L) { return 8 * (L & 1) + (L >> 1); }

// Round k of the transposition: swaps bit k of the register index with bit k of the lane
// index between registers a and b (b = a's partner, register bit k set):
//   lo[p] = bit k of p ? b[p ^ 2^k] : a[p];   hi[p] = bit k of p ? b[p] : a[p | 2^k].
inline void swap0(__m512i& a, __m512i& b) {  // 32-bit words within pairs
    const __m512i lo = _mm512_mask_shuffle_epi32(a, 0xAAAA, b, _MM_PERM_CDAB);
    const __m512i hi = _mm512_mask_shuffle_epi32(b, 0x5555, a, _MM_PERM_CDAB);
    a = lo, b = hi;
}
inline void swap1(__m512i& a, __m512i& b) {  // 64-bit pairs within 128-bit chunks
    const __m512i lo = _mm512_unpacklo_epi64(a, b);
    const __m512i hi = _mm512_unpackhi_epi64(a, b);
    a = lo, b = hi;
}
inline void swap2(__m512i& a, __m512i& b) {  // 128-bit chunks
    const __m512i lo = _mm512_mask_shuffle_i64x2(a, 0xCC, b, b, _MM_SHUFFLE(2, 2, 0, 0));
    const __m512i hi = _mm512_mask_shuffle_i64x2(b, 0x33, a, a, _MM_SHUFFLE(3, 3, 1, 1));
    a = lo, b = hi;
}

// Index vectors of the shuffles (constant; built once per call, a few instructions).
inline __m512i iota() {
    return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

// Scores of 4 heads (q: 4 x 128 int8, q_d: 4 x 4) against rows [0, n).
void scores_heads4(const int8_t* q, const float* q_d, const int8_t* k, const uint16_t* k_d, int64_t n,
                   float* s, int64_t s_stride, Prefetcher& pf, int64_t pf_lines) {
    constexpr int64_t hd = kNb * kQ8Block;
    const __m512i lane = iota();
    const __m512i seven = _mm512_set1_epi32(7), three = _mm512_set1_epi32(3);
    // Block of each lane (within its row): L(p) mod 4 = (2 (p mod 8) + p / 8) mod 4.
    const __m512i lane_block = _mm512_and_si512(
        _mm512_add_epi32(_mm512_slli_epi32(_mm512_and_si512(lane, seven), 1), _mm512_srli_epi32(lane, 3)), three);
    // The query words of V_s's lanes, per head and s: word 8 b(p) + s of the head's 32 words.
    // Starting values: -128 times the block's query sum (dpbusd of ones with those words).
    __m512i qw[kHeads][8];
    __m512i bias[kHeads];
    const __m512i ones = _mm512_set1_epi8(1);
    for (int h = 0; h < kHeads; ++h) {
        const __m512i lo = _mm512_loadu_si512(q + h * hd);
        const __m512i hi = _mm512_loadu_si512(q + h * hd + 64);
        __m512i sum = _mm512_setzero_si512();
        for (int w = 0; w < 8; ++w) {
            const __m512i idx = _mm512_add_epi32(_mm512_slli_epi32(lane_block, 3), _mm512_set1_epi32(w));
            qw[h][w] = _mm512_permutex2var_epi32(lo, idx, hi);
            sum = _mm512_dpbusd_epi32(sum, ones, qw[h][w]);
        }
        bias[h] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum, 7));
    }
    // Epilogue lanes t = 4 h + r (head h, row r). Query scales q_d[h][b] and the positions of
    // the rows' key scales k_d[r][b] (natural order: 4 r + b) per block b.
    const __m512i t_head = _mm512_srli_epi32(lane, 2), t_row = _mm512_and_si512(lane, three);
    const __m512 qd_all = _mm512_loadu_ps(q_d);
    __m512 qd[kNb];
    __m512i kd_idx[kNb];
    for (int b = 0; b < kNb; ++b) {
        const __m512i vb = _mm512_set1_epi32(b);
        qd[b] = _mm512_permutexvar_ps(_mm512_add_epi32(_mm512_slli_epi32(t_head, 2), vb), qd_all);
        kd_idx[b] = _mm512_add_epi32(_mm512_slli_epi32(t_row, 2), vb);
    }
    // Regrouping of the 4 accumulators (lane p: row r, block b of one head) into (h, r) lanes per
    // block, in two rounds of two-source permutes:
    //   U[g][P] lane u = 8 hh + 4 bb + r  <-  acc[2 g + hh] lane of block 4 r + 2 P + bb,
    //   Y[2 P + bb] lane t = 4 (2 g + hh) + r  <-  U[g][P] lane 8 hh + 4 bb + r.
    alignas(64) int32_t words[16];
    __m512i idx1[2], idx2[2];
    for (int P = 0; P < 2; ++P) {
        for (int u = 0; u < 16; ++u) {
            const int hh = u / 8, bb = (u / 4) % 2, r = u % 4;
            words[u] = 16 * hh + lane_of_block(4 * r + 2 * P + bb);
        }
        idx1[P] = _mm512_load_si512(words);
    }
    for (int bb = 0; bb < 2; ++bb) {
        for (int t = 0; t < 16; ++t) {
            const int h = t / 4, r = t % 4;
            words[t] = 16 * (h / 2) + 8 * (h % 2) + 4 * bb + r;
        }
        idx2[bb] = _mm512_load_si512(words);
    }
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    for (int64_t j = 0; j < n; j += kRows) {
        pf.next(pf_lines);
        const int valid = n - j < kRows ? static_cast<int>(n - j) : kRows;
        const int8_t* rows = k + j * hd;
        __m512i m[8];
        if (valid == kRows) {
            for (int i = 0; i < 8; ++i) m[i] = _mm512_xor_si512(_mm512_loadu_si512(rows + 64 * i), flip);
        } else {  // a tail: the missing rows' lanes get zeros and are not stored
            for (int i = 0; i < 8; ++i) m[i] = flip;
            for (int i = 0; i < 2 * valid; ++i) m[i] = _mm512_xor_si512(_mm512_loadu_si512(rows + 64 * i), flip);
        }
        swap0(m[0], m[1]), swap0(m[2], m[3]), swap0(m[4], m[5]), swap0(m[6], m[7]);
        swap1(m[0], m[2]), swap1(m[1], m[3]), swap1(m[4], m[6]), swap1(m[5], m[7]);
        swap2(m[0], m[4]), swap2(m[1], m[5]), swap2(m[2], m[6]), swap2(m[3], m[7]);
        __m512i acc[kHeads];
        for (int h = 0; h < kHeads; ++h) {
            acc[h] = bias[h];
            for (int w = 0; w < 8; ++w) acc[h] = _mm512_dpbusd_epi32(acc[h], m[w], qw[h][w]);
        }
        const __m512 kd =
            valid == kRows
                ? _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(k_d + j * kNb)))
                : _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << (kNb * valid)) - 1),
                                                            k_d + j * kNb));
        __m512 score = _mm512_setzero_ps();
        for (int P = 0; P < 2; ++P) {
            const __m512i u0 = _mm512_permutex2var_epi32(acc[0], idx1[P], acc[1]);
            const __m512i u1 = _mm512_permutex2var_epi32(acc[2], idx1[P], acc[3]);
            for (int bb = 0; bb < 2; ++bb) {
                const int b = 2 * P + bb;
                const __m512 idot = _mm512_cvtepi32_ps(_mm512_permutex2var_epi32(u0, idx2[bb], u1));
                const __m512 scale = _mm512_mul_ps(qd[b], _mm512_permutexvar_ps(kd_idx[b], kd));
                score = _mm512_fmadd_ps(scale, idot, score);
            }
        }
        const __mmask8 keep = static_cast<__mmask8>((1u << valid) - 1);
        for (int h = 0; h < kHeads; ++h) {
            __m128 v = h == 0   ? _mm512_castps512_ps128(score)
                       : h == 1 ? _mm512_extractf32x4_ps(score, 1)
                       : h == 2 ? _mm512_extractf32x4_ps(score, 2)
                                : _mm512_extractf32x4_ps(score, 3);
            if (valid == kRows) _mm_storeu_ps(s + h * s_stride + j, v);
            else _mm_mask_storeu_ps(s + h * s_stride + j, keep, v);
        }
    }
}

}  // namespace

void attn_scores_q8(const int8_t* q, const float* q_d, int64_t n_q, int64_t hd, const int8_t* k,
                    const uint16_t* k_d, int64_t n, float* s, int64_t s_stride, const void* pf_ptr,
                    int64_t pf_bytes) {
    if (hd != kNb * kQ8Block || n_q < kHeads) {
        return g_lower_scores_q8(q, q_d, n_q, hd, k, k_d, n, s, s_stride, pf_ptr, pf_bytes);
    }
    Prefetcher pf(pf_ptr, pf_bytes);
    const int64_t lines = lines_per(pf_bytes, n_q / kHeads * ((n + kRows - 1) / kRows));
    int64_t h = 0;
    for (; h + kHeads <= n_q; h += kHeads) {
        scores_heads4(q + h * hd, q_d + h * kNb, k, k_d, n, s + h * s_stride, s_stride, pf, lines);
    }
    pf.next(INT64_MAX);
    // The last heads (fewer than 4) on the level below: the same bits (see the contract).
    if (h < n_q) g_lower_scores_q8(q + h * hd, q_d + h * kNb, n_q - h, hd, k, k_d, n, s + h * s_stride, s_stride, nullptr, 0);
}

void register_attention_kernels(KernelTable& table) {
    g_lower_scores_q8 = table.attn_scores_q8;
    table.attn_scores_q8 = attn_scores_q8;
}

}  // namespace bitnet::kernels::avx512vnni
