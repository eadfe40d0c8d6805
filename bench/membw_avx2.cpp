// AVX2 half of the read-bandwidth probe (compiled with -mavx2, reached only when the CPU has it).
#include <cstdint>
#include <cstring>

namespace bitnet::bench {

// Eight independent 32-byte accumulators: one 256-byte stretch per iteration.
uint64_t sum_words_avx2(const uint64_t* p, int64_t n) {
    typedef uint64_t V __attribute__((vector_size(32)));
    V acc[8] = {};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int j = 0; j < 8; ++j) {
            V v;
            std::memcpy(&v, p + i + 4 * j, sizeof v);
            acc[j] += v;
        }
    }
    uint64_t total = 0;
    for (int j = 0; j < 8; ++j) total += acc[j][0] + acc[j][1] + acc[j][2] + acc[j][3];
    for (; i < n; ++i) total += p[i];
    return total;
}

}  // namespace bitnet::bench
