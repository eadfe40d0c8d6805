// Kernel signatures, the weight and activation layouts they consume, and the KernelTable that
// run-time dispatch fills with the best implementation for this CPU.
//
// Only declarations and plain structs live here: this header is included by baseline code, so it
// must never define an inline function that could be compiled with ISA flags (an AVX2 copy of an
// inline helper, picked by the linker, is how a wheel crashes on an older CPU). The constexpr
// helpers below are evaluated at compile time or are trivially the same on every ISA.
//
// Layouts (docs/kernels.md has byte diagrams):
//   T2 (ternary, canonical; the MAD kernels): each row of K weights is padded to
//     K_pad = ceil(K/128)*128 and stored as K_pad/128 blocks of 32 bytes. Weight j of a block
//     (0 <= j < 128) is the 2-bit code (w + 1) in {0, 1, 2} at bits 2*(j/32) .. 2*(j/32)+1 of
//     byte (j % 32). This is the byte layout of each half of a GGUF TQ2_0 block, so TQ2_0 rows
//     copy in without bit shuffling. Codes in the padding are any valid code: padded activations
//     are 0, so they add nothing.
//   L2 (ternary, the LUT kernels): rows are grouped in tiles of 32 (the last tile is padded with
//     zero weights). A tile is K_pad/4 chunks of 32 bytes; chunk c covers columns 4c .. 4c+3 and
//     byte r of it belongs to row 32*tile + r:
//         byte = idx(row, pair 2c) | idx(row, pair 2c+1) << 4,
//         idx(row, pair p) = 3 * (w[row][2p] + 1) + (w[row][2p+1] + 1)   in 0 .. 8.
//     The kernels look each 4-bit index up in the table of its column pair (below). 2 bits per
//     weight, like T2.
//   LUT tables (one per token, built from its int8 activations): for each column pair p,
//     32 bytes: the low bytes (0..15) then the high bytes (16..31) of the 16 int16 entries
//         T[i] = (i / 3 - 1) * x[2p] + (i % 3 - 1) * x[2p+1]   for i < 9,   T[i] = 0 for i >= 9.
//     |T[i]| <= 2 * 128, so an entry is exact in int16. A token's tables take 16 * K_pad bytes.
//   B1 (binary): each row padded to K_pad = ceil(K/128)*128, K_pad/8 bytes; weight j is bit (j % 8)
//     of byte (j / 8), 1 meaning +1 and 0 meaning -1 (ggml Q1_0's bit order). Padding bits are
//     any value: padded activations are 0.
//   Q8 (the int8 output layer, Q8_0-style): rows of n_cols (a multiple of 32) as int8 values in
//     [-127, 127] with one float scale per block of 32: w[r][j] = d[r * n_cols/32 + j/32] * q[r][j].
//   Activations (BitLinear): per token, K_pad int8 values (zero beyond K), the float scale s with
//     q = round(x*s) (absmax: s = 127 / max|x|) and the int32 sum of the K int8 values.
//   Activations (Q8 output layer): per token, n_cols int8 values in [-127, 127] and one float
//     scale per block of 32 (x ~= d * q), like ggml's Q8_0.
//   T3 (ternary, 1.67 bits per weight; the AVX-512 VBMI kernels): three weights of a row form one
//     index idx = 9 * (w0 + 1) + 3 * (w1 + 1) + (w2 + 1) in 0 .. 26 (27 combinations, 5 bits).
//     Rows are grouped in tiles of 32 (the last padded with zero weights) and columns in steps of
//     12 (K3 = ceil(K/12)*12, padding columns hold zero weights): the 4 groups of a step are
//     columns 12s + 3m .. 12s + 3m + 2 (m = 0..3). A tile is K3/12 steps of 80 bytes:
//         bytes 0..63:  byte 4i + m = (idx(row i, group m) & 15) | (idx(row 16+i, group m) & 15) << 4
//         bytes 64..71: bit 4i + m of the little-endian uint64 = idx(row i, group m) >> 4
//         bytes 72..79: bit 4i + m = idx(row 16+i, group m) >> 4
//     (rows relative to the tile, i = 0..15). 640 bits per 384 weights.
//   Q4H (the 4-bit pre-pass of the exact-top-k output layer, model/output_topk.h): the high
//     nibbles of a Q8 matrix, hi = (q + 128) >> 4 in 0..15, standing for q^ = 16 hi - 120 (the
//     middle of the 16 values q can take). Per row, 16 bytes per block of 32 columns:
//         byte j of block b = hi[32b + j] | hi[32b + 16 + j] << 4      (j = 0..15)
//     and one fp16 scale per block (the block's Q8 scale rounded to fp16). 4.5 bits per weight.
#pragma once

