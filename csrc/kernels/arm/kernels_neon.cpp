// NEON (Advanced SIMD, baseline armv8-a) kernels: int8 activations times ternary (MAD and LUT),
// binary and Q8 weights, and the float ops of the decoder's hot path.
//
// Advanced SIMD is mandatory in AArch64, so this file is compiled for the baseline ISA and the
// neon table is always available on aarch64. Everything is in an anonymous namespace or in
// bitnet::kernels::neon, and no standard-library template is instantiated. Each kernel's scalar
// twin (the semantics) is the function of the same name in ref/kernels_ref.cpp; the dotprod
// table (kernels_dotprod.cpp) starts from this one and replaces the kernels SDOT speeds up.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "kernels/isa_tables.h"

// The byte diagrams (int16 entries as low/high byte pairs, lane reinterprets) are little endian.
#if defined(__AARCH64EB__)
#error "the ARM kernels assume little-endian AArch64"
#endif

namespace bitnet::kernels::neon {
namespace {

// NaN lanes become +0 (the reference quantizes NaN to 0 and skips it in max|x|).
inline float32x4_t zero_nan(float32x4_t v) {
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v), vceqq_f32(v, v)));
}

// v = x * s with NaN -> 0, clamped to [lo, hi], rounded half to even (FCVTNS: round to nearest,
// ties to even, whatever FPCR says), as std::nearbyint under the default rounding mode.
inline int32x4_t round_clamp(float32x4_t x, float32x4_t s, float32x4_t lo, float32x4_t hi) {
    return vcvtnq_s32_f32(vminq_f32(vmaxq_f32(zero_nan(vmulq_f32(x, s)), lo), hi));
}

// Narrows 16 int32 (four vectors, each already in int8 range, so exact) into 16 int8 in order.
inline int8x16_t narrow_i32x16(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
    const int16x8_t ab = vcombine_s16(vmovn_s32(a), vmovn_s32(b));
    const int16x8_t cd = vcombine_s16(vmovn_s32(c), vmovn_s32(d));
    return vcombine_s8(vmovn_s16(ab), vmovn_s16(cd));
}

inline int8x16_t quantize16(const float* x, float32x4_t s, float32x4_t lo, float32x4_t hi) {
    return narrow_i32x16(
        round_clamp(vld1q_f32(x), s, lo, hi), round_clamp(vld1q_f32(x + 4), s, lo, hi),
        round_clamp(vld1q_f32(x + 8), s, lo, hi), round_clamp(vld1q_f32(x + 12), s, lo, hi));
}

// max|x| over NaN-free lanes of one vector folded into m.
inline float32x4_t max_abs(float32x4_t m, float32x4_t x) {
    return vmaxq_f32(m, zero_nan(vabsq_f32(x)));
}

}  // namespace

// ---- activation quantization ------------------------------------------------------------------
//
// quantize_i8 (twin: ref::quantize_i8), bit-identical: max|x| is order-independent once NaN lanes
// are zeroed; s and every q are the same float32 operations as the reference. The sum of q goes
// through vpaddlq_s8 (int16, |.| <= 256) and vpadalq_s16 into int32 lanes.

void quantize_i8(const float* x, int64_t n, int64_t n_pad, int8_t* q, float* scale, int32_t* sum) {
    float32x4_t vmax = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vmax = max_abs(vmax, vld1q_f32(x + i));
    float amax = vmaxvq_f32(vmax);
    for (; i < n; ++i) {
        const float a = x[i] < 0.0f ? -x[i] : x[i];
        amax = a > amax ? a : amax;  // false for NaN: skipped
    }
    const float s = 127.0f / (amax > 1e-5f ? amax : 1e-5f);

    const float32x4_t vs = vdupq_n_f32(s);
    const float32x4_t lo = vdupq_n_f32(-128.0f);
    const float32x4_t hi = vdupq_n_f32(127.0f);
    int32x4_t vsum = vdupq_n_s32(0);
    i = 0;
    for (; i + 16 <= n; i += 16) {
        const int8x16_t packed = quantize16(x + i, vs, lo, hi);
        vst1q_s8(q + i, packed);
        vsum = vpadalq_s16(vsum, vpaddlq_s8(packed));
    }
    if (i < n) {
        // The tail goes through the same vector code on a zero-padded copy (zeros quantize to 0).
        float tail[16] = {};
        std::memcpy(tail, x + i, static_cast<size_t>(n - i) * sizeof(float));
        const int8x16_t packed = quantize16(tail, vs, lo, hi);
        int8_t out[16];
        vst1q_s8(out, packed);
        std::memcpy(q + i, out, static_cast<size_t>(n - i));
        vsum = vpadalq_s16(vsum, vpaddlq_s8(packed));
    }
    if (n_pad > n) std::memset(q + n, 0, static_cast<size_t>(n_pad - n));
    *scale = s;
    *sum = vaddvq_s32(vsum);
}

