// What this CPU and its operating system support, detected once at run time.
//
// x86: CPUID for the instruction sets and XGETBV for the OS saving the register state (a CPU with
// AVX2 under an OS that does not enable the YMM state must not run AVX2 code; AVX-512 needs the
// opmask and both ZMM state components as well). ARM: getauxval(AT_HWCAP/AT_HWCAP2) on Linux;
// AArch64 always has NEON (Advanced SIMD), dotprod (SDOT/UDOT) and i8mm (SMMLA) are optional.
#pragma once

#include <string>

namespace bitnet::kernels {

struct CpuFeatures {
    bool x86 = false;
    bool avx2 = false;  // AVX2 and FMA and F16C, with OS support for the YMM registers
    // AVX-512 F, BW, VL, DQ and CD, with OS support for the opmask and ZMM registers (XCR0 bits
    // 5-7). The extensions below are only set when this is.
    bool avx512 = false;
    bool avx512vnni = false;  // AVX512_VNNI (vpdpbusd on ZMM/YMM/XMM, EVEX)
    bool avx512vbmi = false;  // AVX512_VBMI (vpermb, vpermt2b, vpmultishiftqb)
    bool avx_vnni = false;    // AVX-VNNI (the VEX form, Alder Lake+); detected, no kernels use it
    bool aarch64 = false;
    bool neon = false;
    bool dotprod = false;
    bool i8mm = false;  // SMMLA / UMMLA / USMMLA (FEAT_I8MM, HWCAP2_I8MM)
    std::string brand;  // e.g. "AMD EPYC 7B13" (x86 CPUID brand string, or empty)

    // "avx2 fma f16c" style list of what was found.
    std::string summary() const;
};

// The features of this CPU: detected on first call, then cached. Thread-safe.
const CpuFeatures& cpu_features();

}  // namespace bitnet::kernels
