// The memory read-bandwidth probe of kernel_bench: sums of 64-bit words, bound by loads.
#pragma once

#include <cstdint>

namespace bitnet::bench {

// Sum of the n words at p (64-byte aligned), with the widest loads this CPU has: 32-byte AVX2
// loads where cpu_features() reports AVX2 (on one core they sustain more bandwidth than 16-byte
// loads), else the baseline ISA's 16-byte vectors. *isa names the variant used.
uint64_t sum_words(const uint64_t* p, int64_t n, const char** isa);

}  // namespace bitnet::bench
