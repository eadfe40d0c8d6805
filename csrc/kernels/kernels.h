// Kernel signatures, the weight and activation layouts they consume, and the KernelTable that
// run-time dispatch fills with the best implementation for this CPU.
//
// Only declarations and plain structs live here: this header is included by baseline code, so it
// must never define an inline function that could be compiled with ISA flags (an AVX2 copy of an
// inline helper, picked by the linker, is how a wheel crashes on an older CPU).
//
// Layouts (docs/kernels.md has byte diagrams):
//   T2 (ternary, canonical): each row of K weights is padded to K_pad = ceil(K/128)*128 and
//     stored as K_pad/128 blocks of 32 bytes. Weight j of a block (0 <= j < 128) is the 2-bit
//     code (w + 1) in {0, 1, 2} at bits 2*(j/32) .. 2*(j/32)+1 of byte (j % 32). This is the byte
//     layout of each half of a GGUF TQ2_0 block, so TQ2_0 rows copy in without bit shuffling.
//     Codes in the padding are any valid code: padded activations are 0, so they add nothing.
//   B1 (binary): each row padded to K_pad = ceil(K/128)*128, K_pad/8 bytes; weight j is bit (j % 8)
//     of byte (j / 8), 1 meaning +1 and 0 meaning -1 (ggml Q1_0's bit order). Padding bits are
//     any value: padded activations are 0.
//   Activations: per token, K_pad int8 values (zero beyond K), the float scale s with q = round(x*s)
//     (absmax: s = 127 / max|x|) and the int32 sum of the K int8 values.
#pragma once

#include <cstdint>

namespace bitnet::kernels {

constexpr int64_t kT2Block = 128;       // weights per T2 block
constexpr int64_t kT2BlockBytes = 32;   // bytes per T2 block
constexpr int64_t kB1Block = 128;       // padding granule of B1 rows

// Rounds K up to the padded row length used by the T2 and B1 layouts.
constexpr int64_t padded_k(int64_t k) { return (k + kT2Block - 1) / kT2Block * kT2Block; }

// A ternary matrix in the canonical T2 layout: n_rows rows of k_pad/4 bytes each.
struct T2Matrix {
    const uint8_t* codes = nullptr;  // (n_rows, k_pad / 4)
    int64_t n_rows = 0;
    int64_t k = 0;                   // logical row length
    int64_t k_pad = 0;               // padded_k(k)
};

// A binary matrix in the B1 layout: n_rows rows of k_pad/8 bytes each.
struct B1Matrix {
    const uint8_t* bits = nullptr;  // (n_rows, k_pad / 8)
    int64_t n_rows = 0;
    int64_t k = 0;
    int64_t k_pad = 0;
};

// Quantized activations of n_tokens tokens.
struct ActsI8 {
    const int8_t* q = nullptr;      // (n_tokens, stride), zero beyond k
    const float* scale = nullptr;   // (n_tokens): q = round(x * scale)
    const int32_t* sum = nullptr;   // (n_tokens): sum of the k int8 values
    int64_t n_tokens = 0;
    int64_t stride = 0;             // >= k_pad of the matrices it multiplies
};

// Quantizes one row of n floats to int8 with the absmax rule of BitNet b1.58:
//   s = 127 / max(max|x|, 1e-5);  q[i] = clamp(round_half_even(x[i] * s), -128, 127)
// Writes q[0 .. n_pad) (zeros beyond n), *scale = s and *sum = sum of q. n_pad >= n.
using QuantizeI8Fn = void (*)(const float* x, int64_t n, int64_t n_pad, int8_t* q, float* scale,
                              int32_t* sum);

// out[t * out_stride + (r - row_begin)] = sum_j w[r][j] * x.q[t][j] for rows [row_begin, row_end)
// and all tokens t. Exact int32: |sum| <= 127 * K, far below 2^31 for any real K.
using GemmT2Fn = void (*)(const T2Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end,
                          int32_t* out, int64_t out_stride);
using GemmB1Fn = void (*)(const B1Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end,
                          int32_t* out, int64_t out_stride);

// The implementations chosen for this CPU (or forced by BITNET_ISA).
struct KernelTable {
    const char* isa = "ref";
    QuantizeI8Fn quantize_i8 = nullptr;
    GemmT2Fn gemm_t2 = nullptr;
    GemmB1Fn gemm_b1 = nullptr;
};

namespace ref {
// Scalar reference kernels: the executable specification and the test oracle.
void quantize_i8(const float* x, int64_t n, int64_t n_pad, int8_t* q, float* scale, int32_t* sum);
void gemm_t2(const T2Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end, int32_t* out,
             int64_t out_stride);
void gemm_b1(const B1Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end, int32_t* out,
             int64_t out_stride);
}  // namespace ref

// The kernel table for this process: detected once, on first use, thread-safe.
const KernelTable& active_kernels();

// The reference table (always available; tests compare every other table against it).
const KernelTable& reference_kernels();

}  // namespace bitnet::kernels
