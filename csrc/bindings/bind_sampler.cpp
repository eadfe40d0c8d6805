// Python access to the Sampler (penalties, mask, temperature, top-k, top-p, min-p) and to the
// batched draw the engine makes once per step (BatchSampler).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <unordered_set>
#include <vector>

#include "bindings/bindings.h"
#include "core/error.h"
#include "model/sampler.h"
#include "runtime/thread_pool.h"

namespace py = pybind11;

namespace bitnet::bindings {
namespace {

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

const float* logits_of(const Sampler& s, const F32Array& logits) {
    BITNET_CHECK(logits.ndim() == 1 && logits.shape(0) == s.n_vocab(), ShapeError,
                 "logits must be a 1-D array of n_vocab = ", s.n_vocab(), " floats");
    return logits.data();
}

// The mask as bytes (bool or integer arrays; nonzero = allowed), or nullptr for None. The
// array that backs the pointer is kept in *keep.
const uint8_t* mask_of(int64_t n_vocab, const py::object& allowed, U8Array* keep,
                       const char* what) {
    if (allowed.is_none()) return nullptr;
    *keep = U8Array::ensure(allowed);
    BITNET_CHECK(keep->ptr() != nullptr && keep->ndim() == 1 && keep->shape(0) == n_vocab,
                 ShapeError, what, " must be a 1-D bool array of n_vocab = ", n_vocab, " entries");
    return keep->data();
}

// Batched draws with a thread pool of its own.
class BatchSampler {
 public:
    explicit BatchSampler(int n_threads)
        : pool_(n_threads > 0 ? n_threads : ThreadPool::default_threads()) {}
    int n_threads() const { return pool_.n_threads(); }

    py::tuple sample(const py::list& samplers, const F32Array& logits, const py::object& allowed,
                     const py::object& n_top) {
        return draw(samplers, logits, allowed, n_top, /*per_row_errors=*/false);
    }

    py::tuple try_sample(const py::list& samplers, const F32Array& logits,
                         const py::object& allowed, const py::object& n_top) {
        return draw(samplers, logits, allowed, n_top, /*per_row_errors=*/true);
    }

 private:
    py::tuple draw(const py::list& samplers, const F32Array& logits, const py::object& allowed,
                   const py::object& n_top, bool per_row_errors) {
        const auto n = static_cast<int64_t>(samplers.size());
        BITNET_CHECK(logits.ndim() == 2 && logits.shape(0) == n, ShapeError,
                     "logits must be a 2-D array with one row per sampler (", n, " rows)");
        const int64_t n_vocab = logits.shape(1);
        std::vector<SampleRow> rows(static_cast<size_t>(n));
        std::vector<U8Array> masks(static_cast<size_t>(n));
        std::unordered_set<const Sampler*> seen;
        const py::list allowed_list = allowed.is_none() ? py::list() : py::list(allowed);
        const py::list top_list = n_top.is_none() ? py::list() : py::list(n_top);
        BITNET_CHECK(allowed.is_none() || static_cast<int64_t>(allowed_list.size()) == n,
                     ShapeError, "allowed must hold one mask (or None) per sampler (", n, ")");
        BITNET_CHECK(n_top.is_none() || static_cast<int64_t>(top_list.size()) == n, ShapeError,
                     "n_top must hold one count per sampler (", n, ")");
        int64_t k_max = 0;
        for (int64_t i = 0; i < n; ++i) {
            SampleRow& r = rows[static_cast<size_t>(i)];
            r.sampler = &py::cast<Sampler&>(samplers[static_cast<size_t>(i)]);
            BITNET_CHECK(r.sampler->n_vocab() == n_vocab, ShapeError, "sampler ", i, " has n_vocab ",
                         r.sampler->n_vocab(), " but the logits have ", n_vocab, " columns");
            BITNET_CHECK(seen.insert(r.sampler).second, ShapeError, "sampler ", i,
                         " appears twice in one batch");
            r.logits = logits.data() + i * n_vocab;
            if (!allowed.is_none()) {
                r.allowed = mask_of(n_vocab, allowed_list[static_cast<size_t>(i)],
                                    &masks[static_cast<size_t>(i)], "allowed[i]");
            }
            if (!n_top.is_none()) {
                r.n_top = py::cast<int64_t>(top_list[static_cast<size_t>(i)]);
                k_max = std::max(k_max, r.n_top);
            }
        }
        {
            py::gil_scoped_release release;
            sample_rows(rows.data(), n, &pool_, /*throw_on_error=*/!per_row_errors);
        }
        py::array_t<int32_t> tokens(n);
        py::array_t<float> logprob(n);
        py::array_t<int32_t> top_ids({n, k_max});
        py::array_t<float> top_lp({n, k_max});
        auto t = tokens.mutable_unchecked<1>();
        auto lp = logprob.mutable_unchecked<1>();
        auto ti = top_ids.mutable_unchecked<2>();
        auto tl = top_lp.mutable_unchecked<2>();
        for (int64_t i = 0; i < n; ++i) {
            const SampleRow& r = rows[static_cast<size_t>(i)];
            t(i) = r.token;
            lp(i) = r.n_top >= 0 ? r.logprobs.logprob : std::numeric_limits<float>::quiet_NaN();
            const auto k = r.n_top >= 0 ? static_cast<int64_t>(r.logprobs.top_ids.size()) : 0;
            for (int64_t j = 0; j < k_max; ++j) {
                ti(i, j) = j < k ? r.logprobs.top_ids[static_cast<size_t>(j)] : -1;
                tl(i, j) = j < k ? r.logprobs.top_logprobs[static_cast<size_t>(j)]
                                 : -std::numeric_limits<float>::infinity();
            }
        }
        if (!per_row_errors) return py::make_tuple(tokens, logprob, top_ids, top_lp);
        py::list errors;
        for (const SampleRow& r : rows) {
            if (r.error.empty()) {
                errors.append(py::none());
            } else {
                errors.append(py::str(r.error));
            }
        }
        return py::make_tuple(tokens, logprob, top_ids, top_lp, errors);
    }

