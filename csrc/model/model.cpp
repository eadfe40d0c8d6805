// Model::load: the file, the config, the weights in their kernel layouts and the output layer.
// The forward pass is in decoder.cpp, Session in session.cpp.
#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <utility>
#include <vector>
#include <numeric>

#include "core/error.h"
#include "format/types.h"

namespace bitnet {
namespace {

int resolve_threads(int n) { return n > 0 ? n : ThreadPool::default_threads(); }

// Requantizes the output layer to Q8 blocks, rows split over the threads of pool. The source
// rows' pages are released chunk by chunk, so the float copy never becomes resident as a whole.
Q8Output make_q8_output(const GgufFile& file, const DenseMatrix& src, const kernels::KernelTable& kt,
                        ThreadPool& pool) {
    constexpr int64_t kChunkRows = 1024;
    Q8Output out;
    out.n_rows = src.n_rows;
    out.n_cols = src.n_cols;
    out.q = AlignedBuffer<int8_t>(static_cast<size_t>(src.n_rows * src.n_cols), true);
    out.d = AlignedBuffer<float>(static_cast<size_t>(src.n_rows * src.n_cols / kernels::kQ8Block), true);
    pool.run([&](int ith, int nth) {
        int64_t b = 0, e = 0;
        split_range(src.n_rows, kChunkRows, ith, nth, &b, &e);
        std::vector<float> row(static_cast<size_t>(src.n_cols));
        const bool f16 = src.tensor->type == static_cast<uint32_t>(TensorType::F16);
        for (int64_t r = b; r < e; ++r) {
            if (f16) {  // the common case, on the SIMD converter
                kt.from_f16(reinterpret_cast<const uint16_t*>(src.tensor->data + r * src.row_bytes),
                            row.data(), src.n_cols);
            } else {
                src.row(r, row.data());
            }
            kt.quantize_q8(row.data(), src.n_cols, out.q.data() + r * src.n_cols,
                           out.d.data() + r * (src.n_cols / kernels::kQ8Block));
            if ((r + 1) % kChunkRows == 0 || r + 1 == e) {
                const int64_t first = r + 1 - ((r - b) % kChunkRows + 1);
                file.mapped().release_pages(
                    src.tensor->offset + static_cast<uint64_t>(first) * src.row_bytes,
                    static_cast<uint64_t>(r + 1 - first) * src.row_bytes);
            }
        }
    });
    return out;
}

}  // namespace

std::shared_ptr<const Model> Model::load(const std::string& path, const LoadOptions& options) {
    std::shared_ptr<Model> m(new Model());
    m->file_ = std::make_unique<GgufFile>(path);
    m->config_ = ModelConfig::from_gguf(*m->file_);
    m->weights_ = ModelWeights::load(*m->file_, m->config_);
    m->kernels_ = &kernels::active_kernels();
    if (!options.isa.empty()) {
        m->kernels_ = kernels::kernels_for(options.isa.c_str());
        BITNET_CHECK(m->kernels_ != nullptr, UnsupportedError, "kernels '", options.isa,
                     "' are not available on this CPU (it has: ",
                     kernels::active_kernels().isa, " and below)");
    }
    BITNET_CHECK(options.kernel.empty() || options.kernel == "mad" || options.kernel == "lut" ||
                     options.kernel == "t3",
                 ShapeError, "kernel must be 'mad', 'lut' or 't3', not '", options.kernel, "'");
    BITNET_CHECK(options.kernel != "t3" || m->kernels_->native_t3, UnsupportedError,
                 "kernel 't3' (1.67 bits per weight) needs the avx512vbmi kernels; this process "
                 "uses '", m->kernels_->isa, "'");
    const ModelConfig& c = m->config_;
    const int n_threads = resolve_threads(options.n_threads);

    // Each ternary matrix moves into the layout of the kernel family chosen for its shape;
    // matrices are repacked in parallel (one per thread at a time).
    std::vector<std::pair<PackedLinear*, kernels::TernaryKernel>> moves;
    for (LayerWeights& l : m->weights_.layers) {
        for (PackedLinear* w : l.linears()) {
            if (w->binary) continue;
            auto k = kernels::choose_ternary_kernel(*m->kernels_, w->n_out, w->n_in, 1, n_threads);
            if (!options.kernel.empty()) {
                k = options.kernel == "lut"  ? kernels::TernaryKernel::kLut
                    : options.kernel == "t3" ? kernels::TernaryKernel::kT3
                                             : kernels::TernaryKernel::kMad;
            }
            moves.emplace_back(w, k);
            m->has_lut_ = m->has_lut_ || k == kernels::TernaryKernel::kLut;
        }
    }
    {
        // The pool does not carry exceptions (an allocation failure here): each thread keeps its
        // own, rethrown on this thread.
        ThreadPool pool(n_threads);
        std::vector<std::exception_ptr> errors(static_cast<size_t>(pool.n_threads()));
        pool.run([&](int ith, int nth) {
            try {
                for (size_t i = static_cast<size_t>(ith); i < moves.size(); i += static_cast<size_t>(nth)) {
                    moves[i].first->use_kernel(moves[i].second);
                }
            } catch (...) {
                errors[static_cast<size_t>(ith)] = std::current_exception();
            }
        });
        for (const std::exception_ptr& e : errors) {
            if (e) std::rethrow_exception(e);
        }
    }

    OutputType out = options.output;
    if (out == OutputType::kAuto) {
        out = c.n_embd % kernels::kQ8Block == 0 ? OutputType::kQ8 : OutputType::kF32;
    }
    BITNET_CHECK(out != OutputType::kQ8 || c.n_embd % kernels::kQ8Block == 0, UnsupportedError,
                 path, ": an int8 output layer needs a hidden size that is a multiple of 32, not ",
                 c.n_embd);
    m->output_type_ = out;
    if (out == OutputType::kQ8) {
        ThreadPool pool(n_threads);
        // Only the int8 copy is read from now on; embedding rows fault back in as looked up.
        m->weights_.output_q8 = make_q8_output(*m->file_, m->weights_.output, *m->kernels_, pool);
        if (options.topk_prepass) {
            m->output_topk_ = TopKOutput::build(m->weights_.output_q8, *m->kernels_, pool);
        }
    }
    BITNET_CHECK(!options.topk_prepass || out == OutputType::kQ8, UnsupportedError, path,
                 ": the exact-top-k pre-pass needs the q8_0 output layer, but this model's is f32 (",
                 options.output == OutputType::kF32 ? "output_type 'f32'"
                                                    : "its hidden size is not a multiple of 32",
                 ")");
    return m;
}

int64_t Model::bytes_per_token() const {
    int64_t bytes = 0;
    for (const LayerWeights& l : weights_.layers) {
        for (const PackedLinear* w : l.linears()) {
            bytes += static_cast<int64_t>(w->packed.size());
        }
    }
    if (output_type_ == OutputType::kQ8) {
        bytes += static_cast<int64_t>(weights_.output_q8.q.size() + 4 * weights_.output_q8.d.size());
    } else {
        bytes += static_cast<int64_t>(weights_.output.tensor->size_bytes);
    }
    return bytes + static_cast<int64_t>(weights_.token_embd.row_bytes);
}

}  // namespace bitnet
