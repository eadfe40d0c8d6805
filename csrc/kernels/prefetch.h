// The caller's prefetch hint of the attention kernels (kernels.h, "prefetch hint"), issued a
// line or a few at a time between pieces of work: bursts of prefetches would queue up in front
// of the kernel's own loads. __builtin_prefetch(p, 0, 2) is PREFETCHT1 on x86 and PRFM
// PLDL2KEEP on ARM: a hint, never a fault.
//
// Internal linkage on purpose: each ISA's kernel file is compiled with its own target flags, and
// an inline function shared across them could be linked from the widest one.
#pragma once

#include <cstdint>

namespace bitnet::kernels {
namespace {

struct Prefetcher {
    const char* p;
    const char* end;
    Prefetcher(const void* pf, int64_t bytes)
        : p(static_cast<const char*>(pf)), end(pf != nullptr ? p + bytes : p) {}
    void next(int64_t lines) {
        for (; lines > 0 && p < end; --lines, p += 64) __builtin_prefetch(p, 0, 2);
    }
};

// Lines to prefetch per step for `bytes` spread over `steps` steps (0 steps: none).
inline int64_t lines_per(int64_t bytes, int64_t steps) {
    return steps > 0 ? ((bytes + 63) / 64 + steps - 1) / steps : 0;
}

}  // namespace
}  // namespace bitnet::kernels
