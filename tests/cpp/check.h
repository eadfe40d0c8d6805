// The pass/fail counters and check() of the C++ test programs run by ctest: each failed check
// prints a line, and main() reports the counts and exits non-zero when any check failed.
#pragma once

#include <cstdio>
#include <string>

namespace bitnet_test {

inline int g_passed = 0;
inline int g_failed = 0;

inline void check(bool ok, const std::string& what) {
    if (ok) {
        ++g_passed;
    } else {
        ++g_failed;
        std::printf("FAIL %s\n", what.c_str());
    }
}

}  // namespace bitnet_test
