// Checked conversion of Python arguments at the binding boundary.
//
// A binding that declares `int64_t n` makes pybind11 answer a wrong value (2**63, 1.5, "3")
// with a TypeError listing every signature. Bindings that take the argument as a py::handle and
// convert it with these helpers raise ShapeError (bitnet.ShapeError) naming the parameter, the
// expected type or range and the value found. Each helper needs the GIL.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
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

// The OS's bytes of a path back as a str (os.fsdecode: undecodable bytes as surrogates).
inline pybind11::str fs_str(const std::string& path) {
    PyObject* o = PyUnicode_DecodeFSDefaultAndSize(path.data(), static_cast<Py_ssize_t>(path.size()));
    if (o == nullptr) throw pybind11::error_already_set();
    return pybind11::reinterpret_steal<pybind11::str>(o);
}

}  // namespace bitnet::bindings
