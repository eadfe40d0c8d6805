// Block sizes and byte sizes of ggml's tensor types (the numbers of ggml.h / gguf-py constants).
#include "format/types.h"

#include <array>

#include "core/error.h"

namespace bitnet {
namespace {

constexpr uint32_t kQK = 256;  // super-block size of the k-quants and TQ types

struct Entry {
    uint32_t id;
    TypeTraits traits;
};

// clang-format off
constexpr std::array<Entry, 35> kTypes = {{
    {0,  {"F32",     1,   4}},
    {1,  {"F16",     1,   2}},
    {2,  {"Q4_0",    32,  2 + 16}},
    {3,  {"Q4_1",    32,  2 + 2 + 16}},
    {6,  {"Q5_0",    32,  2 + 4 + 16}},
    {7,  {"Q5_1",    32,  2 + 2 + 4 + 16}},
    {8,  {"Q8_0",    32,  2 + 32}},
    {9,  {"Q8_1",    32,  4 + 4 + 32}},
    {10, {"Q2_K",    kQK, 2 + 2 + kQK / 16 + kQK / 4}},
    {11, {"Q3_K",    kQK, 2 + kQK / 4 + kQK / 8 + 12}},
    {12, {"Q4_K",    kQK, 2 + 2 + kQK / 2 + 12}},
    {13, {"Q5_K",    kQK, 2 + 2 + kQK / 2 + kQK / 8 + 12}},
    {14, {"Q6_K",    kQK, 2 + kQK / 2 + kQK / 4 + kQK / 16}},
    {15, {"Q8_K",    kQK, 4 + kQK + kQK / 8}},
    {16, {"IQ2_XXS", kQK, 2 + kQK / 4}},
    {17, {"IQ2_XS",  kQK, 2 + kQK / 4 + kQK / 32}},
    {18, {"IQ3_XXS", kQK, 2 + kQK / 4 + kQK / 8}},
    {19, {"IQ1_S",   kQK, 2 + kQK / 8 + kQK / 16}},
    {20, {"IQ4_NL",  32,  2 + 16}},
    {21, {"IQ3_S",   kQK, 2 + kQK / 4 + kQK / 8 + kQK / 32 + 4}},
    {22, {"IQ2_S",   kQK, 2 + kQK / 4 + kQK / 16}},
    {23, {"IQ4_XS",  kQK, 2 + 2 + kQK / 2 + kQK / 64}},
    {24, {"I8",      1,   1}},
    {25, {"I16",     1,   2}},
    {26, {"I32",     1,   4}},
    {27, {"I64",     1,   8}},
    {28, {"F64",     1,   8}},
    {29, {"IQ1_M",   kQK, kQK / 8 + kQK / 16 + kQK / 32}},
    {30, {"BF16",    1,   2}},
    {34, {"TQ1_0",   kQK, 2 + 4 * 13}},
    {35, {"TQ2_0",   kQK, 2 + 64}},
    {36, {"I2_S",    1,   1}},  // sized specially, see tensor_bytes()
    {39, {"MXFP4",   32,  1 + 16}},
    {40, {"NVFP4",   64,  4 + 32}},
    {41, {"Q1_0",    128, 2 + 16}},
}};
// clang-format on

}  // namespace

std::optional<TypeTraits> type_traits(uint32_t type_id) {
    for (const Entry& e : kTypes) {
        if (e.id == type_id) return e.traits;
    }
    return std::nullopt;
}

std::string type_name(uint32_t type_id) {
    auto traits = type_traits(type_id);
    return traits ? std::string(traits->name) : str_cat("type ", type_id);
}

std::optional<uint64_t> tensor_bytes(uint32_t type_id, uint64_t row_length, uint64_t n_elements) {
    auto traits = type_traits(type_id);
    if (!traits || row_length == 0) return std::nullopt;
    if (type_id == static_cast<uint32_t>(TensorType::I2_S)) {
        // bitnet.cpp: 4 codes per byte over the flattened tensor, then a float32 scale; the
        // tensor's byte size is n/4 + 32 (the scale plus padding).
        if (n_elements % 4 != 0) return std::nullopt;
        return n_elements / 4 + 32;
    }
    if (row_length % traits->block_size != 0) return std::nullopt;
    const uint64_t n_blocks = n_elements / traits->block_size;
    if (n_blocks != 0 && traits->block_bytes > UINT64_MAX / n_blocks) return std::nullopt;
    return n_blocks * traits->block_bytes;
}

}  // namespace bitnet