// ---- MAD: T2 x int8 ---------------------------------------------------------------------------
//
// Contract (twin: ref::gemm_t2): T2 rows, K_pad a multiple of 128, activations zero from k to
// K_pad. A 32-byte block is two 16-byte vectors v0 (bytes 0-15), v1 (bytes 16-31); code plane
// p = (v >> 2p) & 3 of vh holds the codes c = w + 1 in {0, 1, 2} of columns 32p + 16h .. +15,
// so code vector 2p + h pairs with the 16 contiguous activations at 16 * (2p + h):
//
//     byte i of the block:  [c(96+i) c(64+i) c(32+i) c(i)]   (2 bits each, plane 3 .. plane 0)
//
// and sum_j w_j x_j = sum_j c_j x_j - sum_j x_j. vmull_s8 / vmlal_(high_)s8 accumulate the 128
// products c * x (|.| <= 2 * 128 = 256) of a block into eight int16 lanes: 16 products per lane,
// |.| <= 4096, exact; vpadalq_s16 widens the block into int32 lanes.

namespace {

// The eight code vectors of one block, in activation order.
struct CodesT2 {
    int8x16_t c[8];
};

inline CodesT2 unpack_t2(const uint8_t* block) {
    const uint8x16_t m3 = vdupq_n_u8(3);
    const uint8x16_t v0 = vld1q_u8(block);
    const uint8x16_t v1 = vld1q_u8(block + 16);
    CodesT2 p;
    p.c[0] = vreinterpretq_s8_u8(vandq_u8(v0, m3));
    p.c[1] = vreinterpretq_s8_u8(vandq_u8(v1, m3));
    p.c[2] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v0, 2), m3));
    p.c[3] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v1, 2), m3));
    p.c[4] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v0, 4), m3));
    p.c[5] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v1, 4), m3));
    p.c[6] = vreinterpretq_s8_u8(vshrq_n_u8(v0, 6));
    p.c[7] = vreinterpretq_s8_u8(vshrq_n_u8(v1, 6));
    return p;
}

// The 128 products of one block into int32 lanes of acc; x holds the block's activations.
inline int32x4_t dot_block(const CodesT2& p, const int8x16_t* x, int32x4_t acc) {
    int16x8_t s = vmull_s8(vget_low_s8(p.c[0]), vget_low_s8(x[0]));
    s = vmlal_high_s8(s, p.c[0], x[0]);
    for (int i = 1; i < 8; ++i) {
        s = vmlal_s8(s, vget_low_s8(p.c[i]), vget_low_s8(x[i]));
        s = vmlal_high_s8(s, p.c[i], x[i]);
    }
    return vpadalq_s16(acc, s);
}

inline void load_x_block(const int8_t* x, int8x16_t* xv) {
    for (int i = 0; i < 8; ++i) xv[i] = vld1q_s8(x + 16 * i);
}

// One token, four rows at a time: the activation loads are shared by the rows.
void gemv_t2_rows4(const uint8_t* r0, int64_t row_bytes, int64_t n_blocks, const int8_t* x,
                   int32_t x_sum, int32_t* out) {
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;
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
        a0 = dot_block(unpack_t2(r0 + off), xv, a0);
        a1 = dot_block(unpack_t2(r0 + row_bytes + off), xv, a1);
        a2 = dot_block(unpack_t2(r0 + 2 * row_bytes + off), xv, a2);
        a3 = dot_block(unpack_t2(r0 + 3 * row_bytes + off), xv, a3);
    }
    out[0] = vaddvq_s32(a0) - x_sum;
    out[1] = vaddvq_s32(a1) - x_sum;
    out[2] = vaddvq_s32(a2) - x_sum;
    out[3] = vaddvq_s32(a3) - x_sum;
}

