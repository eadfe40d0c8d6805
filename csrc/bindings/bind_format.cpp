// Python access to GGUF files: metadata, the tensor table and raw tensor bytes (bitnet info).
//
// Arguments are taken as Python objects and checked here, so that a wrong type raises
// ShapeError naming the parameter rather than pybind11's list of signatures (bindings/args.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>

#include "bindings/args.h"
#include "bindings/bindings.h"
#include "core/error.h"
#include "format/gguf.h"
#include "format/types.h"

namespace py = pybind11;

namespace bitnet::bindings {
namespace {

// The reader has checked every string to be UTF-8; replacement is a second line of defence.
py::str to_py_str(const std::string& s) {
    PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(o);
}

template <typename T>
py::array numbers(const GgufFile& f, const GgufKv& kv) {
    py::array_t<T> out(static_cast<py::ssize_t>(kv.count));
    auto* dst = out.mutable_data();
    const uint64_t step = GgufFile::scalar_bytes(kv.elem_type);
    for (uint64_t i = 0; i < kv.count; ++i) {
        const uint64_t at = kv.value_offset + 12 + i * step;
        if constexpr (std::is_floating_point_v<T>) {
            dst[i] = static_cast<T>(f.read_float_at(at, kv.elem_type));
        } else if constexpr (std::is_same_v<T, uint64_t>) {
            dst[i] = f.read_uint_at(at, kv.elem_type);
        } else {
            dst[i] = static_cast<T>(f.read_int_at(at, kv.elem_type));
        }
    }
    return std::move(out);
}

// Converts one metadata value to Python: scalars to int/float/bool/str, string arrays to
// list[str], numeric arrays to numpy arrays of the stored width.
py::object value_of(const GgufFile& f, const GgufKv& kv) {
    switch (kv.type) {
        case GgufType::STRING: return to_py_str(f.read_string_at(kv.value_offset));
        case GgufType::BOOL: return py::bool_(f.read_int_at(kv.value_offset, kv.type) != 0);
        case GgufType::F32:
        case GgufType::F64: return py::float_(f.read_float_at(kv.value_offset, kv.type));
        case GgufType::U64: return py::int_(f.read_uint_at(kv.value_offset, kv.type));
        case GgufType::ARRAY: break;
        default: return py::int_(f.read_int_at(kv.value_offset, kv.type));
    }
    switch (kv.elem_type) {
        case GgufType::STRING: {
            py::list out(static_cast<size_t>(kv.count));
            uint64_t pos = kv.value_offset + 12;
            for (uint64_t i = 0; i < kv.count; ++i) {
                std::string s = f.read_string_at(pos);
                pos += 8 + s.size();
                out[static_cast<size_t>(i)] = to_py_str(s);
            }
            return std::move(out);
        }
        case GgufType::U8: return numbers<uint8_t>(f, kv);
        case GgufType::I8: return numbers<int8_t>(f, kv);
        case GgufType::U16: return numbers<uint16_t>(f, kv);
        case GgufType::I16: return numbers<int16_t>(f, kv);
        case GgufType::U32: return numbers<uint32_t>(f, kv);
        case GgufType::I32: return numbers<int32_t>(f, kv);
        case GgufType::U64: return numbers<uint64_t>(f, kv);
        case GgufType::I64: return numbers<int64_t>(f, kv);
        case GgufType::F32: return numbers<float>(f, kv);
        case GgufType::F64: return numbers<double>(f, kv);
        case GgufType::BOOL: {
            py::list out(static_cast<size_t>(kv.count));
            for (uint64_t i = 0; i < kv.count; ++i) {
                out[static_cast<size_t>(i)] =
                    py::bool_(f.read_int_at(kv.value_offset + 12 + i, GgufType::BOOL) != 0);
            }
            return std::move(out);
        }
        case GgufType::ARRAY:
            throw UnsupportedError(str_cat(f.path(), ": key '", kv.key,
                                           "' is an array of arrays, which bitnet does not read"));
    }
    return py::none();
}

}  // namespace

void init_format(py::module_& m) {
    py::class_<GgufFile, std::shared_ptr<GgufFile>>(m, "GgufFile",
        "A GGUF file, mapped and validated. Raises FormatError for corrupt or truncated files.")
        .def(py::init([](py::object path) {
                 std::string p = path_arg(path, "path");
                 py::gil_scoped_release release;
                 return std::make_shared<GgufFile>(p);
             }),
             py::arg("path"))
        .def_property_readonly("path", [](const GgufFile& f) { return fs_str(f.path()); })
        .def_property_readonly("version", &GgufFile::version)
        .def_property_readonly("alignment", &GgufFile::alignment)
        .def_property_readonly("data_offset", &GgufFile::data_offset)
        .def_property_readonly("file_size", &GgufFile::file_size)
        .def("keys", [](const GgufFile& f) {
            py::list out;
            for (const GgufKv& kv : f.kvs()) out.append(to_py_str(kv.key));
            return out;
        }, "Metadata keys in file order.")
        .def("__contains__", [](const GgufFile& f, py::object key) {
            return py::isinstance<py::str>(key) && f.find_kv(key.cast<std::string>()) != nullptr;
        })
        .def("get", [](const GgufFile& f, py::object key, py::object fallback) {
            const GgufKv* kv = f.find_kv(str_arg(key, "key"));
            return kv ? value_of(f, *kv) : fallback;
        }, py::arg("key"), py::arg("default") = py::none(),
           "The value of a metadata key (numeric arrays as numpy arrays), or default.")
        .def("value_type", [](const GgufFile& f, py::object key) -> py::object {
            const GgufKv* kv = f.find_kv(str_arg(key, "key"));
            if (!kv) return py::none();
            std::string name = gguf_type_name(kv->type);
            if (kv->type == GgufType::ARRAY) name += str_cat("[", gguf_type_name(kv->elem_type), "]");
            return py::str(name);
        }, py::arg("key"), "The stored type of a key, e.g. 'uint32' or 'array[string]'.")
        .def("array_length", [](const GgufFile& f, py::object key) -> py::object {
            const GgufKv* kv = f.find_kv(str_arg(key, "key"));
            if (!kv || kv->type != GgufType::ARRAY) return py::none();
            return py::int_(kv->count);
        }, py::arg("key"),
           "Elements of an array key without reading them (None: absent or not an array).")
        .def("tensors", [](const GgufFile& f) {
            py::list out;
            for (const GgufTensor& t : f.tensors()) {
                py::dict d;
                d["name"] = to_py_str(t.name);
                d["type"] = t.type;
                d["type_name"] = type_name(t.type);
                d["shape"] = py::tuple(py::cast(t.shape));
                d["n_elements"] = t.n_elements;
                d["offset"] = t.offset;
                d["size_bytes"] = t.size_bytes;
                out.append(d);
            }
            return out;
        }, "The tensor table: dicts of name, type, type_name, shape (ggml order), offset, size_bytes.")
        .def("tensor_bytes", [](std::shared_ptr<GgufFile> f, py::object name) {
            const GgufTensor* t = f->find_tensor(str_arg(name, "name"));
            if (!t) throw py::key_error(name.cast<std::string>());
            py::array_t<uint8_t> view({static_cast<py::ssize_t>(t->size_bytes)}, {1},
                                      t->data, py::cast(f));
            py::detail::array_proxy(view.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
            return view;
        }, py::arg("name"), "A read-only uint8 view of a tensor's bytes in the mapped file.");

    m.def("type_name", [](py::object type_id) {
        return std::string(type_name(static_cast<uint32_t>(int_arg(type_id, "type_id", 0, UINT32_MAX))));
    }, py::arg("type_id"), "Name of a ggml tensor type id.");
}

}  // namespace bitnet::bindings
