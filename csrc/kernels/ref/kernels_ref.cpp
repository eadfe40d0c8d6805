// Scalar reference kernels: plain loops that define the semantics every SIMD twin must match.
#include <algorithm>
#include <cmath>

#include "kernels/kernels.h"

namespace bitnet::kernels::ref {

void quantize_i8(const float* x, int64_t n, int64_t n_pad, int8_t* q, float* scale, int32_t* sum) {
    float amax = 0.0f;
    for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));  // NaN is skipped
    // Same float32 operations as torch: 127 / clamp(max|x|, 1e-5), then round(x * s).
    const float s = 127.0f / std::max(amax, 1e-5f);
    int32_t total = 0;
    for (int64_t i = 0; i < n; ++i) {
        float v = x[i] * s;
        if (std::isnan(v)) v = 0.0f;                // NaN inputs quantize to 0, never UB
        v = std::min(std::max(v, -128.0f), 127.0f);  // clamping first keeps the cast defined
        const int8_t qi = static_cast<int8_t>(std::nearbyint(v));  // round half to even
        q[i] = qi;
        total += qi;
    }
    for (int64_t i = n; i < n_pad; ++i) q[i] = 0;
    *scale = s;
    *sum = total;
}

void gemm_t2(const T2Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end, int32_t* out,
             int64_t out_stride) {
    const int64_t row_bytes = w.k_pad / 4;
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.stride;
        for (int64_t r = row_begin; r < row_end; ++r) {
            const uint8_t* row = w.codes + r * row_bytes;
            int32_t acc = 0;
            for (int64_t j = 0; j < w.k_pad; ++j) {
                const int64_t block = j / kT2Block;
                const int64_t within = j % kT2Block;
                const uint8_t byte = row[block * kT2BlockBytes + within % 32];
                const int code = (byte >> (2 * (within / 32))) & 3;
                acc += (code - 1) * xq[j];
            }
            out[t * out_stride + (r - row_begin)] = acc;
        }
    }
}

void gemm_b1(const B1Matrix& w, const ActsI8& x, int64_t row_begin, int64_t row_end, int32_t* out,
             int64_t out_stride) {
    const int64_t row_bytes = w.k_pad / 8;
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const int8_t* xq = x.q + t * x.stride;
        for (int64_t r = row_begin; r < row_end; ++r) {
            const uint8_t* row = w.bits + r * row_bytes;
            int32_t acc = 0;
            // Only the first k weights are real; padding bits read as -1 would wrongly
            // subtract the (zero) padded activations, which is harmless but we stop at k anyway.
            for (int64_t j = 0; j < w.k; ++j) {
                const int bit = (row[j / 8] >> (j % 8)) & 1;
                acc += bit ? xq[j] : -xq[j];
            }
            out[t * out_stride + (r - row_begin)] = acc;
        }
    }
}

}  // namespace bitnet::kernels::ref
