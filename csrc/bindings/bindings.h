// Shared declarations of the pybind11 module: one init_<area>() per bindings file.
#pragma once

#include <pybind11/pybind11.h>

namespace bitnet::bindings {

void init_errors(pybind11::module_& m);
void init_format(pybind11::module_& m);
void init_model(pybind11::module_& m);
void init_engine(pybind11::module_& m);
void init_kernels(pybind11::module_& m);
void init_sampler(pybind11::module_& m);
void init_output(pybind11::module_& m);

}  // namespace bitnet::bindings
