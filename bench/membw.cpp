// Baseline-ISA half of the read-bandwidth probe, and the choice of variant (membw.h).
#include "membw.h"

#include <cstring>

#include "kernels/cpu_features.h"

namespace bitnet::bench {

#if defined(BITNET_MEMBW_AVX2)
uint64_t sum_words_avx2(const uint64_t* p, int64_t n);  // membw_avx2.cpp
#endif

namespace {

// Eight independent 16-byte accumulators (GCC/Clang vector extensions: SSE2 or NEON registers),
// so the loop waits on loads, not on the adds' latency.
uint64_t sum_words_base(const uint64_t* p, int64_t n) {
    typedef uint64_t V __attribute__((vector_size(16)));
    V acc[8] = {};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int j = 0; j < 8; ++j) {
            V v;
            std::memcpy(&v, p + i + 2 * j, sizeof v);
            acc[j] += v;
        }
    }
    uint64_t total = 0;
    for (int j = 0; j < 8; ++j) total += acc[j][0] + acc[j][1];
    for (; i < n; ++i) total += p[i];
    return total;
}

}  // namespace

uint64_t sum_words(const uint64_t* p, int64_t n, const char** isa) {
#if defined(BITNET_MEMBW_AVX2)
    if (kernels::cpu_features().avx2) {
        if (isa) *isa = "avx2";
        return sum_words_avx2(p, n);
    }
#endif
    if (isa) *isa = "baseline";
    return sum_words_base(p, n);
}

}  // namespace bitnet::bench
