// Run-time choice of the kernel table. The foundation ships the scalar reference table only;
// SIMD tables register here once cpu_features detects their instruction sets.
#include "kernels/kernels.h"

namespace bitnet::kernels {

const KernelTable& reference_kernels() {
    static const KernelTable table = {"ref", ref::quantize_i8, ref::gemm_t2, ref::gemm_b1};
    return table;
}

const KernelTable& active_kernels() { return reference_kernels(); }

}  // namespace bitnet::kernels
