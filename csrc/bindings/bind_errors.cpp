// Maps the C++ error types onto the exception classes of bitnet.errors.
//
// The classes are defined in Python (so that FormatError can be both a BitnetError and a
// ValueError); this translator raises them for the matching C++ exceptions.
#include <pybind11/pybind11.h>

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
            PyErr_SetString(g_format, e.what());
        } catch (const ShapeError& e) {
            PyErr_SetString(g_shape, e.what());
        } catch (const UnsupportedError& e) {
            PyErr_SetString(g_unsupported, e.what());
        } catch (const Error& e) {
            PyErr_SetString(g_base, e.what());
        }
    });
    m.attr("BitnetError") = py::handle(g_base);
    m.attr("FormatError") = py::handle(g_format);
    m.attr("ShapeError") = py::handle(g_shape);
    m.attr("UnsupportedError") = py::handle(g_unsupported);
}

}  // namespace bitnet::bindings