#include <cstdint>

namespace bitnet::kernels {

constexpr int64_t kT2Block = 128;       // weights per T2 block
constexpr int64_t kT2BlockBytes = 32;   // bytes per T2 block
constexpr int64_t kB1Block = 128;       // padding granule of B1 rows
constexpr int64_t kL2TileRows = 32;     // rows per L2 tile
constexpr int64_t kL2ChunkBytes = 32;   // bytes per L2 chunk (4 columns of 32 rows)
constexpr int64_t kLutPairBytes = 32;   // bytes of LUT table per column pair
constexpr int64_t kQ8Block = 32;        // values per Q8 block
constexpr int64_t kT3TileRows = 32;     // rows per T3 tile
constexpr int64_t kT3StepCols = 12;     // columns per T3 step (4 groups of 3)
constexpr int64_t kT3StepBytes = 80;    // bytes per T3 step of one tile

// Rounds K up to the padded row length used by the T2, L2 and B1 layouts.
constexpr int64_t padded_k(int64_t k) { return (k + kT2Block - 1) / kT2Block * kT2Block; }
// Bytes of LUT tables for one token of K_pad activations.
constexpr int64_t lut_bytes(int64_t k_pad) { return k_pad / 2 * kLutPairBytes; }
// Rounds K up to the padded row length of the T3 layout.
constexpr int64_t padded_k3(int64_t k) { return (k + kT3StepCols - 1) / kT3StepCols * kT3StepCols; }
// Bytes of a T3 matrix of n_rows x k.
constexpr int64_t t3_bytes(int64_t n_rows, int64_t k) {
    return (n_rows + kT3TileRows - 1) / kT3TileRows * (padded_k3(k) / kT3StepCols) * kT3StepBytes;
}

// A ternary matrix in the canonical T2 layout: n_rows rows of k_pad/4 bytes each.
struct T2Matrix {
    const uint8_t* codes = nullptr;  // (n_rows, k_pad / 4)
    int64_t n_rows = 0;
    int64_t k = 0;                   // logical row length
    int64_t k_pad = 0;               // padded_k(k)
};

// A ternary matrix in the L2 layout: ceil(n_rows/32) tiles of 8 * k_pad bytes each.
struct L2Matrix {
    const uint8_t* data = nullptr;   // (n_tiles, k_pad / 4, 32)
    int64_t n_rows = 0;
    int64_t k = 0;
    int64_t k_pad = 0;
};

// A binary matrix in the B1 layout: n_rows rows of k_pad/8 bytes each.
struct B1Matrix {
    const uint8_t* bits = nullptr;  // (n_rows, k_pad / 8)
    int64_t n_rows = 0;
    int64_t k = 0;
    int64_t k_pad = 0;
};

// An int8 matrix in the Q8 layout (the output layer).
struct Q8Matrix {
    const int8_t* q = nullptr;  // (n_rows, n_cols)
    const float* d = nullptr;   // (n_rows, n_cols / 32)
    int64_t n_rows = 0;
    int64_t n_cols = 0;         // a multiple of 32
};

// A ternary matrix in the T3 layout: ceil(n_rows/32) tiles of (k3 / 12) * 80 bytes each.
struct T3Matrix {
    const uint8_t* data = nullptr;  // (n_tiles, k3 / 12, 80)
    int64_t n_rows = 0;
    int64_t k = 0;
    int64_t k3 = 0;                 // padded_k3(k)
};

// The Q4H pre-pass matrix of an output layer.
struct Q4HMatrix {
    const uint8_t* hi = nullptr;   // (n_rows, n_cols / 2)
    const uint16_t* d = nullptr;   // (n_rows, n_cols / 32) fp16 bits
    int64_t n_rows = 0;
    int64_t n_cols = 0;            // a multiple of 32
};

// Quantized BitLinear activations of n_tokens tokens.
struct ActsI8 {
    const int8_t* q = nullptr;      // (n_tokens, stride), zero beyond k
    const float* scale = nullptr;   // (n_tokens): q = round(x * scale)
    const int32_t* sum = nullptr;   // (n_tokens): sum of the k int8 values
    int64_t n_tokens = 0;
    int64_t stride = 0;             // >= k_pad of the matrices it multiplies
};

// LUT tables of n_tokens tokens, built by build_lut from ActsI8.
struct LutTables {
    const uint8_t* data = nullptr;  // (n_tokens, stride)
    int64_t n_tokens = 0;
    int64_t stride = 0;             // bytes per token, >= lut_bytes(k_pad)
};

// Q8 activations of n_tokens tokens (output layer).
struct ActsQ8 {
    const int8_t* q = nullptr;  // (n_tokens, n_cols)
    const float* d = nullptr;   // (n_tokens, n_cols / 32)
    int64_t n_tokens = 0;
    int64_t n_cols = 0;
};

// ---- integer kernels --------------------------------------------------------------------------

// Quantizes one row of n floats to int8 with the absmax rule of BitNet b1.58:
//   s = 127 / max(max|x|, 1e-5);  q[i] = clamp(round_half_even(x[i] * s), -128, 127)
// NaN inputs quantize to 0 (max|x| skips them). Writes q[0 .. n_pad) (zeros beyond n),
// *scale = s and *sum = sum of q. n_pad >= n. Results are bit-identical on every ISA.
using QuantizeI8Fn = void (*)(const float* x, int64_t n, int64_t n_pad, int8_t* q, float* scale,
                              int32_t* sum);

// MAD: out[t * out_stride + (r - row_begin)] = sum_j w[r][j] * x.q[t][j] for rows
// [row_begin, row_end) and all tokens t. Exact int32: |sum| <= 128 * K, far below 2^31.
using GemmT2Fn = void (*)(const T2Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end,
                          int32_t* out, int64_t out_stride);
using GemmB1Fn = void (*)(const B1Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end,
                          int32_t* out, int64_t out_stride);

// Builds the LUT tables (layout above) of all x.n_tokens tokens for matrices of row length k_pad
// (k_pad <= x.stride) into tables (x.n_tokens, lut_bytes(k_pad)).
using BuildLutFn = void (*)(const ActsI8& x, int64_t k_pad, uint8_t* tables);

// LUT: the same sums as GemmT2Fn from an L2 matrix and the tables of the same activations.
// row_begin is a multiple of 32; row_end is a multiple of 32 or w.n_rows. Exact int32.
using GemmL2Fn = void (*)(const L2Matrix& w, const LutTables& x, int64_t row_begin,
                          int64_t row_end, int32_t* out, int64_t out_stride);

// Quantizes n floats (n a multiple of 32) to Q8 blocks: d = max|x| / 127 over each block of 32,
// q = round_half_even(x / d) (0 when d is 0; NaN quantizes to 0). Writes q[0..n), d[0..n/32).
using QuantizeQ8Fn = void (*)(const float* x, int64_t n, int8_t* q, float* d);

// out[t * out_stride + (r - row_begin)] = sum over blocks b of (w.d[r,b] * x.d[t,b]) * idot(b),
// idot(b) the exact int32 dot product of block b; blocks summed in order in float32
// (SIMD twins may reassociate the float sum: the bound is float rounding, not exactness).
using GemmQ8Fn = void (*)(const Q8Matrix& w, const ActsQ8& x, int64_t row_begin, int64_t row_end,
                          float* out, int64_t out_stride);

// T3: the same sums as GemmT2Fn from a T3 matrix and int8 activations (x.stride >= k; the kernels
// read x.q only below k). row_begin is a multiple of 32; row_end is a multiple of 32 or w.n_rows.
// Exact int32.
using GemmT3Fn = void (*)(const T3Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end,
                          int32_t* out, int64_t out_stride);

// Q4H pre-pass: out[t * out_stride + (r - row_begin)] = sum over blocks b of
// (fp16_to_float(w.d[r,b]) * x.d[t,b]) * I(b),  I(b) = sum_j (16 hi_j - 120) * x.q[t][j] exact int32;
// blocks summed in order in float32 (SIMD twins reassociate the sum over blocks only).
using GemmQ4HFn = void (*)(const Q4HMatrix& w, const ActsQ8& x, int64_t row_begin, int64_t row_end,
                           float* out, int64_t out_stride);

// ---- float kernels (attention, norms) ---------------------------------------------------------

// Sum of a[i] * b[i] for n floats; b given as fp16 bits for the *_f16 variant.
using DotF32Fn = float (*)(const float* a, const float* b, int64_t n);
using DotF16Fn = float (*)(const float* a, const uint16_t* b, int64_t n);
// y[i] += a * x[i] for n values; x as fp16 bits for the *_f16 variant.
using AxpyF32Fn = void (*)(float a, const float* x, float* y, int64_t n);
using AxpyF16Fn = void (*)(float a, const uint16_t* x, float* y, int64_t n);
// out[t] = x[t] * (1 / sqrt(mean(x[t]^2) + eps)) * weight, n values. out may alias x.
using RmsNormFn = void (*)(const float* x, const float* weight, int64_t n, float eps, float* out);
// In place: x[i] = exp(x[i] - max(x)) / sum; returns nothing. n >= 1.
using SoftmaxFn = void (*)(float* x, int64_t n);
// Converts n floats to fp16 bits (round half to even) and back.
using ToF16Fn = void (*)(const float* x, uint16_t* out, int64_t n);
using FromF16Fn = void (*)(const uint16_t* x, float* out, int64_t n);

// ---- attention over the KV cache (model/attention.cpp; engine-core) ---------------------------
//
// The decoder's attention runs in chunks of positions (model/attention.h): for one chunk, the
// scores of the query heads that share a kv head against the chunk's cached K rows, the chunk's
// softmax statistics, then the probability-weighted sum of its V rows. A chunk may span several
// cache blocks, so scores and sums are computed over runs of consecutive rows and continue from
// one run to the next.
//
// Cached rows of one kv head, n consecutive positions of hd values each (docs/kernels.md, "KV
// cache"):
//   f32:  float (n, hd)
//   f16:  fp16 bits (n, hd)
//   q8_0: int8 quants (n, hd) and, apart from them, fp16 scales (n, hd / 32):
//         value[j][i] = d[j][i / 32] * q[j][i] (ggml's Q8_0 block: amax / 127, round half even)
// Queries: n_q heads of hd floats, head h at q + h * hd (already multiplied by the softmax scale);
// against q8_0 keys, the same heads quantized to Q8 blocks: int8 (n_q, hd), float d (n_q, hd / 32).
//
// Prefetch hint: pf, pf_bytes name memory the caller will pass next (the rows a little further
// along the cache); a kernel may issue prefetches for it spread over its own work (streaming the
// cache this way keeps the memory busy without bursts of requests). It never reads it otherwise
// and never changes a result; pf may be null.
//
// Invariance: each output element depends only on its own inputs (its query head, the rows, n),
// never on n_q or on where a row falls in the kernel's internal grouping, so a query gets the same
// bits alone or among others. SIMD twins reassociate sums and use fused multiply-adds: they
// differ from the reference by float rounding only, and each is deterministic.

// s[h * s_stride + j] = sum_i q[h][i] * k[j][i] for heads h < n_q and rows j < n (ref: i
// ascending). q8_0: sum over blocks b ascending of (q_d[h][b] * k_d[j][b]) * idot(h, j, b), idot
// the exact int32 dot product of block b (|idot| <= 32 * 127 * 128, far below 2^31).
using AttnScoresF32Fn = void (*)(const float* q, int64_t n_q, int64_t hd, const float* k,
                                 int64_t n, float* s, int64_t s_stride, const void* pf,
                                 int64_t pf_bytes);
using AttnScoresF16Fn = void (*)(const float* q, int64_t n_q, int64_t hd, const uint16_t* k,
                                 int64_t n, float* s, int64_t s_stride, const void* pf,
                                 int64_t pf_bytes);
using AttnScoresQ8Fn = void (*)(const int8_t* q, const float* q_d, int64_t n_q, int64_t hd,
                                const int8_t* k, const uint16_t* k_d, int64_t n, float* s,
                                int64_t s_stride, const void* pf, int64_t pf_bytes);
// Softmax statistics of n_q rows of n >= 1 scores (row h at s + h * s_stride), in place:
//   m[h] = max_j s[h][j];  s[h][j] = exp(s[h][j] - m[h]);  l[h] = sum_j s[h][j] (ref: j ascending).
// A NaN score makes its row's l NaN (and the head's output NaN); +inf scores likewise.
using AttnSoftmaxFn = void (*)(float* s, int64_t n_q, int64_t n, int64_t s_stride, float* m,
                               float* l);
// o[h * o_stride + i] += sum_j p[h * p_stride + j] * v[j][i] for heads h < n_q, i < hd, j
// ascending (each element a sequential sum over j: a later run continues it exactly). q8_0:
// each term is p[h][j] * (v_d[j][i / 32] * v_q[j][i]).
using AttnAccumF32Fn = void (*)(const float* p, int64_t p_stride, int64_t n_q, int64_t hd,
                                const float* v, int64_t n, float* o, int64_t o_stride,
                                const void* pf, int64_t pf_bytes);
using AttnAccumF16Fn = void (*)(const float* p, int64_t p_stride, int64_t n_q, int64_t hd,
                                const uint16_t* v, int64_t n, float* o, int64_t o_stride,
                                const void* pf, int64_t pf_bytes);
using AttnAccumQ8Fn = void (*)(const float* p, int64_t p_stride, int64_t n_q, int64_t hd,
                               const int8_t* v, const uint16_t* v_d, int64_t n, float* o,
                               int64_t o_stride, const void* pf, int64_t pf_bytes);

// Declares the attention kernels of one ISA namespace (the twin of BITNET_DECLARE_KERNELS).
#define BITNET_DECLARE_ATTENTION_KERNELS()                                                        \
    void attn_scores_f32(const float* q, int64_t n_q, int64_t hd, const float* k, int64_t n,      \
                         float* s, int64_t s_stride, const void* pf, int64_t pf_bytes);           \
    void attn_scores_f16(const float* q, int64_t n_q, int64_t hd, const uint16_t* k, int64_t n,   \
                         float* s, int64_t s_stride, const void* pf, int64_t pf_bytes);           \
    void attn_scores_q8(const int8_t* q, const float* q_d, int64_t n_q, int64_t hd,               \
                        const int8_t* k, const uint16_t* k_d, int64_t n, float* s,                \
                        int64_t s_stride, const void* pf, int64_t pf_bytes);                      \
    void attn_softmax(float* s, int64_t n_q, int64_t n, int64_t s_stride, float* m, float* l);    \
    void attn_accum_f32(const float* p, int64_t p_stride, int64_t n_q, int64_t hd,                \
                        const float* v, int64_t n, float* o, int64_t o_stride, const void* pf,    \
                        int64_t pf_bytes);                                                        \
    void attn_accum_f16(const float* p, int64_t p_stride, int64_t n_q, int64_t hd,                \
                        const uint16_t* v, int64_t n, float* o, int64_t o_stride, const void* pf, \
                        int64_t pf_bytes);                                                        \
    void attn_accum_q8(const float* p, int64_t p_stride, int64_t n_q, int64_t hd,                 \
                       const int8_t* v, const uint16_t* v_d, int64_t n, float* o,                 \
                       int64_t o_stride, const void* pf, int64_t pf_bytes)

// The implementations chosen for this CPU (or forced by BITNET_ISA).
struct KernelTable {
    const char* isa = "ref";
    QuantizeI8Fn quantize_i8 = nullptr;
    GemmT2Fn gemm_t2 = nullptr;
    GemmB1Fn gemm_b1 = nullptr;
    BuildLutFn build_lut = nullptr;
    GemmL2Fn gemm_l2 = nullptr;
    QuantizeQ8Fn quantize_q8 = nullptr;
    GemmQ8Fn gemm_q8 = nullptr;
    DotF32Fn dot_f32 = nullptr;
    DotF16Fn dot_f16 = nullptr;
    AxpyF32Fn axpy_f32 = nullptr;
    AxpyF16Fn axpy_f16 = nullptr;
    RmsNormFn rms_norm = nullptr;
    SoftmaxFn softmax = nullptr;
    ToF16Fn to_f16 = nullptr;
    FromF16Fn from_f16 = nullptr;
    // attention over the KV cache (engine-core)
    AttnScoresF32Fn attn_scores_f32 = nullptr;
    AttnScoresF16Fn attn_scores_f16 = nullptr;
    AttnScoresQ8Fn attn_scores_q8 = nullptr;
    AttnSoftmaxFn attn_softmax = nullptr;
    AttnAccumF32Fn attn_accum_f32 = nullptr;
    AttnAccumF16Fn attn_accum_f16 = nullptr;
    AttnAccumQ8Fn attn_accum_q8 = nullptr;
    // -- kernels round two (issue 14) --
    GemmT3Fn gemm_t3 = nullptr;
    GemmQ4HFn gemm_q4h = nullptr;
    bool native_t3 = false;  // gemm_t3 is this level's own SIMD kernel, not the reference loop
};

// Declares every kernel of one ISA namespace (ref, avx2, neon, dotprod) with the signatures
// above. Each ISA's source defines the ones it implements; kernels_for() fills the others of its
// table from the next lower level.
#define BITNET_DECLARE_KERNELS()                                                                  \
    void quantize_i8(const float* x, int64_t n, int64_t n_pad, int8_t* q, float* scale,           \
                     int32_t* sum);                                                               \
    void gemm_t2(const T2Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end,          \
                 int32_t* out, int64_t out_stride);                                               \
    void gemm_b1(const B1Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end,          \
                 int32_t* out, int64_t out_stride);                                               \
    void build_lut(const ActsI8& x, int64_t k_pad, uint8_t* tables);                              \
    void gemm_l2(const L2Matrix& w, const LutTables& x, int64_t row_begin, int64_t row_end,       \
                 int32_t* out, int64_t out_stride);                                               \
    void quantize_q8(const float* x, int64_t n, int8_t* q, float* d);                             \
    void gemm_q8(const Q8Matrix& w, const ActsQ8& x, int64_t row_begin, int64_t row_end,          \
                 float* out, int64_t out_stride);                                                 \
    float dot_f32(const float* a, const float* b, int64_t n);                                     \
    float dot_f16(const float* a, const uint16_t* b, int64_t n);                                  \
    void axpy_f32(float a, const float* x, float* y, int64_t n);                                  \
    void axpy_f16(float a, const uint16_t* x, float* y, int64_t n);                               \
    void rms_norm(const float* x, const float* weight, int64_t n, float eps, float* out);         \
    void softmax(float* x, int64_t n);                                                            \
    void to_f16(const float* x, uint16_t* out, int64_t n);                                        \
    void from_f16(const uint16_t* x, float* out, int64_t n);                                      \
    void gemm_t3(const T3Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end,          \
                 int32_t* out, int64_t out_stride);                                               \
    void gemm_q4h(const Q4HMatrix& w, const ActsQ8& x, int64_t row_begin, int64_t row_end,        \
                  float* out, int64_t out_stride)

namespace ref {
// Scalar reference kernels: the executable specification and the test oracle.
BITNET_DECLARE_KERNELS();
BITNET_DECLARE_ATTENTION_KERNELS();
}  // namespace ref

// ---- dispatch (dispatch.cpp) ------------------------------------------------------------------

// The kernel table for this process: the best ISA this CPU and OS support, lowered by the
// environment variable BITNET_ISA (one of isa_names()). Detected once, thread-safe.
const KernelTable& active_kernels();

// The names of every level this build knows for its architecture, lowest first, whether this CPU
// has them or not: ref, avx2, avx512, avx512vnni, avx512vbmi (x86-64) or ref, neon, dotprod, i8mm
// (AArch64). Null-terminated.
const char* const* isa_names();

// The reference table (always available; tests compare every other table against it).
const KernelTable& reference_kernels();

// The table of a named ISA, or nullptr when this build or CPU lacks it.
const KernelTable* kernels_for(const char* isa);

// Which matrix-product family (and layout) to use for a ternary matrix: MAD on T2, LUT on L2,
// or the 1.67-bit T3 layout.
enum class TernaryKernel { kMad, kLut, kT3 };

// The family for a matrix of n_rows x k on this table, for n_tokens tokens at a time with
// n_threads threads: BITNET_KERNEL=mad|lut|t3 forces one (t3 only where the table has a native
// T3 kernel), otherwise a heuristic measured with bench/kernel_bench (docs/benchmarks.md) picks the
// faster.
TernaryKernel choose_ternary_kernel(const KernelTable& kt, int64_t n_rows, int64_t k,
                                    int64_t n_tokens, int n_threads);

// ---- load-time repacking (pack.cpp) -----------------------------------------------------------

// Repacks a T2 matrix into the L2 layout: dst holds ceil(n_rows/32) * 8 * k_pad bytes.
void pack_l2_from_t2(const T2Matrix& src, uint8_t* dst);

// Repacks a T2 matrix into the T3 layout: dst holds t3_bytes(n_rows, k) bytes.
void pack_t3_from_t2(const T2Matrix& src, uint8_t* dst);

// The Q4H high nibbles of rows [row_begin, row_end) of a Q8 matrix: hi (rows, n_cols / 2).
void pack_q4h_from_q8(const Q8Matrix& src, int64_t row_begin, int64_t row_end, uint8_t* hi);

// ---- scratch memory for kernels (dispatch.cpp, baseline code) ---------------------------------

// A 64-byte aligned buffer of at least `bytes` bytes owned by the calling thread, for kernels that
// rearrange their activations; valid until the same thread calls it again. Grows, never shrinks.
// Throws std::bad_alloc when memory runs out (the only exception a kernel can raise).
uint8_t* kernel_scratch(int64_t bytes);

}  // namespace bitnet::kernels
