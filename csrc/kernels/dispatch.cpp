// Run-time choice of the kernel table: the best level this CPU supports, lowered by BITNET_ISA.
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/cpu_features.h"
#include "kernels/isa_tables.h"

namespace bitnet::kernels {
namespace {

KernelTable make_reference() {
    KernelTable t;
    t.isa = "ref";
    t.quantize_i8 = ref::quantize_i8;
    t.gemm_t2 = ref::gemm_t2;
    t.gemm_b1 = ref::gemm_b1;
    t.build_lut = ref::build_lut;
    t.gemm_l2 = ref::gemm_l2;
    t.quantize_q8 = ref::quantize_q8;
    t.gemm_q8 = ref::gemm_q8;
    t.dot_f32 = ref::dot_f32;
    t.dot_f16 = ref::dot_f16;
    t.axpy_f32 = ref::axpy_f32;
    t.axpy_f16 = ref::axpy_f16;
    t.rms_norm = ref::rms_norm;
    t.softmax = ref::softmax;
    t.to_f16 = ref::to_f16;
    t.from_f16 = ref::from_f16;
    // attention over the KV cache (engine-core)
    t.attn_scores_f32 = ref::attn_scores_f32;
    t.attn_scores_f16 = ref::attn_scores_f16;
    t.attn_scores_q8 = ref::attn_scores_q8;
    t.attn_softmax = ref::attn_softmax;
    t.attn_accum_f32 = ref::attn_accum_f32;
    t.attn_accum_f16 = ref::attn_accum_f16;
    t.attn_accum_q8 = ref::attn_accum_q8;
    return t;
}

// Tables in increasing order; entry i is supported by this build and CPU when non-null.
struct Tables {
    KernelTable ref;
    KernelTable level1;  // avx2 (x86) or neon (aarch64)
    KernelTable level2;  // dotprod (aarch64)
    bool has_level1 = false;
    bool has_level2 = false;

    Tables() : ref(make_reference()) {
        const CpuFeatures& f = cpu_features();
        (void)f;
#if defined(__x86_64__) || defined(__i386__)
        if (f.avx2) {
            level1 = ref;
            level1.isa = "avx2";
            avx2::register_kernels(level1);
            has_level1 = true;
        }
#elif defined(__aarch64__)
        level1 = ref;
        level1.isa = "neon";
        neon::register_kernels(level1);
        has_level1 = true;
        if (f.dotprod) {
            level2 = level1;
            level2.isa = "dotprod";
            dotprod::register_kernels(level2);
            has_level2 = true;
        }
#endif
    }

    const KernelTable* find(const char* isa) const {
        if (std::strcmp(isa, "ref") == 0) return &ref;
        if (has_level1 && std::strcmp(isa, level1.isa) == 0) return &level1;
        if (has_level2 && std::strcmp(isa, level2.isa) == 0) return &level2;
        return nullptr;
    }

    const KernelTable& best() const { return has_level2 ? level2 : has_level1 ? level1 : ref; }
};

const Tables& tables() {
    static const Tables t;
    return t;
}

const KernelTable& choose_active() {
    const Tables& t = tables();
    const char* forced = std::getenv("BITNET_ISA");
    if (forced != nullptr && *forced != '\0') {
        // A forced level this CPU lacks falls back to the best one below it: "ISA forces a lower
        // level", never a higher one that would crash. Unknown names are ignored the same way.
        const std::string want = forced;
        if (want == "ref") return t.ref;
        if (const KernelTable* k = t.find(forced)) return *k;
        if (want == "neon" && t.has_level1) return t.level1;
    }
    return t.best();
}

}  // namespace

const KernelTable& reference_kernels() { return tables().ref; }

const KernelTable& active_kernels() {
    static const KernelTable& table = choose_active();
    return table;
}

const KernelTable* kernels_for(const char* isa) { return tables().find(isa); }

TernaryKernel choose_ternary_kernel(const KernelTable& kt, int64_t n_rows, int64_t k,
                                    int64_t n_tokens, int n_threads) {
    const char* forced = std::getenv("BITNET_KERNEL");
    if (forced != nullptr) {
        if (std::strcmp(forced, "lut") == 0) return TernaryKernel::kLut;
        if (std::strcmp(forced, "mad") == 0) return TernaryKernel::kMad;
    }
    (void)kt;
    (void)n_rows;
    (void)k;
    (void)n_tokens;
    (void)n_threads;
    return TernaryKernel::kMad;
}

}  // namespace bitnet::kernels
