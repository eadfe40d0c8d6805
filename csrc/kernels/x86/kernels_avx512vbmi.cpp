// AVX-512 VBMI + VNNI kernels: ternary products on the 1.67-bit T3 layout (Ice Lake / Zen 4
// class). vpermb looks each 5-bit index (27 combinations of three ternary weights) up in three
// 64-byte tables that decode it into the three 2-bit codes, and vpdpbusd multiplies them with
// broadcast activations.
//
// Compiled with the avx512vnni flags plus -mavx512vbmi; only reached through the KernelTable after
// cpu_features() confirmed AVX512_VBMI and AVX512_VNNI. Everything is in an anonymous namespace or
// in bitnet::kernels::avx512vbmi and no standard-library template is instantiated. The table
// starts as the avx512vnni one. Twin: ref::gemm_t3.
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

namespace bitnet::kernels::avx512vbmi {

// ---- T3 x int8 --------------------------------------------------------------------------------
//
// Contract (twin: ref::gemm_t3): the T3 layout of kernels.h. One step of one tile (80 bytes)
// holds 32 rows x 4 groups of 3 columns. For the 64 bytes v of nibbles and the two 64-bit masks
// kl, kh of fifth bits:
//     lo = (v & 15) + 16 [kl]           indices of rows 0..15, lane 4i + m = (row i, group m)
//     hi = ((v >> 4) & 15) + 16 [kh]    indices of rows 16..31
// vpermb(idx, Tc) with Tc[idx] = the code (w + 1) of column c of the group (c = 0, 1, 2) gives,
// in each 4-byte lane i, the codes of row i at columns 12s + 3m + c, m = 0..3. The activations
// are rearranged per token so that these four columns' values are one dword
//     xp[12s + 4c + m] = x[12s + 3m + c]
// broadcast to all lanes: vpdpbusd(acc, codes_c, bcast(xp + 12s + 4c)) adds row i's four
// products to lane i. Rows live in lanes, so there are no horizontal sums. Per step and tile:
// 1 load, 2 mask loads, 5 mask/shift ops, 6 vpermb and 6 vpdpbusd per token.
// Bound: a lane gains 12 products |c x| <= 2 * 128 per step: |acc| <= 256 * K3 < 2^31.
// sum_j w_j x_j = sum_j c_j x_j - sum_j x_j (x.sum); padding columns have zero activations.

namespace {

constexpr int kMaxTokens = 8;  // tokens per pass over a tile (2 accumulators each)

struct Tables {
    __m512i t0, t1, t2;
    __m512i packed;  // c0 | c1 << 2 | c2 << 4 (the GEMV decode)
};

inline Tables decode_tables() {
    alignas(64) uint8_t t[4][64];
    for (int i = 0; i < 64; ++i) {
        const int idx = i < 27 ? i : 13;  // 13 = (0, 0, 0): never produced by valid data
        t[0][i] = static_cast<uint8_t>(idx / 9);
        t[1][i] = static_cast<uint8_t>(idx / 3 % 3);
        t[2][i] = static_cast<uint8_t>(idx % 3);
        t[3][i] = static_cast<uint8_t>(t[0][i] | t[1][i] << 2 | t[2][i] << 4);
    }
    return {_mm512_load_si512(t[0]), _mm512_load_si512(t[1]), _mm512_load_si512(t[2]),
            _mm512_load_si512(t[3])};
}

// The 5-bit indices of one step of one tile: lo (rows 0-15), hi (rows 16-31).
inline void step_indices(const uint8_t* step, __m512i* lo, __m512i* hi) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i b4 = _mm512_set1_epi8(0x10);
    const __m512i v = _mm512_loadu_si512(step);
    uint64_t bl, bh;
    std::memcpy(&bl, step + 64, 8);
    std::memcpy(&bh, step + 72, 8);
    const __m512i l = _mm512_and_si512(v, m4);
    const __m512i h = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    *lo = _mm512_mask_add_epi8(l, static_cast<__mmask64>(bl), l, b4);
    *hi = _mm512_mask_add_epi8(h, static_cast<__mmask64>(bh), h, b4);
}

// The six code vectors of one step of one tile: c[0..2] rows 0-15, c[3..5] rows 16-31.
inline void decode_step(const uint8_t* step, const Tables& tab, __m512i* c) {
    __m512i lo, hi;
    step_indices(step, &lo, &hi);
    c[0] = _mm512_permutexvar_epi8(lo, tab.t0);
    c[1] = _mm512_permutexvar_epi8(lo, tab.t1);
    c[2] = _mm512_permutexvar_epi8(lo, tab.t2);
    c[3] = _mm512_permutexvar_epi8(hi, tab.t0);
    c[4] = _mm512_permutexvar_epi8(hi, tab.t1);
    c[5] = _mm512_permutexvar_epi8(hi, tab.t2);
}

inline __m512i bcast(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

// Rearranges one token's activations for T3: xp[12s + 4c + m] = x[12s + 3m + c] for columns
// below k, 0 for the padding up to k3. Five steps (60 bytes) per vpermb.
inline void permute_t3(const int8_t* x, int64_t k, int64_t k3, int8_t* xp) {
    alignas(64) uint8_t idx[64];
    for (int i = 0; i < 64; ++i) {
        const int s = i / 12, within = i % 12, c = within / 4, m = within % 4;
        idx[i] = static_cast<uint8_t>(i < 60 ? 12 * s + 3 * m + c : 0);
    }
    const __m512i perm = _mm512_load_si512(idx);
    for (int64_t j = 0; j < k3; j += 60) {
        const int64_t n_in = k - j < 64 ? (k - j > 0 ? k - j : 0) : 64;
        const __mmask64 in_mask = n_in >= 64 ? ~0ull : (1ull << n_in) - 1;
        const __m512i v = _mm512_maskz_loadu_epi8(in_mask, x + j);
        const int64_t n_out = k3 - j < 60 ? k3 - j : 60;
        _mm512_mask_storeu_epi8(xp + j, (1ull << n_out) - 1, _mm512_permutexvar_epi8(perm, v));
    }
}

// One token, TT tiles, packed decode: one vpermb gives p = c0 | c1 << 2 | c2 << 4 per lane, and
// p & 0x03 = c0, p & 0x0c = 4 c1, p & 0x30 = 16 c2 (all <= 32, valid u8) feed three scaled
// accumulators: sum c x = a1 + a4 / 4 + a16 / 16, exact per lane (multiples of the scales;
// |a16| <= 16 * 256 * K3 / 3 < 2^31). Two vpermb and six vpdpbusd per step and tile instead of
// six and six: vpermb and vpdpbusd compete for the same execution ports on Zen 4.
template <int TT>
void gemv_tiles_t3(const uint8_t* tile0, int64_t tile_bytes, int64_t n_steps, const int8_t* xp,
                   __m512i* acc) {
    const Tables tab = decode_tables();
    const __m512i m0 = _mm512_set1_epi8(0x03), m1 = _mm512_set1_epi8(0x0c), m2 = _mm512_set1_epi8(0x30);
    __m512i a1[2 * TT], a4[2 * TT], a16[2 * TT];
    for (int i = 0; i < 2 * TT; ++i) a1[i] = a4[i] = a16[i] = _mm512_setzero_si512();
    for (int64_t s = 0; s < n_steps; ++s) {
        const int8_t* xs = xp + kT3StepCols * s;
        const __m512i x0 = bcast(xs), x1 = bcast(xs + 4), x2 = bcast(xs + 8);
        for (int tt = 0; tt < TT; ++tt) {
            const uint8_t* step = tile0 + tt * tile_bytes + s * kT3StepBytes;
            _mm_prefetch(reinterpret_cast<const char*>(step) + 1024, _MM_HINT_T0);
            __m512i idx[2];
            step_indices(step, &idx[0], &idx[1]);
            for (int h = 0; h < 2; ++h) {
                const __m512i p = _mm512_permutexvar_epi8(idx[h], tab.packed);
                const int i = 2 * tt + h;
                a1[i] = _mm512_dpbusd_epi32(a1[i], _mm512_and_si512(p, m0), x0);
                a4[i] = _mm512_dpbusd_epi32(a4[i], _mm512_and_si512(p, m1), x1);
                a16[i] = _mm512_dpbusd_epi32(a16[i], _mm512_and_si512(p, m2), x2);
            }
        }
    }
    for (int i = 0; i < 2 * TT; ++i) {
        acc[i] = _mm512_add_epi32(_mm512_add_epi32(a1[i], _mm512_srai_epi32(a4[i], 2)),
                                  _mm512_srai_epi32(a16[i], 4));
    }
}

// TT tiles x NT tokens over all steps; out rows of the tiles in order (TT * 32 values a token).
template <int TT, int NT>
void tiles_t3(const uint8_t* tile0, int64_t tile_bytes, int64_t n_steps, const int8_t* xp,
              int64_t xp_stride, __m512i (*acc)[2 * TT]) {
    const Tables tab = decode_tables();
    for (int t = 0; t < NT; ++t) {
        for (int i = 0; i < 2 * TT; ++i) acc[t][i] = _mm512_setzero_si512();
    }
    for (int64_t s = 0; s < n_steps; ++s) {
        __m512i c[TT][6];
        for (int tt = 0; tt < TT; ++tt) {
            const uint8_t* step = tile0 + tt * tile_bytes + s * kT3StepBytes;
            // Tiles are linear streams: fetch about 1 KiB ahead in each.
            _mm_prefetch(reinterpret_cast<const char*>(step) + 1024, _MM_HINT_T0);
            decode_step(step, tab, c[tt]);
        }
        for (int t = 0; t < NT; ++t) {
            const int8_t* xs = xp + t * xp_stride + kT3StepCols * s;
            const __m512i x0 = bcast(xs), x1 = bcast(xs + 4), x2 = bcast(xs + 8);
            for (int tt = 0; tt < TT; ++tt) {
                __m512i a = acc[t][2 * tt], b = acc[t][2 * tt + 1];
                a = _mm512_dpbusd_epi32(a, c[tt][0], x0);
                b = _mm512_dpbusd_epi32(b, c[tt][3], x0);
                a = _mm512_dpbusd_epi32(a, c[tt][1], x1);
                b = _mm512_dpbusd_epi32(b, c[tt][4], x1);
                a = _mm512_dpbusd_epi32(a, c[tt][2], x2);
                b = _mm512_dpbusd_epi32(b, c[tt][5], x2);
                acc[t][2 * tt] = a;
                acc[t][2 * tt + 1] = b;
            }
        }
    }
}

// Writes the sums of rows [r, r + 32 * TT) (clipped at r_end) of NT tokens.
template <int TT, int NT>
void run_tiles(const T3Matrix& w, const int8_t* xp, int64_t xp_stride, const int32_t* x_sum,
               int64_t r, int64_t r_end, int64_t row_begin, int32_t* out, int64_t out_stride) {
    const int64_t n_steps = w.k3 / kT3StepCols;
    const int64_t tile_bytes = n_steps * kT3StepBytes;
    __m512i acc[NT][2 * TT];
    const uint8_t* tile0 = w.data + (r / kT3TileRows) * tile_bytes;
    if (NT == 1) {
        gemv_tiles_t3<TT>(tile0, tile_bytes, n_steps, xp, acc[0]);
    } else {
        tiles_t3<TT, NT>(tile0, tile_bytes, n_steps, xp, xp_stride, acc);
    }
    for (int t = 0; t < NT; ++t) {
        const __m512i sub = _mm512_set1_epi32(x_sum[t]);
        for (int i = 0; i < 2 * TT; ++i) {
            const int64_t first = r + 16 * i;
            if (first >= r_end) break;
            const int64_t n = r_end - first < 16 ? r_end - first : 16;
            const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
            _mm512_mask_storeu_epi32(out + t * out_stride + (first - row_begin), m,
                                     _mm512_sub_epi32(acc[t][i], sub));
        }
    }
}

// One tile at a time: one contiguous weight stream (two tiles per pass, sharing the activation
// broadcasts, measured slower from DRAM on Zen 4; four spilled registers).
template <int NT>
void rows_t3(const T3Matrix& w, const int8_t* xp, int64_t xp_stride, const int32_t* x_sum,
             int64_t row_begin, int64_t row_end, int32_t* out, int64_t out_stride) {
    for (int64_t r = row_begin; r < row_end; r += kT3TileRows) {
        run_tiles<1, NT>(w, xp, xp_stride, x_sum, r, row_end, row_begin, out, out_stride);
    }
}

}  // namespace

void gemm_t3(const T3Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end, int32_t* out,
             int64_t out_stride) {
    if (row_begin >= row_end) return;
    // xp (n_tokens, k3 + 4): the slack keeps every dword broadcast inside the buffer.
    const int64_t xp_stride = w.k3 + 4;
    int8_t* xp = reinterpret_cast<int8_t*>(kernel_scratch(x.n_tokens * xp_stride));
    for (int64_t t = 0; t < x.n_tokens; ++t) permute_t3(x.q + t * x.stride, w.k, w.k3, xp + t * xp_stride);
    // Up to 8 tokens: one pass over the rows. More: each tile (17-46 KiB for the 2B4T shapes)
    // stays in cache while every group of 8 tokens passes over it.
    const int64_t step_rows = x.n_tokens <= kMaxTokens ? row_end - row_begin : kT3TileRows;
    for (int64_t r0 = row_begin; r0 < row_end; r0 += step_rows) {
        const int64_t r1 = r0 + step_rows < row_end ? r0 + step_rows : row_end;
        for (int64_t t = 0; t < x.n_tokens; t += kMaxTokens) {
            const int64_t nt = x.n_tokens - t < kMaxTokens ? x.n_tokens - t : kMaxTokens;
            const int8_t* xt = xp + t * xp_stride;
            const int32_t* st = x.sum + t;
            int32_t* o = out + t * out_stride + (r0 - row_begin);
            switch (nt) {
                case 1: rows_t3<1>(w, xt, xp_stride, st, r0, r1, o, out_stride); break;
                case 2: rows_t3<2>(w, xt, xp_stride, st, r0, r1, o, out_stride); break;
                case 3: rows_t3<3>(w, xt, xp_stride, st, r0, r1, o, out_stride); break;
                case 4: rows_t3<4>(w, xt, xp_stride, st, r0, r1, o, out_stride); break;
                case 5: rows_t3<5>(w, xt, xp_stride, st, r0, r1, o, out_stride); break;
                case 6: rows_t3<6>(w, xt, xp_stride, st, r0, r1, o, out_stride); break;
                case 7: rows_t3<7>(w, xt, xp_stride, st, r0, r1, o, out_stride); break;
                default: rows_t3<8>(w, xt, xp_stride, st, r0, r1, o, out_stride); break;
            }
        }
    }
}

void register_kernels(KernelTable& table) {
    table.gemm_t3 = gemm_t3;
    table.native_t3 = true;
}

}  // namespace bitnet::kernels::avx512vbmi
