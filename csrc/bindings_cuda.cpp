// pybind11 module diffcomb._C_cuda: the CUDA entry points. Same raw-pointer
// convention as diffcomb._C, plus the device index and the stream handle
// (torch.cuda.current_stream().cuda_stream) to launch on. Linked with the
// static CUDA runtime: importing needs no GPU or driver. Each family
// registers its functions from csrc/<family>/bind_cuda.cpp (common/registry.h).
#include <pybind11/pybind11.h>

#include "common/registry.h"

namespace diffcomb {
std::vector<Binder>& module_binders() {
  static std::vector<Binder> binders;
  return binders;
}
}  // namespace diffcomb

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "diffcomb native CUDA kernels (raw-pointer entry points; use diffcomb's Python API)";
  pybind11::call_guard<pybind11::gil_scoped_release> nogil;
  for (auto bind : diffcomb::module_binders()) bind(m, nogil);
}
