// Python access to the paged KV cache (KvCache) and the batched decoder (BatchDecoder): the
// C++ half of the engine that python/bitnet/engine drives (docs/architecture.md, "Engine").
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bindings/args.h"
#include "bindings/bindings.h"
#include "core/error.h"
#include "model/decoder.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace py = pybind11;

namespace bitnet::bindings {

void init_engine(py::module_& m) {
    py::class_<KvCache, std::shared_ptr<KvCache>>(m, "KvCache",
        "A paged KV cache: n_blocks blocks of block_tokens positions, each holding K and V of every "
        "layer of a model's shape. Memory is reserved up front and becomes resident as blocks are "
        "written. Used by one BatchDecoder at a time.")
        .def(py::init([](py::object model_arg, py::object n_blocks,
                         py::object kv_type, py::object block_tokens) {
                 const auto model = object_arg<std::shared_ptr<Model>>(model_arg, "model", "bitnet._core.Model");
                 return std::make_shared<KvCache>(
                     model->config(), kv_type_from_name(str_arg(kv_type, "kv_type")),
                     int_arg(block_tokens, "block_tokens", INT64_MIN, INT64_MAX),
                     int_arg(n_blocks, "n_blocks", INT64_MIN, INT64_MAX));
             }),
             py::arg("model"), py::kw_only(), py::arg("n_blocks"), py::arg("kv_type") = "f16",
             py::arg("block_tokens") = kDefaultBlockTokens,
             "kv_type: 'f32' | 'f16' | 'q8_0' (q8_0 needs a head_dim that is a multiple of 32).")
        .def_property_readonly("kv_type", [](const KvCache& c) { return kv_type_name(c.type()); })
        .def_property_readonly("block_tokens", &KvCache::block_tokens)
        .def_property_readonly("n_blocks", &KvCache::n_blocks)
        .def_property_readonly("bytes_per_block", &KvCache::bytes_per_block,
                               "Bytes one block takes: K and V of block_tokens positions, all layers.")
        .def_property_readonly("bytes_per_token", &KvCache::bytes_per_token,
                               "Bytes of K and V of one position, all layers (without padding).")
        .def_property_readonly("reserved_bytes", &KvCache::reserved_bytes,
                               "Address space reserved for all blocks.")
        .def_property_readonly("resident_bytes", &KvCache::resident_bytes,
                               "Memory resident now: grows as blocks are written.")
        .def("copy_block", [](KvCache& c, py::object src_arg, py::object dst_arg,
                              py::object n_arg) {
                 const int64_t src = int_arg(src_arg, "src", INT64_MIN, INT64_MAX);
                 const int64_t dst = int_arg(dst_arg, "dst", INT64_MIN, INT64_MAX);
                 const int64_t n_tokens = int_arg(n_arg, "n_tokens", INT64_MIN, INT64_MAX);
                 py::gil_scoped_release release;
                 std::lock_guard<std::mutex> lock(c.mutex());
                 c.copy_block(src, dst, n_tokens);
             },
             py::arg("src"), py::arg("dst"), py::arg("n_tokens"),
             "Copies positions [0, n_tokens) of block src into block dst, every layer.")
        .def("block_data", [](KvCache& c, py::object block_arg) {
                 const int64_t block = int_arg(block_arg, "block", INT64_MIN, INT64_MAX);
                 BITNET_CHECK(block >= 0 && block < c.n_blocks(), ShapeError, "block ", block,
                              " is not a block of the cache (0 <= id < ", c.n_blocks(), ")");
                 py::array_t<uint8_t> out(c.bytes_per_block());
                 std::lock_guard<std::mutex> lock(c.mutex());
                 std::memcpy(out.mutable_data(), c.tile(block, 0, 0, false),
                             static_cast<size_t>(c.bytes_per_block()));
                 return out;
             },
             py::arg("block"),
             "A copy of a block's bytes (docs/kernels.md, \"KV cache\", has the layout): for tests "
             "and debugging.");

    py::class_<BatchDecoder>(m, "BatchDecoder",
        "Runs steps over many sequences at once on a KvCache (the weights are read once per step). "
        "A sequence's results are the same bit for bit whatever else is in the step.")
        .def(py::init([](py::object model_arg, py::object cache_arg, py::object n_batch,
                         py::object n_threads) {
                 const auto model = object_arg<std::shared_ptr<Model>>(model_arg, "model", "bitnet._core.Model");
                 const auto cache = object_arg<std::shared_ptr<KvCache>>(cache_arg, "cache", "bitnet._core.KvCache");
                 return std::make_unique<BatchDecoder>(
                     model, cache, int_arg(n_batch, "n_batch", INT64_MIN, INT64_MAX),
                     static_cast<int>(int_arg(n_threads, "n_threads", INT_MIN, INT_MAX)));
             }),
             py::arg("model"), py::arg("cache"), py::arg("n_batch") = 512, py::arg("n_threads") = 0)
        .def_property_readonly("n_batch", &BatchDecoder::n_batch)
        .def_property_readonly("n_threads", &BatchDecoder::n_threads)
        .def_property_readonly("cache", [](BatchDecoder& d) { return d.cache_ptr(); })
        .def_property_readonly("topk_counts", [](const BatchDecoder& d) {
            const TopKCounts c = d.topk_counts();
            return py::make_tuple(c.rows, c.exact_rows);
        }, "(rows, exact rows): logits rows computed with topk so far and the output rows "
           "recomputed exactly for them.")
        .def("step", [](BatchDecoder& d, py::object seq_arg) {
            if (!py::isinstance<py::sequence>(seq_arg) || py::isinstance<py::str>(seq_arg)) {
                throw ShapeError("seqs must be a list of (block_table, n_past, tokens, logits), got " +
                                 repr_of(seq_arg));
            }
            const auto seqs = seq_arg.cast<py::sequence>();
            std::vector<Int32Array> keep;
            std::vector<py::array_t<uint8_t, py::array::c_style | py::array::forcecast>> keep_masks;
            std::vector<SequenceStep> steps;
            keep.reserve(3 * seqs.size());
            keep_masks.reserve(seqs.size());
            steps.reserve(seqs.size());
            for (size_t i = 0; i < seqs.size(); ++i) {
                const std::string where = "sequence " + std::to_string(i);
                py::object item = seqs[i];
                if (!py::isinstance<py::tuple>(item) || (py::len(item) != 4 && py::len(item) != 5)) {
                    throw ShapeError(where + ": expected a tuple (block_table, n_past, tokens, logits[, topk])");
                }
                auto t = item.cast<py::tuple>();
                SequenceStep s;
                keep.push_back(int32_array(t[0], where + ": block_table"));
                s.block_table = keep.back().data();
                s.n_table = keep.back().size();
                keep.push_back(int32_array(t[2], where + ": tokens"));
                s.tokens = keep.back().data();
                s.n_tokens = keep.back().size();
                s.n_past = int_arg(t[1], (where + ": n_past").c_str(), INT64_MIN, INT64_MAX);
                const int64_t mode = int_arg(t[3], (where + ": logits").c_str(), INT64_MIN, INT64_MAX);
                BITNET_CHECK(mode >= 0 && mode <= 2, ShapeError, where,
                             ": logits must be 0 (none), 1 (last token) or 2 (every token), not ", mode);
                s.logits = static_cast<LogitsMode>(mode);
                if (py::len(t) == 5 && !t[4].is_none()) {
                    // topk: k, or (k, forced token ids or None, allowed mask (n_vocab,) or None).
                    py::object k = t[4];
                    if (py::isinstance<py::tuple>(t[4])) {
                        auto spec = t[4].cast<py::tuple>();
                        if (py::len(spec) != 3) throw ShapeError(where + ": topk must be k or (k, forced, allowed)");
                        k = spec[0];
                        if (!spec[1].is_none()) {
                            keep.push_back(int32_array(spec[1], where + ": topk forced"));
                            s.topk_forced = keep.back().data();
                            s.n_topk_forced = keep.back().size();
                        }
                        if (!spec[2].is_none()) {
                            auto allowed = spec[2].cast<py::array_t<uint8_t, py::array::c_style | py::array::forcecast>>();
                            const int64_t n_vocab = d.model().config().n_vocab;
                            if (allowed.ndim() != 1 || allowed.shape(0) != n_vocab) {
                                throw ShapeError(str_cat(where, ": topk allowed must have shape (", n_vocab, ",)"));
                            }
                            keep_masks.push_back(allowed);
                            s.topk_allowed = keep_masks.back().data();
                        }
                    }
                    s.topk = int_arg(k, (where + ": topk k").c_str(), INT64_MIN, INT64_MAX);
                }
                steps.push_back(s);
            }
            const int64_t n_vocab = d.model().config().n_vocab;
            const int64_t rows = d.validate(steps);
            py::array_t<float> logits({rows, n_vocab});
            float* out = logits.mutable_data();
            {
                py::gil_scoped_release release;
                d.step(steps, out);
            }
            return logits;
        }, py::arg("seqs"),
           "seqs: list of (block_table, n_past, tokens, logits[, topk]) with int32 1-D arrays; logits 0: "
           "none, 1: the last token's row, 2: every token's row; topk (needs topk_prepass): k or (k, "
           "forced ids, allowed mask): the rows hold the exact q8_0 values of the k largest allowed "
           "and the forced tokens, -inf elsewhere. Returns float32 (rows, n_vocab), "
           "the requested rows in sequence order. Validates everything first (ShapeError naming "
           "the sequence); the cache is untouched on error.");
}

}  // namespace bitnet::bindings
