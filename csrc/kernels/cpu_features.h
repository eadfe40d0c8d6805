// What this CPU and its operating system support, detected once at run time.
//
// x86: CPUID for the instruction sets and XGETBV for the OS saving the YMM state (a CPU with AVX2
// under an OS that does not enable it must not run AVX2 code). ARM: getauxval(AT_HWCAP) on Linux;
// AArch64 always has NEON (Advanced SIMD), dotprod (SDOT/UDOT) is optional.
#pragma once

#include <string>

namespace bitnet::kernels {

struct CpuFeatures {
    bool x86 = false;
    bool avx2 = false;  // AVX2 and FMA and F16C, with OS support for the YMM registers
    bool aarch64 = false;
    bool neon = false;
    bool dotprod = false;
    std::string brand;  // e.g. "AMD EPYC 7B13" (x86 CPUID brand string, or empty)

    // "avx2 fma f16c" style list of what was found.
    std::string summary() const;
};

// The features of this CPU: detected on first call, then cached. Thread-safe.
const CpuFeatures& cpu_features();

}  // namespace bitnet::kernels
