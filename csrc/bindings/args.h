// Checked conversion of Python arguments at the binding boundary.
//
// A binding that declares `int64_t n` makes pybind11 answer a wrong value (2**63, 1.5, "3")
// with a TypeError listing every signature. Bindings that take the argument as a py::handle and
// convert it with these helpers raise ShapeError (bitnet.ShapeError) naming the parameter, the
// expected type or range and the value found. Each helper needs the GIL.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "core/error.h"

namespace bitnet::bindings {

// repr(value), for messages; never throws.
inline std::string repr_of(pybind11::handle value) {
    PyObject* r = PyObject_Repr(value.ptr());
    if (r == nullptr) {
        PyErr_Clear();
        return "<unprintable>";
    }
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(r, &n);
    std::string out = s ? std::string(s, static_cast<size_t>(std::min<Py_ssize_t>(n, 200)))
                        : std::string("<unprintable>");
    if (!s) PyErr_Clear();
    Py_DECREF(r);
    return out;
}

// An integer in [lo, hi]: a Python int or anything with __index__ (numpy integers); not bool,
// not float.
inline int64_t int_arg(pybind11::handle value, const char* name, int64_t lo, int64_t hi) {
    PyObject* o = value.ptr();
    if (PyBool_Check(o) || !PyIndex_Check(o)) {
        throw ShapeError(str_cat(name, " must be an integer, got ", repr_of(value), " (",
                                 Py_TYPE(o)->tp_name, ")"));
    }
    PyObject* index = PyNumber_Index(o);
    if (index == nullptr) {
        PyErr_Clear();
        throw ShapeError(str_cat(name, " must be an integer, got ", repr_of(value)));
    }
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (overflow != 0 || v < lo || v > hi) {
        if (v == -1) PyErr_Clear();
        throw ShapeError(str_cat(name, " must be in [", lo, ", ", hi, "], got ", repr_of(value)));
    }
    return static_cast<int64_t>(v);
}

// A real number (int or float, not bool) in [lo, hi]; NaN is refused.
inline double float_arg(pybind11::handle value, const char* name, double lo, double hi) {
    PyObject* o = value.ptr();
    if (PyBool_Check(o) || !(PyFloat_Check(o) || PyLong_Check(o) || PyIndex_Check(o) ||
                             PyNumber_Check(o))) {
        throw ShapeError(str_cat(name, " must be a number, got ", repr_of(value)));
    }
    const double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        throw ShapeError(str_cat(name, " must be a number, got ", repr_of(value)));
    }
    if (std::isnan(v) || v < lo || v > hi) {
        throw ShapeError(str_cat(name, " must be in [", lo, ", ", hi, "], got ", repr_of(value)));
    }
    return v;
}

// True or False (numpy bools too), not 0/1.
inline bool bool_arg(pybind11::handle value, const char* name) {
    if (PyBool_Check(value.ptr())) return value.ptr() == Py_True;
    const std::string type = Py_TYPE(value.ptr())->tp_name;
    if (type == "numpy.bool" || type == "numpy.bool_") return PyObject_IsTrue(value.ptr()) == 1;
    throw ShapeError(str_cat(name, " must be True or False, got ", repr_of(value)));
}

// A str, as UTF-8. Lone surrogates (text decoded with errors="surrogateescape") are refused.
inline std::string str_arg(pybind11::handle value, const char* name) {
    if (!PyUnicode_Check(value.ptr())) {
        throw ShapeError(str_cat(name, " must be a str, got ", repr_of(value), " (",
                                 Py_TYPE(value.ptr())->tp_name, ")"));
    }
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(value.ptr(), &n);
    if (s == nullptr) {
        PyErr_Clear();
        throw ShapeError(str_cat(name, " is not valid Unicode (it holds a lone surrogate): ",
                                 repr_of(value)));
    }
    return std::string(s, static_cast<size_t>(n));
}

// A file system path (str, bytes or os.PathLike) as the bytes the OS sees (os.fsencode).
inline std::string path_arg(pybind11::handle value, const char* name) {
    PyObject* o = value.ptr();
    if (!(PyUnicode_Check(o) || PyBytes_Check(o) || PyObject_HasAttrString(o, "__fspath__"))) {
        throw ShapeError(str_cat(name, " must be a str, bytes or os.PathLike, got ",
                                 repr_of(value)));
    }
    PyObject* bytes = nullptr;
    if (!PyUnicode_FSConverter(o, &bytes)) {
        PyErr_Clear();
        throw ShapeError(str_cat(name, " is not a valid path: ", repr_of(value)));
    }
    std::string out(PyBytes_AS_STRING(bytes), static_cast<size_t>(PyBytes_GET_SIZE(bytes)));
    Py_DECREF(bytes);
    if (out.find('\0') != std::string::npos) {
        throw ShapeError(str_cat(name, " contains a NUL byte: ", repr_of(value)));
    }
    return out;
}

// An instance of a bound class (a bitnet._core.Model, KvCache ...), named in the error.
template <typename T>
T object_arg(pybind11::handle value, const char* name, const char* type_name) {
    try {
        return value.cast<T>();
    } catch (const pybind11::cast_error&) {
        throw ShapeError(str_cat(name, " must be a ", type_name, ", got ", repr_of(value)));
    }
}

using Int32Array = pybind11::array_t<int32_t, pybind11::array::c_style>;

// An int32 C-contiguous 1-D view of `obj` (an integer array or a sequence of ints): the array
// itself when it already is one, else a checked copy. Floats are refused, never truncated; each
// value must fit in int32. Throws ShapeError naming `what`.
inline Int32Array int32_array(pybind11::handle obj, const std::string& what) {
    namespace py = pybind11;
    if (Int32Array::check_(obj)) {
        auto a = py::reinterpret_borrow<Int32Array>(obj);
        if (a.ndim() != 1) throw ShapeError(str_cat(what, " must be 1-D, got ", a.ndim(), " dims"));
        return a;
    }
    py::array any = py::array::ensure(obj);
    if (!any) {
        PyErr_Clear();
        throw ShapeError(what + " must be a 1-D array of integers");
    }
    const char kind = any.dtype().kind();
    if (kind != 'i' && kind != 'u' && !(any.size() == 0 && kind == 'f')) {
        throw ShapeError(what + " must hold integers, not " + std::string(py::str(any.dtype())));
    }
    if (any.ndim() != 1) throw ShapeError(str_cat(what, " must be 1-D, got ", any.ndim(), " dims"));
    auto wide = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(any);
    if (!wide) {  // uint64 values above INT64_MAX
        PyErr_Clear();
        throw ShapeError(what + " holds values that do not fit in int32");
    }
    Int32Array out(any.size());
    int32_t* dst = out.mutable_data();
    const int64_t* src = wide.data();
    for (py::ssize_t i = 0; i < any.size(); ++i) {
        BITNET_CHECK(src[i] >= INT32_MIN && src[i] <= INT32_MAX, ShapeError, what, "[", i, "] = ",
                     src[i], " does not fit in int32");
        dst[i] = static_cast<int32_t>(src[i]);
    }
    return out;
}

// The OS's bytes of a path back as a str (os.fsdecode: undecodable bytes as surrogates).
inline pybind11::str fs_str(const std::string& path) {
    PyObject* o = PyUnicode_DecodeFSDefaultAndSize(path.data(), static_cast<Py_ssize_t>(path.size()));
    if (o == nullptr) throw pybind11::error_already_set();
    return pybind11::reinterpret_steal<pybind11::str>(o);
}

}  // namespace bitnet::bindings