// One row, NT tokens at a time: the unpacked codes are shared by the tokens.
template <int NT>
void gemm_t2_row(const uint8_t* row, int64_t n_blocks, const int8_t* x, int64_t x_stride,
                 const int32_t* x_sum, int32_t* out, int64_t out_stride) {
    int32x4_t acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = vdupq_n_s32(0);
    for (int64_t b = 0; b < n_blocks; ++b) {
        const CodesT2 p = unpack_t2(row + b * kT2BlockBytes);
        for (int t = 0; t < NT; ++t) {
            int8x16_t xv[8];
            load_x_block(x + t * x_stride + b * kT2Block, xv);
            acc[t] = dot_block(p, xv, acc[t]);
        }
    }
    for (int t = 0; t < NT; ++t) out[t * out_stride] = vaddvq_s32(acc[t]) - x_sum[t];
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
// Contract (twin: ref::gemm_b1): bit j of a row set means +1, clear -1; columns k .. K_pad have
// zero activations, so sum_{j<k} w_j x_j = 2 * sum_{bit set} x_j - sum x. The 16 bit bytes of
// 128 columns spread with vqtbl1q_u8 into eight vectors (byte 2g in lanes 0-7, byte 2g+1 in
// lanes 8-15) and vtstq_u8 against 1, 2, 4, .., 128 makes the 0 / 0xff lane masks:
//
//     bits:  [b0 b1 .. b15]  ->  spread g: [b2g x8 | b2g+1 x8] & [1 2 4 .. 128 | 1 2 .. 128]
//
// vpadalq_s8 adds the masked activations pairwise into int16 lanes: 8 vectors of a 128-column
// block add at most 8 * 2 * 128 = 2048 per lane, exact; each block is widened into int32.

namespace {

inline uint8x16_t b1_spread_index(int g) {
    const uint8x8_t lo = vdup_n_u8(static_cast<uint8_t>(2 * g));
    const uint8x8_t hi = vdup_n_u8(static_cast<uint8_t>(2 * g + 1));
    return vcombine_u8(lo, hi);
}

inline uint8x16_t b1_bit_select() {
    const uint8x8_t bits = vcreate_u8(0x8040201008040201ull);  // lane i: 1 << i
    return vcombine_u8(bits, bits);
}

}  // namespace

void gemm_b1(const B1Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end, int32_t* out,
             int64_t out_stride) {
    const int64_t row_bytes = w.k_pad / 8;
    const uint8x16_t sel = b1_bit_select();
    uint8x16_t spread[8];
    for (int g = 0; g < 8; ++g) spread[g] = b1_spread_index(g);
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.stride;
        for (int64_t r = row_begin; r < row_end; ++r) {
            const uint8_t* row = w.bits + r * row_bytes;
            int32x4_t acc = vdupq_n_s32(0);
            for (int64_t j = 0; j < w.k_pad; j += kB1Block) {
                const uint8x16_t bits = vld1q_u8(row + j / 8);
                int16x8_t s = vdupq_n_s16(0);
                for (int g = 0; g < 8; ++g) {
                    const uint8x16_t mask = vtstq_u8(vqtbl1q_u8(bits, spread[g]), sel);
                    const int8x16_t xv = vld1q_s8(xq + j + 16 * g);
                    s = vpadalq_s8(s, vandq_s8(xv, vreinterpretq_s8_u8(mask)));
                }
                acc = vpadalq_s16(acc, s);
            }
            out[t * out_stride + (r - row_begin)] = 2 * vaddvq_s32(acc) - x.sum[t];
        }
    }
}

// ---- LUT: L2 x tables -------------------------------------------------------------------------
//
// build_lut (twin: ref::build_lut): the 16 int16 entries of a pair are ca * a + cb * b with
// ca, cb in {-1, 0, +1} (exact: |.| <= 256), in two int16x8 vectors e0 (entries 0-7), e1 (8-15);
// vuzp1q_u8 / vuzp2q_u8 take their even / odd bytes, i.e. the low / high bytes (little endian):
//
//     e0 = [lo0 hi0 lo1 hi1 .. lo7 hi7]  e1 = [lo8 hi8 .. lo15 hi15]
//     ->   [lo0 .. lo15] [hi0 .. hi15]   (the pair's 32 bytes)
//
// gemm_l2 (twin: ref::gemm_l2): a 32-byte chunk is two vectors of 16 rows' index bytes (rows
// 0-15, 16-31); idx & 15 indexes pair 2c, idx >> 4 pair 2c + 1. vqtbl1q_u8 looks the low and the
// high bytes of the entries up in the pair's two 16-byte tables, vzip1q_u8 / vzip2q_u8 (low,
// high) rebuild the int16 entries of rows 0-7 / 8-15 (16-23 / 24-31). int16 accumulators gain at
// most 2 * 256 per chunk: widened into int32 every 32 chunks (32 * 512 = 16384 < 32767).

