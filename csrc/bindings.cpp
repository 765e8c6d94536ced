// pybind11 module diffcomb._C: the CPU entry points. Python passes array
// addresses (tensor.data_ptr()), shapes, dtype codes and thread counts;
// diffcomb/_native.py owns validation and allocation.
#include <pybind11/pybind11.h>

#include "isotonic/api.h"
#include "softdtw/api.h"

namespace py = pybind11;
namespace iso = diffcomb::isotonic;
namespace sdtw = diffcomb::softdtw;

PYBIND11_MODULE(_C, m) {
  m.doc() = "diffcomb native CPU kernels (raw-pointer entry points; use diffcomb's Python API)";
  py::call_guard<py::gil_scoped_release> nogil;
  m.def("argsort_descending", &iso::argsort_descending_cpu, nogil);
  m.def("project", &iso::project_cpu, nogil);
  m.def("isotonic", &iso::isotonic_cpu, nogil);
  m.def("vjp", &iso::vjp_cpu, nogil);
  m.def("softdtw_forward", &sdtw::forward_cpu, nogil);
  m.def("softdtw_backward", &sdtw::backward_cpu, nogil);
  m.def("softdtw_second_order", &sdtw::second_order_cpu, nogil);
}
