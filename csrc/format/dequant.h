// Dequantization of the float-like tensor types used for embeddings and the output layer.
//
// Rows of token_embd / output may be stored as F32, F16, BF16 (what bitnet writes) or in one of
// ggml's block formats (what llama.cpp's quantizer writes, e.g. Q6_K or Q8_0). These scalar
// routines turn one row into floats; they are the reference for any faster path.
#pragma once

#include <cstdint>

namespace bitnet {

// True when dequantize_row supports the type.
bool can_dequantize(uint32_t type_id);

// Writes n floats decoded from the row at src (n must be a multiple of the type's block size,
// which the GGUF reader has already checked). Returns false for an unsupported type.
bool dequantize_row(uint32_t type_id, const uint8_t* src, int64_t n, float* dst);

}  // namespace bitnet
