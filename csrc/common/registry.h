// Each family registers its Python entry points from its own file, so adding
// a family never edits a shared file:
//   csrc/<family>/bind.cpp       -> diffcomb._C      (DC_BIND_CPU)
//   csrc/<family>/bind_cuda.cpp  -> diffcomb._C_cuda (DC_BIND_CUDA)
// setup.py globs both. The binders run inside PYBIND11_MODULE
// (csrc/bindings.cpp, csrc/bindings_cuda.cpp), in no particular order.
//
//   DC_BIND_CPU(softdtw) {
//     m.def("softdtw_forward", &sdtw::forward_cpu, nogil);
//   }
#pragma once

#include <pybind11/pybind11.h>

#include <vector>

namespace diffcomb {

using Binder = void (*)(pybind11::module_& m, const pybind11::call_guard<pybind11::gil_scoped_release>& nogil);

// The module's list of binders (defined once per module, in bindings*.cpp).
std::vector<Binder>& module_binders();

struct RegisterBinder {
  explicit RegisterBinder(Binder binder) { module_binders().push_back(binder); }
};

}  // namespace diffcomb

#define DC_BIND_IMPL(FAMILY)                                                                     \
  static void dc_bind_##FAMILY(pybind11::module_& m,                                            \
                               const pybind11::call_guard<pybind11::gil_scoped_release>& nogil); \
  static const diffcomb::RegisterBinder dc_register_##FAMILY(&dc_bind_##FAMILY);                 \
  static void dc_bind_##FAMILY(pybind11::module_& m,                                            \
                               [[maybe_unused]] const pybind11::call_guard<pybind11::gil_scoped_release>& nogil)

#define DC_BIND_CPU(FAMILY) DC_BIND_IMPL(FAMILY)
#define DC_BIND_CUDA(FAMILY) DC_BIND_IMPL(FAMILY)
