// NEON float kernels of the decoder's hot path: dot products and axpy over float or fp16 rows
// (attention over the KV cache), RMSNorm, fp16 conversion. Twins: the functions of the same names
// in ref/kernels_ref.cpp. dot_f32 / dot_f16 reassociate their sums (4 accumulators of 4 lanes)
// and use fused multiply-adds: they differ from the reference by float rounding only. axpy
// (up to NaN payloads), rms_norm's epilogue and the fp16 conversions do the reference's float
// operations lane by lane and are bit-identical to it; rms_norm's double sum of squares is
// reassociated.
// Same rules as kernels_neon.cpp (baseline armv8-a; fp16 <-> fp32 conversion is part of it).
#include <arm_neon.h>

#include <cstdint>

#include "kernels/isa_tables.h"

// The byte diagrams (int16 entries as low/high byte pairs, lane reinterprets) are little endian.
#if defined(__AARCH64EB__)
#error "the ARM kernels assume little-endian AArch64"
#endif

namespace bitnet::kernels::neon {
namespace {

inline float32x4_t load_f16(const uint16_t* p) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
}

inline float f16_scalar(uint16_t h) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

float dot_f32(const float* a, const float* b, int64_t n) {
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
        s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
        s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
    }
    for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    float acc = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
    for (; i < n; ++i) acc += a[i] * b[i];
    return acc;
}

float dot_f16(const float* a, const uint16_t* b, int64_t n) {
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(b + i));
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vcvt_f32_f16(vget_low_f16(h)));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vcvt_high_f32_f16(h));
    }
    for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + i), load_f16(b + i));
    float acc = vaddvq_f32(vaddq_f32(s0, s1));
    for (; i < n; ++i) acc += a[i] * f16_scalar(b[i]);
    return acc;
}

// y += a * x as the reference's two roundings (multiply, then add): bit-identical.
void axpy_f32(float a, const float* x, float* y, int64_t n) {
    const float32x4_t va = vdupq_n_f32(a);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        vst1q_f32(y + i, vaddq_f32(vld1q_f32(y + i), vmulq_f32(va, vld1q_f32(x + i))));
    }
    for (; i < n; ++i) y[i] += a * x[i];
}

void axpy_f16(float a, const uint16_t* x, float* y, int64_t n) {
    const float32x4_t va = vdupq_n_f32(a);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        vst1q_f32(y + i, vaddq_f32(vld1q_f32(y + i), vmulq_f32(va, load_f16(x + i))));
    }
    for (; i < n; ++i) y[i] += a * f16_scalar(x[i]);
}

void rms_norm(const float* x, const float* weight, int64_t n, float eps, float* out) {
    // Sum of squares in double lanes, like the reference: each float * float is exact in double,
    // so only the order of the additions differs.
    float64x2_t s0 = vdupq_n_f64(0.0), s1 = s0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(x + i);
        const float64x2_t lo = vcvt_f64_f32(vget_low_f32(v));
        const float64x2_t hi = vcvt_high_f64_f32(v);
        s0 = vfmaq_f64(s0, lo, lo);
        s1 = vfmaq_f64(s1, hi, hi);
    }
    double sum_sq = vaddvq_f64(vaddq_f64(s0, s1));
    for (; i < n; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
    const float mean_sq = static_cast<float>(sum_sq / static_cast<double>(n));
    const float inv = 1.0f / __builtin_sqrtf(mean_sq + eps);
    const float32x4_t vinv = vdupq_n_f32(inv);
    i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vmulq_f32(vld1q_f32(x + i), vinv);
        vst1q_f32(out + i, vmulq_f32(vld1q_f32(weight + i), v));
    }
    for (; i < n; ++i) out[i] = weight[i] * (x[i] * inv);
}

// FCVTN rounds to nearest even under the default FPCR, like float_to_fp16, including overflow to
// infinity and subnormal results. NaN lanes are rewritten to the reference's quiet NaN
// (sign | 0x7e00) instead of the hardware's payload-preserving one.
inline uint16x4_t to_f16x4(float32x4_t v) {
    const uint16x4_t h = vreinterpret_u16_f16(vcvt_f16_f32(v));
    const uint32x4_t bits = vreinterpretq_u32_f32(v);
    const uint16x4_t nan = vmovn_u32(vmvnq_u32(vceqq_f32(v, v)));
    const uint16x4_t quiet = vorr_u16(vand_u16(vshrn_n_u32(bits, 16), vdup_n_u16(0x8000)),
                                      vdup_n_u16(0x7e00));
    return vbsl_u16(nan, quiet, h);
}

void to_f16(const float* x, uint16_t* out, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(out + i, to_f16x4(vld1q_f32(x + i)));
    for (; i < n; ++i) out[i] = vget_lane_u16(to_f16x4(vdupq_n_f32(x[i])), 0);
}

// FCVTL is exact; NaN lanes are rewritten to the reference's payload-keeping conversion
// (sign | 0x7f800000 | mantissa << 13, which leaves a signaling NaN signaling).
inline float32x4_t from_f16x4(uint16x4_t h) {
    const uint32x4_t f = vreinterpretq_u32_f32(vcvt_f32_f16(vreinterpret_f16_u16(h)));
    const uint32x4_t w = vmovl_u16(h);
    const uint32x4_t nan = vcgtq_u32(vandq_u32(w, vdupq_n_u32(0x7fff)), vdupq_n_u32(0x7c00));
    const uint32x4_t exact = vorrq_u32(vorrq_u32(vshlq_n_u32(vandq_u32(w, vdupq_n_u32(0x8000)), 16),
                                                 vdupq_n_u32(0x7f800000)),
                                       vshlq_n_u32(vandq_u32(w, vdupq_n_u32(0x3ff)), 13));
    return vreinterpretq_f32_u32(vbslq_u32(nan, exact, f));
}

void from_f16(const uint16_t* x, float* out, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(out + i, from_f16x4(vld1_u16(x + i)));
    for (; i < n; ++i) out[i] = vgetq_lane_f32(from_f16x4(vdup_n_u16(x[i])), 0);
}

}  // namespace

void register_float_kernels(KernelTable& table) {
    table.dot_f32 = dot_f32;
    table.dot_f16 = dot_f16;
    table.axpy_f32 = axpy_f32;
    table.axpy_f16 = axpy_f16;
    table.rms_norm = rms_norm;
    table.to_f16 = to_f16;
    table.from_f16 = from_f16;
}

}  // namespace bitnet::kernels::neon
