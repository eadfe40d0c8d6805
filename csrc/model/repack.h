// Load-time conversion of a BitLinear weight tensor from its file type into the kernels' layouts.
//
// Accepted file types (docs/format.md, "Tensor types"):
//   TQ2_0, TQ1_0 (llama.cpp), I2_S (bitnet.cpp, x86 layout)      -> ternary, T2 layout
//   Q1_0 (ggml, sign bits)                                          -> binary,  B1 layout
//   F32, F16, BF16 holding ternary values {-b, 0, +b}               -> ternary, exact
//   F32, F16, BF16 holding latent weights (bitnet archs only)       -> absmean-quantized
// The dequantized weight is w[r][j] = row_scale[r] * code[r][j] with code in {-1, 0, +1}
// ({-1, +1} for binary). Block formats carry one scale per block: all non-zero blocks of a row
// must agree, since BitLinear accumulates a whole row in int32 before one float multiply.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/aligned_buffer.h"
#include "format/gguf.h"
#include "kernels/kernels.h"

namespace bitnet {

struct PackedLinear {
    std::string name;
    int64_t n_out = 0;                // output features (rows)
    int64_t n_in = 0;                 // input features (K)
    int64_t k_pad = 0;                // kernels::padded_k(n_in)
    bool binary = false;              // B1 layout instead of T2 / L2
    uint32_t source_type = 0;         // TensorType id in the file
    // Ternary matrices are kept in the layout of the kernel family chosen for them at load:
    // T2 for the MAD kernels (packed), L2 for the LUT kernels, T3 for the 1.67-bit kernels.
    kernels::TernaryKernel kernel = kernels::TernaryKernel::kMad;
    AlignedBuffer<uint8_t> packed;    // T2: (n_out, k_pad/4); L2: (ceil(n_out/32), k_pad/4, 32);
                                      // T3: (ceil(n_out/32), k3/12, 80); B1: (n_out, k_pad/8)
    std::vector<float> row_scale;     // (n_out) multiplier of the integer codes

    kernels::T2Matrix t2() const { return {packed.data(), n_out, n_in, k_pad}; }
    kernels::L2Matrix l2() const { return {packed.data(), n_out, n_in, k_pad}; }
    kernels::B1Matrix b1() const { return {packed.data(), n_out, n_in, k_pad}; }
    kernels::T3Matrix t3() const { return {packed.data(), n_out, n_in, kernels::padded_k3(n_in)}; }

    // The integer code (-1, 0, +1) of row r, column j, whatever the layout. For tests and tools.
    int code(int64_t r, int64_t j) const;

    // Repacks a ternary T2 matrix into the layout of family k (a no-op for kMad; only from T2).
    void use_kernel(kernels::TernaryKernel k);
};

// Converts tensor t (ggml shape [n_in, n_out]) into a PackedLinear. allow_latent permits absmean
// quantization of float tensors that are not ternary-valued. Throws FormatError for corrupt data
// (2-bit code 3, trits out of range, inconsistent block scales) and UnsupportedError for a type
// that cannot hold a BitLinear weight.
PackedLinear pack_linear(const GgufFile& file, const GgufTensor& t, bool allow_latent);

// Absmean ternarization of one whole tensor (BitNet b1.58): s = mean|w| (clamped to 1e-5),
// code = clamp(round_half_even(w / s), -1, 1). Exposed for tests.
float absmean_ternarize(const float* w, int64_t n, int8_t* codes);

}  // namespace bitnet
