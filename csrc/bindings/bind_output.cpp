// Python access to the output layer alone (tests and benchmarks of the exact-top-k pre-pass):
// logits of given final hidden states through the Q8 path or the top-k path.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <vector>

#include "bindings/bindings.h"
#include "core/error.h"
#include "model/model.h"

namespace py = pybind11;

namespace bitnet::bindings {
namespace {

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I32Array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

}  // namespace

void init_output(py::module_& m) {
    m.def("output_logits", [](std::shared_ptr<Model> model, F32Array x, int64_t k, py::object forced,
                              py::object allowed, int n_threads) {
        const ModelConfig& c = model->config();
        if (model->output_type() != OutputType::kQ8) {
            throw UnsupportedError("output_logits needs a model loaded with the q8_0 output layer");
        }
        if (x.ndim() != 2 || x.shape(1) != c.n_embd) {
            throw ShapeError(str_cat("x must be (n_tokens, ", c.n_embd, "), got ndim ", x.ndim()));
        }
        if (k < 0) throw ShapeError(str_cat("k must be >= 0, got ", k));
        if (k > 0 && model->output_topk().empty()) {
            throw UnsupportedError("the model was loaded without topk_prepass=True");
        }
        const int64_t n = x.shape(0);
        std::vector<int32_t> forced_ids;
        if (!forced.is_none()) {
            const I32Array f = forced.cast<I32Array>();
            for (py::ssize_t i = 0; i < f.size(); ++i) {
                const int32_t id = f.data()[i];
                if (id < 0 || id >= c.n_vocab) throw ShapeError(str_cat("forced token id ", id, " out of range"));
                forced_ids.push_back(id);
            }
        }
        U8Array allowed_arr;
        if (!allowed.is_none()) {
            allowed_arr = allowed.cast<U8Array>();
            if (allowed_arr.ndim() != 1 || allowed_arr.shape(0) != c.n_vocab) {
                throw ShapeError(str_cat("allowed must be (", c.n_vocab, ",)"));
            }
        }
        py::array_t<float> logits({n, c.n_vocab});
        py::array_t<int64_t> n_exact(n);
        {
            py::gil_scoped_release release;
            const kernels::KernelTable& kt = model->kernels();
            const int64_t nb = c.n_embd / kernels::kQ8Block;
            std::vector<int8_t> q(static_cast<size_t>(n * c.n_embd));
            std::vector<float> d(static_cast<size_t>(n * nb));
            for (int64_t t = 0; t < n; ++t) {
                kt.quantize_q8(x.data() + t * c.n_embd, c.n_embd, q.data() + t * c.n_embd, d.data() + t * nb);
            }
            const kernels::ActsQ8 xq{q.data(), d.data(), n, c.n_embd};
            ThreadPool pool(n_threads > 0 ? n_threads : ThreadPool::hardware_threads());
            float* out = logits.mutable_data();
            if (k == 0) {
                pool.run([&](int ith, int nth) {
                    int64_t b = 0, e = 0;
                    split_range(c.n_vocab, 64, ith, nth, &b, &e);
                    if (b < e) kt.gemm_q8(model->weights().output_q8.view(), xq, b, e, out + b, c.n_vocab);
                });
                for (int64_t t = 0; t < n; ++t) n_exact.mutable_data()[t] = c.n_vocab;
            } else {
                std::vector<TopKRequest> req(static_cast<size_t>(n));
                for (auto& r : req) {
                    r.k = k;
                    r.forced = forced_ids.data();
                    r.n_forced = static_cast<int64_t>(forced_ids.size());
                    r.allowed = allowed.is_none() ? nullptr : allowed_arr.data();
                }
                std::vector<TopKStats> stats(static_cast<size_t>(n));
                topk_logits(model->weights().output_q8, model->output_topk(), kt, pool, xq, req.data(),
                            out, stats.data());
                for (int64_t t = 0; t < n; ++t) n_exact.mutable_data()[t] = stats[static_cast<size_t>(t)].n_exact;
            }
        }
        return py::make_tuple(logits, n_exact);
    }, py::arg("model"), py::arg("x"), py::arg("k") = 0, py::arg("forced") = py::none(),
       py::arg("allowed") = py::none(), py::arg("n_threads") = 0,
       "Logits (n_tokens, n_vocab) of final hidden states x (already output-normed) through the Q8 "
       "output layer (k=0) or its exact-top-k path (k>0: exact top-k, the rest -inf); returns "
       "(logits, n_exact per token).");

    m.def("output_topk_info", [](std::shared_ptr<Model> model) {
        py::dict d;
        const TopKOutput& p = model->output_topk();
        d["available"] = !p.empty();
        d["pass_bytes"] = p.pass_bytes();
        const Q8Output& q8 = model->weights().output_q8;
        d["q8_bytes"] = static_cast<int64_t>(q8.q.size() + 4 * q8.d.size());
        d["rows"] = p.n_rows;
        return d;
    }, py::arg("model"), "Bytes per token of the exact-top-k pre-pass and of the full Q8 layer.");
}

}  // namespace bitnet::bindings
