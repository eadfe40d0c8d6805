// NEON + dotprod + i8mm (SMMLA, armv8.6-a / FEAT_I8MM) kernels: the ternary MAD GEMM of prompts
// and batched decoding, two rows x two tokens x eight columns per instruction.
//
// Compiled with -march=armv8.2-a+dotprod+i8mm; only reached through the KernelTable after
// getauxval reported HWCAP_ASIMDDP and HWCAP2_I8MM. Everything is in an anonymous namespace or in
// bitnet::kernels::i8mm and no standard-library template (nor any inline helper of a shared
// header) is instantiated. The table starts as the dotprod one; a single token (GEMV, where SMMLA
// would idle half its lanes) and a last odd token go to the dotprod kernel it replaced.
// vmmlaq_s32(acc, a, b) adds to the 2x2 int32 matrix acc the product of a (2 x 8 int8, row-major)
// with the transpose of b (2 x 8 int8). Twin: ref::gemm_t2.
#include <arm_neon.h>

#include <cstdint>

#include "kernels/isa_tables.h"

#if defined(__AARCH64EB__)
#error "the ARM kernels assume little-endian AArch64"
#endif

namespace bitnet::kernels::i8mm {

// ---- MAD: T2 x int8 ---------------------------------------------------------------------------
//
// Contract (twin: ref::gemm_t2): T2 rows (kernels_neon.cpp has the byte diagram): byte i of half h
// (16 bytes) of a block holds the codes c = w + 1 of columns 32k + 16h + i, k = 0..3; the plane
// vector (v_h >> 2k) & 3 holds columns 32k + 16h .. +15, i.e. the 8-column chunks 4k + 2h and
// 4k + 2h + 1 of the block in its two 64-bit halves. For a pair of rows, vzip1q_u64 / vzip2q_u64
// of their plane vectors give the SMMLA "a" operand of one chunk ([row 0: 8 codes | row 1: 8
// codes]); the activations of a pair of tokens are interleaved once per call into the "b"
// operands ([token 0: 8 values | token 1: 8 values] per chunk, kernel scratch). One SMMLA then
// adds the 2 x 2 dot products of 8 columns: acc = [r0.t0, r0.t1, r1.t0, r1.t1].
// Bound: |acc lane| <= 2 * 128 * K_pad. sum_j w_j x_j = sum_j c_j x_j - sum_j x_j.
// Per block, pair of rows and pair of tokens: 16 SMMLA (512 multiply-adds), the unpacking
// (14 shifts/masks and 16 zips per row pair) shared by all token pairs of the tile.

namespace {

GemmT2Fn g_lower = nullptr;  // the level below's gemm_t2 (set once by register_kernels)

constexpr int kTokenPairs = 4;  // token pairs per pass over a row pair (4 accumulators)

// The 16 "a" operands of one block of a row pair (chunks 0..15 of the block's 128 columns).
inline void block_operands(const uint8_t* r0, const uint8_t* r1, int8x16_t* a) {
    const uint8x16_t m3 = vdupq_n_u8(3);
    for (int h = 0; h < 2; ++h) {
        const uint8x16_t v0 = vld1q_u8(r0 + 16 * h);
        const uint8x16_t v1 = vld1q_u8(r1 + 16 * h);
        const uint8x16_t p0[4] = {vandq_u8(v0, m3), vandq_u8(vshrq_n_u8(v0, 2), m3),
                                  vandq_u8(vshrq_n_u8(v0, 4), m3), vshrq_n_u8(v0, 6)};
        const uint8x16_t p1[4] = {vandq_u8(v1, m3), vandq_u8(vshrq_n_u8(v1, 2), m3),
                                  vandq_u8(vshrq_n_u8(v1, 4), m3), vshrq_n_u8(v1, 6)};
        for (int k = 0; k < 4; ++k) {
            const uint64x2_t a0 = vreinterpretq_u64_u8(p0[k]);
            const uint64x2_t a1 = vreinterpretq_u64_u8(p1[k]);
            a[4 * k + 2 * h] = vreinterpretq_s8_u64(vzip1q_u64(a0, a1));
            a[4 * k + 2 * h + 1] = vreinterpretq_s8_u64(vzip2q_u64(a0, a1));
        }
    }
}

// Rows r0, r1 x NP token pairs starting at xi (interleaved activations of
// consecutive pairs, stride xi_stride): acc[p] = [r0.t0, r0.t1, r1.t0, r1.t1] of sum c x.
template <int NP>
void row_pair(const uint8_t* r0, const uint8_t* r1, int64_t n_blocks, const int8_t* xi,
              int64_t xi_stride, int32x4_t* acc) {
    for (int p = 0; p < NP; ++p) acc[p] = vdupq_n_s32(0);
    for (int64_t b = 0; b < n_blocks; ++b) {
        int8x16_t a[16];
        block_operands(r0 + b * kT2BlockBytes, r1 + b * kT2BlockBytes, a);
        for (int p = 0; p < NP; ++p) {
            const int8_t* xb = xi + p * xi_stride + b * 2 * kT2Block;
            int32x4_t s = acc[p];
            for (int c = 0; c < 16; ++c) s = vmmlaq_s32(s, a[c], vld1q_s8(xb + 16 * c));
            acc[p] = s;
        }
    }
}

template <int NP>
void rows_tokens(const T2Matrix& w, const ActsI8& x, int64_t t0, const int8_t* xi, int64_t xi_stride,
                 int64_t row_begin, int64_t row_end, int32_t* out, int64_t out_stride) {
    const int64_t row_bytes = w.k_pad / 4;
    const int64_t n_blocks = w.k_pad / kT2Block;
    for (int64_t r = row_begin; r < row_end; r += 2) {
        const bool pair = r + 1 < row_end;
        const uint8_t* r0 = w.codes + r * row_bytes;
        // An odd last row is paired with itself; the duplicate's results are dropped.
        const uint8_t* r1 = pair ? r0 + row_bytes : r0;
        int32x4_t acc[NP];
        row_pair<NP>(r0, r1, n_blocks, xi, xi_stride, acc);
        for (int p = 0; p < NP; ++p) {
            const int64_t t = t0 + 2 * p;
            int32_t v[4];
            vst1q_s32(v, acc[p]);
            int32_t* o = out + (r - row_begin);
            o[t * out_stride] = v[0] - x.sum[t];
            o[(t + 1) * out_stride] = v[1] - x.sum[t + 1];
            if (pair) {
                o[t * out_stride + 1] = v[2] - x.sum[t];
                o[(t + 1) * out_stride + 1] = v[3] - x.sum[t + 1];
            }
        }
    }
}

}  // namespace

void gemm_t2(const T2Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end, int32_t* out,
             int64_t out_stride) {
    if (row_begin >= row_end) return;
    const int64_t n_pairs = x.n_tokens / 2;
    if (n_pairs > 0) {
        // xi (n_pairs, 2 * k_pad): per 8-column chunk, 8 values of token 2p then of token 2p + 1.
        const int64_t xi_stride = 2 * w.k_pad;
        int8_t* xi = reinterpret_cast<int8_t*>(kernel_scratch(n_pairs * xi_stride));
        for (int64_t p = 0; p < n_pairs; ++p) {
            const int8_t* x0 = x.q + 2 * p * x.stride;
            const int8_t* x1 = x0 + x.stride;
            int8_t* dst = xi + p * xi_stride;
            for (int64_t c = 0; c < w.k_pad / 8; ++c) {
                vst1q_s8(dst + 16 * c, vcombine_s8(vld1_s8(x0 + 8 * c), vld1_s8(x1 + 8 * c)));
            }
        }
        // Tiles of 16 rows: a tile's codes stay in L1 while every group of token pairs passes.
        for (int64_t r0 = row_begin; r0 < row_end; r0 += 16) {
            const int64_t r1 = r0 + 16 < row_end ? r0 + 16 : row_end;
            int32_t* o = out + (r0 - row_begin);
            for (int64_t p = 0; p < n_pairs; p += kTokenPairs) {
                const int64_t np = n_pairs - p < kTokenPairs ? n_pairs - p : kTokenPairs;
                const int8_t* xp = xi + p * xi_stride;
                if (np == 4) rows_tokens<4>(w, x, 2 * p, xp, xi_stride, r0, r1, o, out_stride);
                if (np == 3) rows_tokens<3>(w, x, 2 * p, xp, xi_stride, r0, r1, o, out_stride);
                if (np == 2) rows_tokens<2>(w, x, 2 * p, xp, xi_stride, r0, r1, o, out_stride);
                if (np == 1) rows_tokens<1>(w, x, 2 * p, xp, xi_stride, r0, r1, o, out_stride);
            }
        }
    }
    if (x.n_tokens % 2) {
        const int64_t t = x.n_tokens - 1;
        const ActsI8 one{x.q + t * x.stride, x.scale + t, x.sum + t, 1, x.stride};
        g_lower(w, one, row_begin, row_end, out + t * out_stride, out_stride);
    }
}

void register_kernels(KernelTable& table) {
    g_lower = table.gemm_t2;
    table.gemm_t2 = gemm_t2;
}

}  // namespace bitnet::kernels::i8mm
