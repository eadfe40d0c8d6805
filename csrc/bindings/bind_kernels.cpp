// Python access to the kernels, for tests and benchmarks: run any table on numpy inputs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "bindings/bindings.h"
#include "core/error.h"
#include "kernels/cpu_features.h"
#include "kernels/kernels.h"
#include "runtime/thread_pool.h"
#include "model/repack.h"

namespace py = pybind11;

namespace bitnet::bindings {
namespace {

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;

}  // namespace

void init_kernels(py::module_& m) {
    m.def("kernel_isa", [] { return std::string(kernels::active_kernels().isa); },
          "The instruction set of the kernels this process uses.");

    m.def("cpu_info", [] {
        const kernels::CpuFeatures& f = kernels::cpu_features();
        py::dict d;
        d["brand"] = f.brand;
        d["features"] = f.summary();
        d["isa"] = std::string(kernels::active_kernels().isa);
        py::list available;
        for (const char* const* isa = kernels::isa_names(); *isa != nullptr; ++isa) {
            if (kernels::kernels_for(*isa) != nullptr) available.append(*isa);
        }
        d["available_isas"] = available;
        d["hardware_threads"] = ThreadPool::hardware_threads();
        return d;
    }, "What this CPU supports and which kernels were chosen.");

    m.def("quantize_i8", [](F32Array x) {
        if (x.ndim() != 2) throw ShapeError("x must be 2-D (n_tokens, n)");
        const int64_t n_tokens = x.shape(0);
        const int64_t n = x.shape(1);
        py::array_t<int8_t> q({n_tokens, n});
        py::array_t<float> scale(n_tokens);
        py::array_t<int32_t> sum(n_tokens);
        const int64_t n_pad = kernels::padded_k(n);
        std::vector<int8_t> row(static_cast<size_t>(n_pad));
        for (int64_t t = 0; t < n_tokens; ++t) {
            kernels::active_kernels().quantize_i8(x.data() + t * n, n, n_pad, row.data(),
                                                  scale.mutable_data() + t, sum.mutable_data() + t);
            std::copy(row.begin(), row.begin() + n, q.mutable_data() + t * n);
        }
        return py::make_tuple(q, scale, sum);
    }, py::arg("x"), "Absmax int8 quantization of each row: returns (q, scale, sum).");

    m.def("absmean_ternarize", [](F32Array w) {
        py::array_t<int8_t> codes(w.request().shape);
        const float beta = absmean_ternarize(w.data(), w.size(), codes.mutable_data());
        return py::make_tuple(codes, beta);
    }, py::arg("w"), "Absmean ternarization of a whole tensor: returns (codes, beta).");
}

}  // namespace bitnet::bindings
