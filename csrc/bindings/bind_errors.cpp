// Maps the C++ error types onto the exception classes of bitnet.errors.
//
// The classes are defined in Python (so that FormatError can be both a BitnetError and a
// ValueError); this translator raises them for the matching C++ exceptions. Messages may quote
// bytes from a file or a path that are not UTF-8: they are decoded with backslash escapes, so
// the intended exception is raised rather than a UnicodeDecodeError. Allocation failures become
// a BitnetError (the loaders name the file and tensor first, see model/weights.h); a failed
// pybind11 cast inside a binding becomes a ShapeError.
#include <pybind11/pybind11.h>

#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "bindings/bindings.h"
#include "core/error.h"

namespace py = pybind11;

namespace bitnet::bindings {
namespace {

// Borrowed for the life of the process: the interpreter keeps bitnet.errors alive in
// sys.modules, and these references are deliberately never released (no teardown-order hazards).
PyObject* g_base = nullptr;
PyObject* g_format = nullptr;
PyObject* g_shape = nullptr;
PyObject* g_unsupported = nullptr;

PyObject* fetch(const py::module_& errors, const char* name) {
    py::object cls = errors.attr(name);
    return cls.release().ptr();  // keep one reference forever
}

void raise(PyObject* type, const char* message) {
    PyObject* text = PyUnicode_DecodeUTF8(message, static_cast<Py_ssize_t>(std::strlen(message)),
                                          "backslashreplace");
    if (text == nullptr) return;  // MemoryError is already set
    PyErr_SetObject(type, text);
    Py_DECREF(text);
}

}  // namespace

void init_errors(py::module_& m) {
    py::module_ errors = py::module_::import("bitnet.errors");
    g_base = fetch(errors, "BitnetError");
    g_format = fetch(errors, "FormatError");
    g_shape = fetch(errors, "ShapeError");
    g_unsupported = fetch(errors, "UnsupportedError");
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const FormatError& e) {
            raise(g_format, e.what());
        } catch (const ShapeError& e) {
            raise(g_shape, e.what());
        } catch (const UnsupportedError& e) {
            raise(g_unsupported, e.what());
        } catch (const Error& e) {
            raise(g_base, e.what());
        } catch (const py::cast_error& e) {
            raise(g_shape, e.what());
        } catch (const std::bad_alloc&) {
            raise(g_base, "out of memory: a buffer could not be allocated");
        } catch (const std::length_error& e) {
            raise(g_base, (std::string("out of memory: a buffer is too large (") + e.what() + ")").c_str());
        }
    });
    m.attr("BitnetError") = py::handle(g_base);
    m.attr("FormatError") = py::handle(g_format);
    m.attr("ShapeError") = py::handle(g_shape);
    m.attr("UnsupportedError") = py::handle(g_unsupported);
}

}  // namespace bitnet::bindings