void build_lut(const ActsI8& x, int64_t k_pad, uint8_t* tables) {
    const int64_t stride = lut_bytes(k_pad);
    static const int16_t kCa[16] = {-1, -1, -1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
    static const int16_t kCb[16] = {-1, 0, 1, -1, 0, 1, -1, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    const int16x8_t ca0 = vld1q_s16(kCa), ca1 = vld1q_s16(kCa + 8);
    const int16x8_t cb0 = vld1q_s16(kCb), cb1 = vld1q_s16(kCb + 8);
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.stride;
        uint8_t* tab = tables + t * stride;
        for (int64_t p = 0; p < k_pad / 2; ++p) {
            const int16x8_t a = vdupq_n_s16(xq[2 * p]);
            const int16x8_t b = vdupq_n_s16(xq[2 * p + 1]);
            const int16x8_t e0 = vaddq_s16(vmulq_s16(a, ca0), vmulq_s16(b, cb0));  // entries 0-7
            const int16x8_t e1 = vaddq_s16(vmulq_s16(a, ca1), vmulq_s16(b, cb1));  // entries 8-15
            const uint8x16_t b0 = vreinterpretq_u8_s16(e0), b1 = vreinterpretq_u8_s16(e1);
            vst1q_u8(tab + p * kLutPairBytes, vuzp1q_u8(b0, b1));
            vst1q_u8(tab + p * kLutPairBytes + 16, vuzp2q_u8(b0, b1));
        }
    }
}

namespace {

// int16 entries of 16 rows for pair tables (lo, hi) and their 4-bit indices: rows 0-7 into
// r07, rows 8-15 into r815.
inline void lut_lookup16(uint8x16_t lo, uint8x16_t hi, uint8x16_t idx, int16x8_t& r07,
                         int16x8_t& r815) {
    const uint8x16_t l = vqtbl1q_u8(lo, idx);
    const uint8x16_t h = vqtbl1q_u8(hi, idx);
    r07 = vreinterpretq_s16_u8(vzip1q_u8(l, h));
    r815 = vreinterpretq_s16_u8(vzip2q_u8(l, h));
}

// Sums of one 32-row tile for NT tokens into out32[t][32] (row order 0..31).
template <int NT>
void gemm_l2_tile(const uint8_t* tile, int64_t n_chunks, const uint8_t* const* tabs,
                  int32_t (*out32)[32]) {
    const uint8x16_t m4 = vdupq_n_u8(0x0f);
    int32x4_t wide[NT][8];
    for (int t = 0; t < NT; ++t) {
        for (int i = 0; i < 8; ++i) wide[t][i] = vdupq_n_s32(0);
    }
    for (int64_t c0 = 0; c0 < n_chunks; c0 += 32) {
        const int64_t c_end = c0 + 32 < n_chunks ? c0 + 32 : n_chunks;
        int16x8_t acc[NT][4];  // rows 0-7, 8-15, 16-23, 24-31
        for (int t = 0; t < NT; ++t) {
            for (int i = 0; i < 4; ++i) acc[t][i] = vdupq_n_s16(0);
        }
        for (int64_t c = c0; c < c_end; ++c) {
            // A tile is one linear stream: fetch 1 KiB ahead (the next tile at the end).
            __builtin_prefetch(tile + c * kL2ChunkBytes + 1024);
            const uint8x16_t v0 = vld1q_u8(tile + c * kL2ChunkBytes);
            const uint8x16_t v1 = vld1q_u8(tile + c * kL2ChunkBytes + 16);
            const uint8x16_t ia0 = vandq_u8(v0, m4), ib0 = vshrq_n_u8(v0, 4);
            const uint8x16_t ia1 = vandq_u8(v1, m4), ib1 = vshrq_n_u8(v1, 4);
            for (int t = 0; t < NT; ++t) {
                const uint8_t* e = tabs[t] + 2 * c * kLutPairBytes;
                const uint8x16_t a_lo = vld1q_u8(e), a_hi = vld1q_u8(e + 16);
                const uint8x16_t b_lo = vld1q_u8(e + 32), b_hi = vld1q_u8(e + 48);
                int16x8_t x0, x1, y0, y1;
                lut_lookup16(a_lo, a_hi, ia0, x0, x1);
                lut_lookup16(b_lo, b_hi, ib0, y0, y1);
                acc[t][0] = vaddq_s16(acc[t][0], vaddq_s16(x0, y0));
                acc[t][1] = vaddq_s16(acc[t][1], vaddq_s16(x1, y1));
                lut_lookup16(a_lo, a_hi, ia1, x0, x1);
                lut_lookup16(b_lo, b_hi, ib1, y0, y1);
                acc[t][2] = vaddq_s16(acc[t][2], vaddq_s16(x0, y0));
                acc[t][3] = vaddq_s16(acc[t][3], vaddq_s16(x1, y1));
            }
        }
        for (int t = 0; t < NT; ++t) {
            for (int i = 0; i < 4; ++i) {
                wide[t][2 * i] = vaddw_s16(wide[t][2 * i], vget_low_s16(acc[t][i]));
                wide[t][2 * i + 1] = vaddw_high_s16(wide[t][2 * i + 1], acc[t][i]);
            }
        }
    }
    for (int t = 0; t < NT; ++t) {
        for (int i = 0; i < 8; ++i) vst1q_s32(out32[t] + 4 * i, wide[t][i]);
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
            // Two tokens share each chunk's indices (4 would spill the 48 accumulators).
            const int64_t nt = x.n_tokens - t >= 2 ? 2 : 1;
            const uint8_t* tabs[2] = {x.data + t * x.stride, x.data + (t + nt - 1) * x.stride};
            int32_t sums[2][32];
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
// gemm_q8 (twin: ref::gemm_q8): per block of 32, vmull_s8 + vmlal_high_s8 of 16 values gives
// int16 lanes of two products (|.| <= 2 * 127 * 127 = 32258, exact: Q8 values are in
// [-127, 127]), widened pairwise into int32. Four blocks' lanes fold with vpaddq_s32 into one
// vector of their exact int32 dots, so each block's term (d_w * d_x) * float(idot) is the
// reference's bit for bit; only the sum over blocks is reassociated (4 float lanes).

void quantize_q8(const float* x, int64_t n, int8_t* q, float* d) {
    const float32x4_t lo = vdupq_n_f32(-127.0f);
    const float32x4_t hi = vdupq_n_f32(127.0f);
    for (int64_t b = 0; b < n / kQ8Block; ++b) {
        const float* xb = x + b * kQ8Block;
        float32x4_t m = vdupq_n_f32(0.0f);
        for (int i = 0; i < 8; ++i) m = max_abs(m, vld1q_f32(xb + 4 * i));
        const float amax = vmaxvq_f32(m);
        const float db = amax / 127.0f;
        const float inv = db != 0.0f ? 1.0f / db : 0.0f;
        const float32x4_t vi = vdupq_n_f32(inv);
        vst1q_s8(q + b * kQ8Block, quantize16(xb, vi, lo, hi));
        vst1q_s8(q + b * kQ8Block + 16, quantize16(xb + 16, vi, lo, hi));
        d[b] = db;
    }
}

namespace {

// The exact int32 dot of one Q8 block, spread over four lanes.
inline int32x4_t dot_q8_block(const int8_t* w, const int8x16_t x0, const int8x16_t x1) {
    const int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16);
    int16x8_t p0 = vmull_s8(vget_low_s8(w0), vget_low_s8(x0));
    p0 = vmlal_high_s8(p0, w0, x0);
    int16x8_t p1 = vmull_s8(vget_low_s8(w1), vget_low_s8(x1));
    p1 = vmlal_high_s8(p1, w1, x1);
    return vpadalq_s16(vpaddlq_s16(p0), p1);
}

// out[i] = Q8 row (wq, wd) . activations (xq, xd) for NR rows sharing the activation loads.
template <int NR>
void q8_rows(const int8_t* const* wq, const float* const* wd, const int8_t* xq, const float* xd,
             int64_t n_blocks, float* out, int64_t out_step) {
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
    for (int r = 0; r < NR; ++r) out[r * out_step] = vaddvq_f32(acc[r]) + tail[r];
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
        for (; r + 2 <= row_end; r += 2) {
            const int8_t* wq[2] = {w.q + r * w.n_cols, w.q + (r + 1) * w.n_cols};
            const float* wd[2] = {w.d + r * n_blocks, w.d + (r + 1) * n_blocks};
            q8_rows<2>(wq, wd, xq, xd, n_blocks, o + (r - row_begin), 1);
        }
        if (r < row_end) {
            const int8_t* wq[1] = {w.q + r * w.n_cols};
            const float* wd[1] = {w.d + r * n_blocks};
            q8_rows<1>(wq, wd, xq, xd, n_blocks, o + (r - row_begin), 1);
        }
    }
}

void register_float_kernels(KernelTable& table);  // ops_neon.cpp
void register_attention_kernels(KernelTable& table);  // attention_neon.cpp

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
}

}  // namespace bitnet::kernels::neon
