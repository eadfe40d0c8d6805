// Scalar dequantization of ggml row formats (block layouts as in ggml-common.h / gguf-py quants).
#include "format/dequant.h"

#include <cstring>

#include "core/half.h"
#include "format/types.h"

namespace bitnet {
namespace {

uint16_t load_u16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}

// Q8_0: blocks of 32 as {fp16 d; int8 qs[32]}, x = d * q.
void dequant_q8_0(const uint8_t* src, int64_t n, float* dst) {
    for (int64_t b = 0; b < n / 32; ++b, src += 34) {
        const float d = fp16_to_float(load_u16(src));
        const int8_t* qs = reinterpret_cast<const int8_t*>(src + 2);
        for (int j = 0; j < 32; ++j) dst[b * 32 + j] = d * static_cast<float>(qs[j]);
    }
}

}  // namespace

bool can_dequantize(uint32_t type_id) {
    switch (static_cast<TensorType>(type_id)) {
        case TensorType::F32:
        case TensorType::F16:
        case TensorType::BF16:
        case TensorType::Q8_0: return true;
        default: return false;
    }
}

bool dequantize_row(uint32_t type_id, const uint8_t* src, int64_t n, float* dst) {
    switch (static_cast<TensorType>(type_id)) {
        case TensorType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return true;
        case TensorType::F16:
            for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_float(load_u16(src + 2 * i));
            return true;
        case TensorType::BF16:
            for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(load_u16(src + 2 * i));
            return true;
        case TensorType::Q8_0: dequant_q8_0(src, n, dst); return true;
        default: return false;
    }
}

}  // namespace bitnet
