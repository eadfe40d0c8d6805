// The registry of tensor types that may appear in a GGUF file: ggml's numbering, block sizes and
// byte sizes, plus bitnet.cpp's I2_S (see docs/format.md, "Tensor types").
//
// Numbers are ggml's and are never reused. A type the registry knows can be sized and skipped
// even if no kernel consumes it; which types are accepted for which tensor role is decided by the
// model loader (model/weights.cpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace bitnet {

enum class TensorType : uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    // 31..33: Q4_0_4_4, Q4_0_4_8, Q4_0_8_8, retired by ggml
    TQ1_0 = 34,  // ternary, 256 per block, 1.6875 bits per weight
    TQ2_0 = 35,  // ternary, 256 per block, 2.0625 bits per weight
    I2_S = 36,   // bitnet.cpp's ternary type (ggml's retired IQ4_NL_4_4 number), x86 layout
    // 37, 38: retired by ggml
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,  // binary (sign bits), 128 per block, 1.125 bits per weight
};

struct TypeTraits {
    const char* name;
    uint32_t block_size;   // elements per block; rows must be a multiple of it
    uint32_t block_bytes;  // bytes per block
};

// The traits of a known type id, or nullopt for an id this build does not know.
std::optional<TypeTraits> type_traits(uint32_t type_id);

// Human-readable name of a type id ("TQ2_0", or "type 97" when unknown).
std::string type_name(uint32_t type_id);

// Bytes occupied by a tensor of n_elements whose rows have row_length elements, or nullopt when
// the type is unknown or row_length is not a multiple of the block size. Overflow is reported as
// nullopt too. I2_S stores n/4 bytes followed by one float32 scale, padded to 32 bytes.
std::optional<uint64_t> tensor_bytes(uint32_t type_id, uint64_t row_length, uint64_t n_elements);

}  // namespace bitnet
