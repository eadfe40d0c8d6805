// Run-time choice of the kernel table: the best level this CPU supports, lowered by BITNET_ISA.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
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
    // -- kernels round two (issue 14) --
    t.gemm_t3 = ref::gemm_t3;
    t.gemm_q4h = ref::gemm_q4h;
    return t;
}

// The levels of this architecture, lowest first (ref is level 0). A level's table starts as a
// copy of the level below it and its register function replaces what it implements.
struct Level {
    const char* name;
    bool (*supported)(const CpuFeatures&);
    void (*register_kernels)(KernelTable&);
};

#if defined(__x86_64__) || defined(__i386__)
const Level kLevels[] = {
    {"avx2", [](const CpuFeatures& f) { return f.avx2; }, avx2::register_kernels},
    {"avx512", [](const CpuFeatures& f) { return f.avx512; }, avx512::register_kernels},
    {"avx512vnni", [](const CpuFeatures& f) { return f.avx512vnni; }, avx512vnni::register_kernels},
    {"avx512vbmi", [](const CpuFeatures& f) { return f.avx512vnni && f.avx512vbmi; },
     avx512vbmi::register_kernels},
};
#elif defined(__aarch64__)
const Level kLevels[] = {
    {"neon", [](const CpuFeatures&) { return true; }, neon::register_kernels},
    {"dotprod", [](const CpuFeatures& f) { return f.dotprod; }, dotprod::register_kernels},
    {"i8mm", [](const CpuFeatures& f) { return f.dotprod && f.i8mm; }, i8mm::register_kernels},
};
#else
const Level* const kLevels = nullptr;
#endif

#if defined(__x86_64__) || defined(__i386__) || defined(__aarch64__)
constexpr int kNumLevels = static_cast<int>(sizeof(kLevels) / sizeof(kLevels[0]));
#else
constexpr int kNumLevels = 0;
#endif
constexpr int kMaxLevels = 8;

// tables[0] is ref; tables[i] (1 <= i <= kNumLevels) is kLevels[i - 1] when `has[i]`. Levels
// are cumulative: a level is only built when every level below it is supported too.
struct Tables {
    KernelTable table[kMaxLevels];
    bool has[kMaxLevels] = {};
    int best = 0;

    Tables() {
        static_assert(kNumLevels < kMaxLevels, "too many kernel levels");
        table[0] = make_reference();
        has[0] = true;
        const CpuFeatures& f = cpu_features();
        (void)f;
        for (int i = 1; i <= kNumLevels; ++i) {
            const Level& level = kLevels[i - 1];
            if (!level.supported(f)) break;
            table[i] = table[i - 1];
            table[i].isa = level.name;
            table[i].native_t3 = false;
            level.register_kernels(table[i]);
            has[i] = true;
            best = i;
        }
    }

    // The level index of a name (known to this build), or -1.
    int index_of(const char* isa) const {
        if (std::strcmp(isa, "ref") == 0) return 0;
        for (int i = 1; i <= kNumLevels; ++i) {
            if (std::strcmp(isa, kLevels[i - 1].name) == 0) return i;
        }
        return -1;
    }

    const KernelTable* find(const char* isa) const {
        const int i = index_of(isa);
        return i >= 0 && has[i] ? &table[i] : nullptr;
    }
};

const Tables& tables() {
    static const Tables t;
    return t;
}

const KernelTable& choose_active() {
    const Tables& t = tables();
    const char* forced = std::getenv("BITNET_ISA");
    if (forced != nullptr && *forced != '\0') {
        // A forced level this CPU lacks falls back to the best one below it: BITNET_ISA lowers
        // the level, never raises it above what the CPU runs. Unknown names are ignored.
        const int want = t.index_of(forced);
        if (want >= 0) return t.table[want < t.best ? want : t.best];
    }
    return t.table[t.best];
}

// Names for isa_names(): ref, then the levels, then a null.
struct Names {
    const char* names[kMaxLevels + 1] = {};
    Names() {
        names[0] = "ref";
        for (int i = 1; i <= kNumLevels; ++i) names[i] = kLevels[i - 1].name;
    }
};

}  // namespace

const KernelTable& reference_kernels() { return tables().table[0]; }

const KernelTable& active_kernels() {
    static const KernelTable& table = choose_active();
    return table;
}

const KernelTable* kernels_for(const char* isa) { return tables().find(isa); }

const char* const* isa_names() {
    static const Names names;
    return names.names;
}

uint8_t* kernel_scratch(int64_t bytes) {
    struct Scratch {
        uint8_t* data = nullptr;
        int64_t size = 0;
        ~Scratch() { std::free(data); }
    };
    thread_local Scratch scratch;
    if (bytes > scratch.size) {
        std::free(scratch.data);
        const int64_t size = (bytes + 4095) / 4096 * 4096;
        scratch.data = static_cast<uint8_t*>(std::aligned_alloc(64, static_cast<size_t>(size)));
        scratch.size = scratch.data != nullptr ? size : 0;
        if (scratch.data == nullptr) throw std::bad_alloc();
    }
    return scratch.data;
}

TernaryKernel choose_ternary_kernel(const KernelTable& kt, int64_t n_rows, int64_t k,
                                    int64_t n_tokens, int n_threads) {
    const char* forced = std::getenv("BITNET_KERNEL");
    if (forced != nullptr) {
        if (std::strcmp(forced, "lut") == 0) return TernaryKernel::kLut;
        if (std::strcmp(forced, "mad") == 0) return TernaryKernel::kMad;
        if (std::strcmp(forced, "t3") == 0 && kt.native_t3) return TernaryKernel::kT3;
    }
    (void)n_rows;
    (void)k;
    (void)n_tokens;
    (void)n_threads;
    // Where the level has native T3 kernels (avx512vbmi), T3: measured on Zen 4 (kernel_bench
    // --clock thread, docs/benchmarks.md) it matches VNNI MAD within 5% for one token and for
    // prompts, is 1.25-1.5x faster for 2-16 tokens (batched decoding), and reads 17% fewer bytes.
    // Elsewhere MAD: within 10% of LUT on cached data and faster end to end (no tables).
    return kt.native_t3 ? TernaryKernel::kT3 : TernaryKernel::kMad;
}

}  // namespace bitnet::kernels
