// Internal to kernels/: each ISA's sources register the kernels they implement into a table that
// already holds the next lower level's, so a partial ISA port is still complete and correct.
#pragma once

#include "kernels/kernels.h"

namespace bitnet::kernels {

#if defined(__x86_64__) || defined(__i386__)
namespace avx2 {
void register_kernels(KernelTable& table);  // x86/kernels_avx2.cpp, ops_avx2.cpp
}
namespace avx512 {
void register_kernels(KernelTable& table);  // x86/kernels_avx512.cpp
}
namespace avx512vnni {
void register_kernels(KernelTable& table);  // x86/kernels_avx512vnni.cpp
}
namespace avx512vbmi {
void register_kernels(KernelTable& table);  // x86/kernels_avx512vbmi.cpp
}
#endif

#if defined(__aarch64__)
namespace neon {
void register_kernels(KernelTable& table);  // arm/kernels_neon.cpp
}
namespace dotprod {
void register_kernels(KernelTable& table);  // arm/kernels_dotprod.cpp
}
namespace i8mm {
void register_kernels(KernelTable& table);  // arm/kernels_i8mm.cpp
}
#endif

}  // namespace bitnet::kernels