    ThreadPool pool_;
};

}  // namespace

void init_sampler(py::module_& m) {
    py::class_<Sampler>(m, "Sampler",
        "Picks tokens from logits: repetition, frequency and presence penalties, a mask, "
        "temperature, top-k, top-p, min-p, then a seeded draw. Not thread-safe: one per "
        "generation.")
        .def(py::init([](int64_t n_vocab, float temperature, int64_t top_k, float top_p,
                         float min_p, float repeat_penalty, int64_t repeat_last_n,
                         float presence_penalty, float frequency_penalty, uint64_t seed) {
                 SamplerParams p;
                 p.temperature = temperature;
                 p.top_k = top_k;
                 p.top_p = top_p;
                 p.min_p = min_p;
                 p.repeat_penalty = repeat_penalty;
                 p.repeat_last_n = repeat_last_n;
                 p.presence_penalty = presence_penalty;
                 p.frequency_penalty = frequency_penalty;
                 p.seed = seed;
                 return std::make_unique<Sampler>(n_vocab, p);
             }),
             py::arg("n_vocab"), py::kw_only(), py::arg("temperature") = 0.8f,
             py::arg("top_k") = 40, py::arg("top_p") = 0.95f, py::arg("min_p") = 0.05f,
             py::arg("repeat_penalty") = 1.0f, py::arg("repeat_last_n") = 64,
             py::arg("presence_penalty") = 0.0f, py::arg("frequency_penalty") = 0.0f,
             py::arg("seed") = 0)
        .def_property_readonly("n_vocab", &Sampler::n_vocab)
        .def_property_readonly("seed", [](const Sampler& s) { return s.params().seed; })
        .def("sample", [](Sampler& s, const F32Array& logits, const py::object& allowed) {
            const float* data = logits_of(s, logits);
            U8Array keep;
            const uint8_t* mask = mask_of(s.n_vocab(), allowed, &keep, "allowed");
            py::gil_scoped_release release;
            return s.sample(data, mask);
        }, py::arg("logits"), py::arg("allowed") = py::none(),
           "The next token id for a row of logits (n_vocab,) float32; allowed: an optional "
           "(n_vocab,) bool mask of the tokens that may come next.")
        .def("penalized_tokens", [](const Sampler& s) {
            const std::vector<int32_t> ids = s.penalized_tokens();
            return py::array_t<int32_t>(static_cast<py::ssize_t>(ids.size()), ids.data());
        }, "The distinct token ids (int32, sorted) whose logits the repetition, presence and "
           "frequency penalties change at the next draw (the exact-top-k output layer must "
           "compute them).")
        .def("accept", &Sampler::accept, py::arg("token"), py::arg("generated") = true,
             "Appends a token to the repetition-penalty window; a generated token (not a prompt "
             "token) also counts for the presence and frequency penalties.")
        .def("reset", &Sampler::reset, py::arg("seed"),
             "Clears the history and the counts and restarts the generator from seed.")
        .def("distribution", [](Sampler& s, const F32Array& logits, const py::object& allowed) {
            const float* data = logits_of(s, logits);
            U8Array keep;
            const uint8_t* mask = mask_of(s.n_vocab(), allowed, &keep, "allowed");
            std::vector<int32_t> ids;
            std::vector<double> probs;
            {
                py::gil_scoped_release release;
                s.distribution(data, &ids, &probs, mask);
            }
            return py::make_tuple(py::array_t<int32_t>(static_cast<py::ssize_t>(ids.size()), ids.data()),
                                  py::array_t<double>(static_cast<py::ssize_t>(probs.size()), probs.data()));
        }, py::arg("logits"), py::arg("allowed") = py::none(),
           "(ids, probs): the tokens a draw can pick, by descending probability, and their "
           "probabilities.");

    py::class_<BatchSampler>(m, "BatchSampler",
        "Draws one token per row of a logits matrix, each row with its own Sampler, on a pool "
        "of threads, without the GIL. Not thread-safe: one per engine.")
        .def(py::init<int>(), py::arg("n_threads") = 1)
        .def_property_readonly("n_threads", &BatchSampler::n_threads)
        .def("sample", &BatchSampler::sample, py::arg("samplers"), py::arg("logits"),
             py::arg("allowed") = py::none(), py::arg("n_top") = py::none(),
             "(tokens (n,) int32, logprob (n,) float32, top_ids (n, k) int32, top_logprobs (n, k) "
             "float32) for samplers[i] drawing from logits[i]. allowed: None or one (n_vocab,) "
             "bool mask or None per row. n_top: None (no log-probabilities) or one count per row "
             "(-1: none for that row); k is the largest. logprob is the log-probability of the "
             "sampled token after penalties and mask, before temperature and truncation (NaN "
             "where not asked); missing alternatives are -1 / -inf. Raises ShapeError naming the "
             "first row that fails (every token masked), after drawing the others.")
        .def("try_sample", &BatchSampler::try_sample, py::arg("samplers"), py::arg("logits"),
             py::arg("allowed") = py::none(), py::arg("n_top") = py::none(),
             "As sample(), but a row that fails does not raise: returns (tokens, logprob, top_ids, "
             "top_logprobs, errors) with errors[i] the message of row i (None where it was drawn; "
             "its token is then -1). For the engine: one request's failure stays its own.");
}

}  // namespace bitnet::bindings
