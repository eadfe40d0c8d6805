// The extension module bitnet._core: the C++ core exposed to the Python package.
#include "bindings/bindings.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
    m.doc() = "bitnet's C++ core: GGUF reader, ternary kernels and the decoder.";
    bitnet::bindings::init_errors(m);
    bitnet::bindings::init_format(m);
    bitnet::bindings::init_kernels(m);
    bitnet::bindings::init_model(m);
    bitnet::bindings::init_engine(m);
    bitnet::bindings::init_sampler(m);
    bitnet::bindings::init_output(m);
}
