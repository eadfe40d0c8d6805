// NEON + dotprod (SDOT, armv8.2-a+dotprod) kernels: ternary MAD, binary and Q8 products.
//
// Compiled with -march=armv8.2-a+dotprod; only reached through the KernelTable after
// getauxval(AT_HWCAP) reported HWCAP_ASIMDDP. Everything is in an anonymous namespace or in
// bitnet::kernels::dotprod and no standard-library template (nor any inline helper of a shared
// header) is instantiated, so no function compiled for dotprod can be merged by the linker into
// baseline code. The table starts as the neon one; the LUT, quantization and float kernels stay
// NEON. vdotq_s32(acc, a, b) adds to each int32 lane the sum of four int8 products a_i * b_i.
// Twins: the functions of the same names in ref/kernels_ref.cpp.
#include <arm_neon.h>

#include <cstdint>

#include "kernels/isa_tables.h"

// The byte diagrams (int16 entries as low/high byte pairs, lane reinterprets) are little endian.
#if defined(__AARCH64EB__)
#error "the ARM kernels assume little-endian AArch64"
#endif

namespace bitnet::kernels::dotprod {

// ---- MAD: T2 x int8 ---------------------------------------------------------------------------
//
// Contract (twin: ref::gemm_t2): T2 rows (see kernels_neon.cpp for the byte diagram), K_pad a
// multiple of 128, activations zero from k to K_pad. Instead of shifting every code plane down,
// planes 1 and 2 are masked in place: for a block vector v,
//     v & 0x03 = c0,  v & 0x0c = 4 * c1,  v & 0x30 = 16 * c2,  v >> 6 = c3   (all <= 48, int8)
// and SDOT accumulates the dots of planes 0 and 3 into a1, plane 1 into a4, plane 2 into a16, so
// sum_j c_j x_j = a1 + a4 / 4 + a16 / 16 (exact divisions of exact multiples). Bound: the
// K_pad / 4 plane-2 products are <= 32 * 128 each, so |a16| summed over its lanes is
// <= 1024 * K_pad < 2^31 for K_pad < 2^21 (a1 and a4 are smaller). Result:
// sum_j w_j x_j = sum_j c_j x_j - sum_j x_j.

namespace {

// Code planes of one block: p[i] pairs with the activations at 16 * i (i = 2 * plane + half).
struct PlanesT2 {
    int8x16_t p[8];
};

inline PlanesT2 mask_t2(const uint8_t* block) {
    const uint8x16_t v0 = vld1q_u8(block);
    const uint8x16_t v1 = vld1q_u8(block + 16);
    const uint8x16_t m0 = vdupq_n_u8(0x03), m1 = vdupq_n_u8(0x0c), m2 = vdupq_n_u8(0x30);
    PlanesT2 c;
    c.p[0] = vreinterpretq_s8_u8(vandq_u8(v0, m0));
    c.p[1] = vreinterpretq_s8_u8(vandq_u8(v1, m0));
    c.p[2] = vreinterpretq_s8_u8(vandq_u8(v0, m1));
    c.p[3] = vreinterpretq_s8_u8(vandq_u8(v1, m1));
    c.p[4] = vreinterpretq_s8_u8(vandq_u8(v0, m2));
    c.p[5] = vreinterpretq_s8_u8(vandq_u8(v1, m2));
    c.p[6] = vreinterpretq_s8_u8(vshrq_n_u8(v0, 6));
    c.p[7] = vreinterpretq_s8_u8(vshrq_n_u8(v1, 6));
    return c;
}

// The three scaled accumulators of one (row, token).
struct AccT2 {
    int32x4_t a1, a4, a16;
};

inline AccT2 zero_acc() {
    const int32x4_t z = vdupq_n_s32(0);
    return {z, z, z};
}

inline void dot_block(const PlanesT2& c, const int8x16_t* x, AccT2& acc) {
    acc.a1 = vdotq_s32(acc.a1, c.p[0], x[0]);
    acc.a1 = vdotq_s32(acc.a1, c.p[1], x[1]);
    acc.a4 = vdotq_s32(acc.a4, c.p[2], x[2]);
    acc.a4 = vdotq_s32(acc.a4, c.p[3], x[3]);
    acc.a16 = vdotq_s32(acc.a16, c.p[4], x[4]);
    acc.a16 = vdotq_s32(acc.a16, c.p[5], x[5]);
    acc.a1 = vdotq_s32(acc.a1, c.p[6], x[6]);
    acc.a1 = vdotq_s32(acc.a1, c.p[7], x[7]);
}

inline int32_t finish(const AccT2& acc, int32_t x_sum) {
    return vaddvq_s32(acc.a1) + vaddvq_s32(acc.a4) / 4 + vaddvq_s32(acc.a16) / 16 - x_sum;
}

inline void load_x_block(const int8_t* x, int8x16_t* xv) {
    for (int i = 0; i < 8; ++i) xv[i] = vld1q_s8(x + 16 * i);
}

// One token, four rows at a time: the activation loads are shared by the rows.
void gemv_t2_rows4(const uint8_t* r0, int64_t row_bytes, int64_t n_blocks, const int8_t* x,
                   int32_t x_sum, int32_t* out) {
    AccT2 a0 = zero_acc(), a1 = a0, a2 = a0, a3 = a0;
    // Hardware prefetchers follow four interleaved row streams poorly (each crosses pages
    // often): fetch the next group of four rows, which is contiguous, two lines per block. This
    // mirrors the x86 kernels (3-4x from DRAM there); not yet measured on an ARM core. PRFM
    // never faults, so prefetching past the matrix is harmless.
    const uint8_t* next = r0 + 4 * row_bytes;
    for (int64_t b = 0; b < n_blocks; ++b) {
        __builtin_prefetch(next + b * 128);
        __builtin_prefetch(next + b * 128 + 64);
        int8x16_t xv[8];
        load_x_block(x + b * kT2Block, xv);
        const int64_t off = b * kT2BlockBytes;
        dot_block(mask_t2(r0 + off), xv, a0);
        dot_block(mask_t2(r0 + row_bytes + off), xv, a1);
        dot_block(mask_t2(r0 + 2 * row_bytes + off), xv, a2);
        dot_block(mask_t2(r0 + 3 * row_bytes + off), xv, a3);
    }
    out[0] = finish(a0, x_sum);
    out[1] = finish(a1, x_sum);
    out[2] = finish(a2, x_sum);
    out[3] = finish(a3, x_sum);
}

// One row, NT tokens at a time: the masked codes are shared by the tokens.
template <int NT>
void gemm_t2_row(const uint8_t* row, int64_t n_blocks, const int8_t* x, int64_t x_stride,
                 const int32_t* x_sum, int32_t* out, int64_t out_stride) {
    AccT2 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = zero_acc();
    for (int64_t b = 0; b < n_blocks; ++b) {
        const PlanesT2 c = mask_t2(row + b * kT2BlockBytes);
        for (int t = 0; t < NT; ++t) {
            int8x16_t xv[8];
            load_x_block(x + t * x_stride + b * kT2Block, xv);
            dot_block(c, xv, acc[t]);
        }
    }
    for (int t = 0; t < NT; ++t) out[t * out_stride] = finish(acc[t], x_sum[t]);
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
    for (int64_t r = row_begin; r < row_end; ++r) {
        const uint8_t* row = w.codes + r * row_bytes;
        int32_t* o = out + (r - row_begin);
        int64_t t = 0;
        for (; t + 4 <= x.n_tokens; t += 4) {
            gemm_t2_row<4>(row, n_blocks, x.q + t * x.stride, x.stride, x.sum + t,
                           o + t * out_stride, out_stride);
        }
        const int64_t left = x.n_tokens - t;
        const int8_t* xq = x.q + t * x.stride;
        int32_t* ot = o + t * out_stride;
        if (left == 3) gemm_t2_row<3>(row, n_blocks, xq, x.stride, x.sum + t, ot, out_stride);
        if (left == 2) gemm_t2_row<2>(row, n_blocks, xq, x.stride, x.sum + t, ot, out_stride);
        if (left == 1) gemm_t2_row<1>(row, n_blocks, xq, x.stride, x.sum + t, ot, out_stride);
    }
}

// ---- binary: B1 x int8 ------------------------------------------------------------------------
//
// Contract (twin: ref::gemm_b1): the lane masks of kernels_neon.cpp's gemm_b1 (0xff where the bit
// is set) are -1 as int8, so SDOT(mask, x) accumulates -sum_{bit set} x_j exactly in int32
// (|.| <= 128 * K) and sum_{j<k} w_j x_j = -2 * acc - sum x.

void gemm_b1(const B1Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end, int32_t* out,
             int64_t out_stride) {
    const int64_t row_bytes = w.k_pad / 8;
    const uint8x8_t bit8 = vcreate_u8(0x8040201008040201ull);  // lane i: 1 << i
    const uint8x16_t sel = vcombine_u8(bit8, bit8);
    uint8x16_t spread[8];  // byte 2g in lanes 0-7, byte 2g+1 in lanes 8-15
    for (int g = 0; g < 8; ++g) {
        spread[g] = vcombine_u8(vdup_n_u8(static_cast<uint8_t>(2 * g)),
                                vdup_n_u8(static_cast<uint8_t>(2 * g + 1)));
    }
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.stride;
        int64_t r = row_begin;
        // Two rows share the activation loads.
        for (; r + 2 <= row_end; r += 2) {
            const uint8_t* row0 = w.bits + r * row_bytes;
            const uint8_t* row1 = row0 + row_bytes;
            int32x4_t acc0 = vdupq_n_s32(0), acc1 = acc0;
            for (int64_t j = 0; j < w.k_pad; j += kB1Block) {
                const uint8x16_t bits0 = vld1q_u8(row0 + j / 8);
                const uint8x16_t bits1 = vld1q_u8(row1 + j / 8);
                for (int g = 0; g < 8; ++g) {
                    const int8x16_t xv = vld1q_s8(xq + j + 16 * g);
                    const uint8x16_t m0 = vtstq_u8(vqtbl1q_u8(bits0, spread[g]), sel);
                    const uint8x16_t m1 = vtstq_u8(vqtbl1q_u8(bits1, spread[g]), sel);
                    acc0 = vdotq_s32(acc0, vreinterpretq_s8_u8(m0), xv);
                    acc1 = vdotq_s32(acc1, vreinterpretq_s8_u8(m1), xv);
                }
            }
            out[t * out_stride + (r - row_begin)] = -2 * vaddvq_s32(acc0) - x.sum[t];
            out[t * out_stride + (r + 1 - row_begin)] = -2 * vaddvq_s32(acc1) - x.sum[t];
        }
        if (r < row_end) {
            const uint8_t* row0 = w.bits + r * row_bytes;
            int32x4_t acc0 = vdupq_n_s32(0);
            for (int64_t j = 0; j < w.k_pad; j += kB1Block) {
                const uint8x16_t bits0 = vld1q_u8(row0 + j / 8);
                for (int g = 0; g < 8; ++g) {
                    const uint8x16_t m0 = vtstq_u8(vqtbl1q_u8(bits0, spread[g]), sel);
                    acc0 = vdotq_s32(acc0, vreinterpretq_s8_u8(m0), vld1q_s8(xq + j + 16 * g));
                }
            }
            out[t * out_stride + (r - row_begin)] = -2 * vaddvq_s32(acc0) - x.sum[t];
        }
    }
}

// ---- Q8 output layer --------------------------------------------------------------------------
//
// gemm_q8 (twin: ref::gemm_q8): two SDOTs give a block's exact int32 dot spread over four lanes
// (|.| <= 32 * 127 * 127 < 2^19); as in kernels_neon.cpp four blocks fold with vpaddq_s32 into
// one vector of exact dots, each block's term (d_w * d_x) * float(idot) equals the reference's
// bit for bit, and only the sum over blocks is reassociated (4 float lanes).

namespace {

inline int32x4_t dot_q8_block(const int8_t* w, int8x16_t x0, int8x16_t x1) {
    const int32x4_t z = vdupq_n_s32(0);
    return vdotq_s32(vdotq_s32(z, vld1q_s8(w), x0), vld1q_s8(w + 16), x1);
}

template <int NR>
void q8_rows(const int8_t* const* wq, const float* const* wd, const int8_t* xq, const float* xd,
             int64_t n_blocks, float* out) {
    float32x4_t acc[NR];
    float tail[NR];
    for (int r = 0; r < NR; ++r) {
        acc[r] = vdupq_n_f32(0.0f);
        tail[r] = 0.0f;
    }
    // Prefetch the next NR rows (contiguous after these): NR * 128 bytes per four blocks.
    const int8_t* next = wq[NR - 1] + n_blocks * kQ8Block;
    int64_t b = 0;
    for (; b + 4 <= n_blocks; b += 4) {
        for (int i = 0; i < 2 * NR; ++i) __builtin_prefetch(next + NR * b * kQ8Block + 64 * i);
        int8x16_t xv[8];
        for (int i = 0; i < 8; ++i) xv[i] = vld1q_s8(xq + b * kQ8Block + 16 * i);
        const float32x4_t vxd = vld1q_f32(xd + b);
        for (int r = 0; r < NR; ++r) {
            const int8_t* w = wq[r] + b * kQ8Block;
            const int32x4_t i0 = dot_q8_block(w, xv[0], xv[1]);
            const int32x4_t i1 = dot_q8_block(w + 32, xv[2], xv[3]);
            const int32x4_t i2 = dot_q8_block(w + 64, xv[4], xv[5]);
            const int32x4_t i3 = dot_q8_block(w + 96, xv[6], xv[7]);
            const int32x4_t idot = vpaddq_s32(vpaddq_s32(i0, i1), vpaddq_s32(i2, i3));
            const float32x4_t dd = vmulq_f32(vld1q_f32(wd[r] + b), vxd);
            acc[r] = vaddq_f32(acc[r], vmulq_f32(dd, vcvtq_f32_s32(idot)));
        }
    }
    for (; b < n_blocks; ++b) {
        const int8x16_t x0 = vld1q_s8(xq + b * kQ8Block), x1 = vld1q_s8(xq + b * kQ8Block + 16);
        for (int r = 0; r < NR; ++r) {
            const int32_t idot = vaddvq_s32(dot_q8_block(wq[r] + b * kQ8Block, x0, x1));
            tail[r] += (wd[r][b] * xd[b]) * static_cast<float>(idot);
        }
    }
    for (int r = 0; r < NR; ++r) out[r] = vaddvq_f32(acc[r]) + tail[r];
}

}  // namespace

void gemm_q8(const Q8Matrix& w, const ActsQ8& x, int64_t row_begin, int64_t row_end, float* out,
             int64_t out_stride) {
    const int64_t n_blocks = w.n_cols / kQ8Block;
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.n_cols;
        const float* xd = x.d + t * n_blocks;
        float* o = out + t * out_stride;
        int64_t r = row_begin;
        for (; r + 4 <= row_end; r += 4) {
            const int8_t* wq[4] = {w.q + r * w.n_cols, w.q + (r + 1) * w.n_cols,
                                   w.q + (r + 2) * w.n_cols, w.q + (r + 3) * w.n_cols};
            const float* wd[4] = {w.d + r * n_blocks, w.d + (r + 1) * n_blocks,
                                  w.d + (r + 2) * n_blocks, w.d + (r + 3) * n_blocks};
            q8_rows<4>(wq, wd, xq, xd, n_blocks, o + (r - row_begin));
        }
        for (; r < row_end; ++r) {
            const int8_t* wq[1] = {w.q + r * w.n_cols};
            const float* wd[1] = {w.d + r * n_blocks};
            q8_rows<1>(wq, wd, xq, xd, n_blocks, o + (r - row_begin));
        }
    }
}

void register_kernels(KernelTable& table) {
    table.gemm_t2 = gemm_t2;
    table.gemm_b1 = gemm_b1;
    table.gemm_q8 = gemm_q8;
}

}  // namespace bitnet::kernels::dotprod
