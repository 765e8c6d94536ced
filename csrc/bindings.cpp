// pybind11 module diffcomb._C: the CPU entry points. Python passes array
// addresses (tensor.data_ptr()), shapes, dtype codes and thread counts;
// diffcomb/_native.py owns validation and allocation. Each family registers
// its functions from csrc/<family>/bind.cpp (common/registry.h).
#include <pybind11/pybind11.h>

#include "common/registry.h"

namespace diffcomb {
std::vector<Binder>& module_binders() {
  static std::vector<Binder> binders;
  return binders;
}
}  // namespace diffcomb

PYBIND11_MODULE(_C, m) {
  m.doc() = "diffcomb native CPU kernels (raw-pointer entry points; use diffcomb's Python API)";
  pybind11::call_guard<pybind11::gil_scoped_release> nogil;
  for (auto bind : diffcomb::module_binders()) bind(m, nogil);
}
