// Python access to Model (shared weights) and Session (one KV cache).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>

#include "bindings/args.h"
#include "bindings/bindings.h"
#include "core/error.h"
#include "format/types.h"
#include "model/decoder.h"
#include "model/model.h"

namespace py = pybind11;

namespace bitnet::bindings {
namespace {

py::dict config_dict(const ModelConfig& c) {
    py::dict d;
    d["arch"] = c.arch;
    d["n_vocab"] = c.n_vocab;
    d["n_embd"] = c.n_embd;
    d["n_layers"] = c.n_layers;
    d["n_heads"] = c.n_heads;
    d["n_kv_heads"] = c.n_kv_heads;
    d["head_dim"] = c.head_dim;
    d["n_ff"] = c.n_ff;
    d["n_ctx_train"] = c.n_ctx_train;
    d["n_rot"] = c.n_rot;
    d["rms_eps"] = c.rms_eps;
    d["rope_theta"] = c.rope_theta;
    d["rope_freq_scale"] = c.rope_freq_scale;
    d["activation"] = activation_name(c.activation);
    d["rope_style"] = rope_style_name(c.rope_style);
    d["tied_output"] = c.tied_output;
    return d;
}

}  // namespace

void init_model(py::module_& m) {
    py::class_<Model, std::shared_ptr<Model>>(m, "Model",
        "Weights of a model loaded from a GGUF file. Immutable and shareable between sessions.")
        .def(py::init([](const std::string& path, const std::string& output_type,
                         const std::string& isa, const std::string& kernel, bool topk_prepass) {
                 LoadOptions options;
                 options.isa = isa;
                 options.kernel = kernel;
                 options.topk_prepass = topk_prepass;
                 if (output_type == "auto") {
                     options.output = OutputType::kAuto;
                 } else if (output_type == "q8_0") {
                     options.output = OutputType::kQ8;
                 } else if (output_type == "f32") {
                     options.output = OutputType::kF32;
                 } else {
                     throw ShapeError("output_type must be 'auto', 'q8_0' or 'f32', not '" +
                                      output_type + "'");
                 }
                 return std::const_pointer_cast<Model>(Model::load(path, options));
             }),
             py::arg("path"), py::arg("output_type") = "auto", py::arg("isa") = "",
             py::arg("kernel") = "", py::arg("topk_prepass") = false,
             py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("output_type", [](const Model& mdl) {
            return mdl.output_type() == OutputType::kQ8 ? "q8_0" : "f32";
        })
        .def_property_readonly("bytes_per_token", &Model::bytes_per_token,
                               "Bytes of weights one decoded token reads (the full output layer).")
        .def_property_readonly("topk_prepass", [](const Model& mdl) { return !mdl.output_topk().empty(); },
                               "Whether the exact-top-k pre-pass of the output layer was built.")
        .def_property_readonly("path", [](const Model& mdl) { return mdl.file().path(); })
        .def_property_readonly("config", [](const Model& mdl) { return config_dict(mdl.config()); })
        .def_property_readonly("file", [](std::shared_ptr<Model> mdl) {
            // The GgufFile lives inside the Model: alias the Model's lifetime.
            return std::shared_ptr<GgufFile>(mdl, const_cast<GgufFile*>(&mdl->file()));
        })
        .def_property_readonly("kernel_isa", [](const Model& mdl) { return mdl.kernels().isa; })
        .def("linear_info", [](const Model& mdl) {
            py::list out;
            for (const LayerWeights& l : mdl.weights().layers) {
                for (const PackedLinear* w : l.linears()) {
                    py::dict d;
                    d["name"] = w->name;
                    d["n_out"] = w->n_out;
                    d["n_in"] = w->n_in;
                    d["binary"] = w->binary;
                    d["source_type"] = type_name(w->source_type);
                    d["kernel"] = w->binary ? "binary"
                                  : w->kernel == kernels::TernaryKernel::kLut ? "lut"
                                  : w->kernel == kernels::TernaryKernel::kT3  ? "t3"
                                                                              : "mad";
                    out.append(d);
                }
            }
            return out;
        }, "One dict per BitLinear weight: name, shape, binary, the file type it came from.")
        .def("linear_codes", [](const Model& mdl, const std::string& name) {
            // Decoded codes (n_out, n_in) int8 and row scales of one BitLinear weight: for tests.
            for (const LayerWeights& l : mdl.weights().layers) {
                for (const PackedLinear* w : l.linears()) {
                    if (w->name != name) continue;
                    py::array_t<int8_t> codes({w->n_out, w->n_in});
                    auto c = codes.mutable_unchecked<2>();
                    for (int64_t r = 0; r < w->n_out; ++r) {
                        for (int64_t j = 0; j < w->n_in; ++j) c(r, j) = static_cast<int8_t>(w->code(r, j));
                    }
                    return py::make_tuple(codes, py::array_t<float>(w->row_scale.size(), w->row_scale.data()));
                }
            }
            throw py::key_error(name);
        }, py::arg("name"));

    py::class_<Session>(m, "Session",
        "One sequence over a private KV cache, on the batched decoder. Not thread-safe: use one "
        "Session per thread.")
        .def(py::init([](py::object model_arg, py::object n_ctx, py::object n_batch,
                         py::object n_threads, py::object kv_f16, py::object kv_type) {
                 const auto mdl = object_arg<std::shared_ptr<Model>>(model_arg, "model", "bitnet._core.Model");
                 SessionOptions options{
                     int_arg(n_ctx, "n_ctx", INT64_MIN, INT64_MAX),
                     int_arg(n_batch, "n_batch", INT64_MIN, INT64_MAX),
                     static_cast<int>(int_arg(n_threads, "n_threads", INT_MIN, INT_MAX)),
                     KvType::kF16};
                 if (!kv_type.is_none()) {
                     options.kv_type = kv_type_from_name(str_arg(kv_type, "kv_type"));
                     BITNET_CHECK(kv_f16.is_none() || bool_arg(kv_f16, "kv_f16") == (options.kv_type == KvType::kF16),
                                  ShapeError, "kv_f16 contradicts kv_type '", kv_type_name(options.kv_type),
                                  "' (pass only kv_type)");
                 } else if (!kv_f16.is_none()) {
                     options.kv_type = bool_arg(kv_f16, "kv_f16") ? KvType::kF16 : KvType::kF32;
                 }
                 return std::make_unique<Session>(mdl, options);
             }),
             py::arg("model"), py::arg("n_ctx") = 0, py::arg("n_batch") = 256,
             py::arg("n_threads") = 0, py::arg("kv_f16") = py::none(), py::kw_only(),
             py::arg("kv_type") = py::none(),
             "kv_type: 'f32' | 'f16' (default) | 'q8_0'. kv_f16 (older API): True for 'f16', False "
             "for 'f32'.")
        .def_property_readonly("n_threads", &Session::n_threads)
        .def_property_readonly("kv_f16", [](const Session& s) { return s.kv_type() == KvType::kF16; })
        .def_property_readonly("kv_type", [](const Session& s) { return kv_type_name(s.kv_type()); })
        .def_property_readonly("kv_resident_bytes", &Session::kv_resident_bytes,
                               "Memory of the KV cache resident now (grows as positions fill).")
        .def_property_readonly("n_ctx", &Session::n_ctx)
        .def_property_readonly("n_past", &Session::n_past)
        .def("truncate", [](Session& s, py::object n) {
            s.truncate(int_arg(n, "n", INT64_MIN, INT64_MAX));
        }, py::arg("n"))
        .def_property_readonly("topk_counts", [](const Session& s) {
            const TopKCounts c = s.topk_counts();
            return py::make_tuple(c.rows, c.exact_rows);
        }, "(rows, exact rows): logits rows computed with topk so far and the output rows "
           "recomputed exactly for them.")
        .def("decode", [](Session& s, py::object token_arg, py::object all_arg, py::object topk_arg) {
            // Floats are refused, not truncated (int32_array); ids are range-checked by decode.
            const Int32Array tokens = int32_array(token_arg, "tokens");
            const bool all_logits = bool_arg(all_arg, "all_logits");
            const int64_t topk = int_arg(topk_arg, "topk", INT64_MIN, INT64_MAX);
            const int64_t n = tokens.shape(0);
            const int64_t n_vocab = s.model().config().n_vocab;
            py::array_t<float> logits = all_logits ? py::array_t<float>({n, n_vocab})
                                                   : py::array_t<float>({n_vocab});
            const int32_t* ids = tokens.data();
            float* out = logits.mutable_data();
            {
                py::gil_scoped_release release;
                s.decode(ids, n, out, all_logits, topk);
            }
            return logits;
        }, py::arg("tokens"), py::arg("all_logits") = py::bool_(false), py::kw_only(),
           py::arg("topk") = py::int_(0),
           "Appends tokens to the context; returns logits (n, n_vocab) or (n_vocab,) for the last. "
           "topk > 0 (needs topk_prepass): exact values of the topk largest logits, -inf elsewhere.");
}

}  // namespace bitnet::bindings
