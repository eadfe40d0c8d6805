// CPU feature detection (see cpu_features.h). Compiled for the baseline ISA: it only asks.
#include "kernels/cpu_features.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace bitnet::kernels {
namespace {

#if defined(__x86_64__) || defined(__i386__)
uint64_t read_xcr0() {
    uint32_t eax = 0, edx = 0;
    // xgetbv with ecx = 0; only valid when CPUID says OSXSAVE.
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (static_cast<uint64_t>(edx) << 32) | eax;
}

void detect_x86(CpuFeatures& f) {
    f.x86 = true;
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return;
    const bool fma = (ecx >> 12) & 1;
    const bool osxsave = (ecx >> 27) & 1;
    const bool avx = (ecx >> 28) & 1;
    const bool f16c = (ecx >> 29) & 1;
    // XMM (bit 1) and YMM (bit 2) state enabled by the OS; AVX-512 also needs the opmask (5),
    // ZMM0-15 upper halves (6) and ZMM16-31 (7) components.
    const uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    const bool os_ymm = (xcr0 & 0x6) == 0x6;
    const bool os_zmm = (xcr0 & 0xe6) == 0xe6;
    bool avx2 = false;
    bool avx512 = false, vnni = false, vbmi = false, avx_vnni = false;
    const unsigned max_leaf = __get_cpuid_max(0, nullptr);
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, eax, ebx, ecx, edx);
        avx2 = (ebx >> 5) & 1;
        const bool f512 = (ebx >> 16) & 1, dq = (ebx >> 17) & 1, cd = (ebx >> 28) & 1;
        const bool bw = (ebx >> 30) & 1, vl = (ebx >> 31) & 1;
        avx512 = f512 && dq && cd && bw && vl;
        vbmi = (ecx >> 1) & 1;
        vnni = (ecx >> 11) & 1;
        if (eax >= 1) {  // eax of leaf 7.0: the highest sub-leaf
            __cpuid_count(7, 1, eax, ebx, ecx, edx);
            avx_vnni = (eax >> 4) & 1;
        }
    }
    f.avx2 = avx && avx2 && fma && f16c && os_ymm;
    f.avx512 = f.avx2 && avx512 && os_zmm;
    f.avx512vnni = f.avx512 && vnni;
    f.avx512vbmi = f.avx512 && vbmi;
    f.avx_vnni = f.avx2 && avx_vnni;

    char brand[49] = {};
    if (__get_cpuid_max(0x80000000u, nullptr) >= 0x80000004u) {
        for (unsigned i = 0; i < 3; ++i) {
            unsigned regs[4];
            __get_cpuid(0x80000002u + i, &regs[0], &regs[1], &regs[2], &regs[3]);
            std::memcpy(brand + 16 * i, regs, 16);
        }
    }
    f.brand = brand;
    const size_t first = f.brand.find_first_not_of(' ');
    const size_t last = f.brand.find_last_not_of(' ');
    f.brand = first == std::string::npos ? "" : f.brand.substr(first, last - first + 1);
}
#endif

CpuFeatures detect() {
    CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
    detect_x86(f);
#elif defined(__aarch64__)
    f.aarch64 = true;
    f.neon = true;  // Advanced SIMD is mandatory in AArch64
#if defined(__linux__)
    const unsigned long hwcap = getauxval(AT_HWCAP);
    const unsigned long hwcap2 = getauxval(AT_HWCAP2);
    f.dotprod = (hwcap & (1ul << 20)) != 0;  // HWCAP_ASIMDDP
    f.i8mm = (hwcap2 & (1ul << 13)) != 0;    // HWCAP2_I8MM
#endif
#endif
    return f;
}

}  // namespace

std::string CpuFeatures::summary() const {
    std::string s;
    auto add = [&s](bool on, const char* name) {
        if (!on) return;
        if (!s.empty()) s += ' ';
        s += name;
    };
    add(x86, "x86_64");
    add(avx2, "avx2 fma f16c");
    add(avx512, "avx512f avx512bw avx512vl avx512dq avx512cd");
    add(avx512vnni, "avx512vnni");
    add(avx512vbmi, "avx512vbmi");
    add(avx_vnni, "avxvnni");
    add(aarch64, "aarch64");
    add(neon, "neon");
    add(dotprod, "dotprod");
    add(i8mm, "i8mm");
    return s;
}

const CpuFeatures& cpu_features() {
    static const CpuFeatures features = detect();
    return features;
}

}  // namespace bitnet::kernels
