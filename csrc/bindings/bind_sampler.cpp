// Python access to the Sampler (temperature, top-k, top-p, min-p, repetition penalty).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "bindings/bindings.h"
#include "core/error.h"
#include "model/sampler.h"

namespace py = pybind11;

namespace bitnet::bindings {
namespace {

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;

const float* logits_of(const Sampler& s, const F32Array& logits) {
    BITNET_CHECK(logits.ndim() == 1 && logits.shape(0) == s.n_vocab(), ShapeError,
                 "logits must be a 1-D array of n_vocab = ", s.n_vocab(), " floats");
    return logits.data();
}

}  // namespace

void init_sampler(py::module_& m) {
    py::class_<Sampler>(m, "Sampler",
        "Picks tokens from logits: repetition penalty, temperature, top-k, top-p, min-p, then a "
        "seeded draw. Not thread-safe: one per generation.")
        .def(py::init([](int64_t n_vocab, float temperature, int64_t top_k, float top_p,
                         float min_p, float repeat_penalty, int64_t repeat_last_n, uint64_t seed) {
                 SamplerParams p;
                 p.temperature = temperature;
                 p.top_k = top_k;
                 p.top_p = top_p;
                 p.min_p = min_p;
                 p.repeat_penalty = repeat_penalty;
                 p.repeat_last_n = repeat_last_n;
                 p.seed = seed;
                 return std::make_unique<Sampler>(n_vocab, p);
             }),
             py::arg("n_vocab"), py::kw_only(), py::arg("temperature") = 0.8f,
             py::arg("top_k") = 40, py::arg("top_p") = 0.95f, py::arg("min_p") = 0.05f,
             py::arg("repeat_penalty") = 1.0f, py::arg("repeat_last_n") = 64,
             py::arg("seed") = 0)
        .def_property_readonly("n_vocab", &Sampler::n_vocab)
        .def_property_readonly("seed", [](const Sampler& s) { return s.params().seed; })
        .def("sample", [](Sampler& s, const F32Array& logits) {
            const float* data = logits_of(s, logits);
            py::gil_scoped_release release;
            return s.sample(data);
        }, py::arg("logits"), "The next token id for a row of logits (n_vocab,) float32.")
        .def("accept", &Sampler::accept, py::arg("token"),
             "Appends a token to the repetition-penalty window.")
        .def("reset", &Sampler::reset, py::arg("seed"),
             "Clears the history and restarts the generator from seed.")
        .def("distribution", [](Sampler& s, const F32Array& logits) {
            const float* data = logits_of(s, logits);
            std::vector<int32_t> ids;
            std::vector<double> probs;
            {
                py::gil_scoped_release release;
                s.distribution(data, &ids, &probs);
            }
            return py::make_tuple(py::array_t<int32_t>(static_cast<py::ssize_t>(ids.size()), ids.data()),
                                  py::array_t<double>(static_cast<py::ssize_t>(probs.size()), probs.data()));
        }, py::arg("logits"),
           "(ids, probs): the tokens a draw can pick, by descending probability, and their "
           "probabilities.");
}

}  // namespace bitnet::bindings
