// pybind11 module diffcomb._C_cuda: the CUDA entry points. Same raw-pointer
// convention as diffcomb._C, plus the device index and the stream handle
// (torch.cuda.current_stream().cuda_stream) to launch on. Linked with the
// static CUDA runtime: importing needs no GPU or driver.
#include <pybind11/pybind11.h>

#include "isotonic/api.h"

namespace py = pybind11;
namespace iso = diffcomb::isotonic;

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "diffcomb native CUDA kernels (raw-pointer entry points; use diffcomb's Python API)";
  py::call_guard<py::gil_scoped_release> nogil;
  m.def("work_bytes", &iso::cuda_work_bytes);
  m.def("project", &iso::project_cuda, nogil);
  m.def("isotonic", &iso::isotonic_cuda, nogil);
  m.def("vjp", &iso::vjp_cuda, nogil);
}
