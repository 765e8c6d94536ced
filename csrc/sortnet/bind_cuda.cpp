// diffcomb._C_cuda entry points of the sorting-network family (api.h). They
// take the SortLayout and Relaxation of diffcomb._C (one Python type each,
// shared through pybind11's registry), so the Python layer builds the same
// arguments for both devices; importing diffcomb._C here registers them.
#include <pybind11/pybind11.h>

#include "common/registry.h"
#include "sortnet/api.h"

namespace py = pybind11;
namespace sn = diffcomb::sortnet;

DC_BIND_CUDA(sortnet) {
  py::module_ cpu = py::module_::import("diffcomb._C");
  m.attr("SortLayout") = cpu.attr("SortLayout");
  m.attr("Relaxation") = cpu.attr("Relaxation");
  m.def("sortnet_forward", &sn::forward_cuda, nogil, "Relaxed sorted values, mixing weights and (Pt != 0) Pt.",
        py::arg("x"), py::arg("values"), py::arg("alpha"), py::arg("Pt"), py::arg("batch"), py::arg("n"),
        py::arg("dtype"), py::arg("layout"), py::arg("relaxation"), py::arg("device"), py::arg("stream"));
  m.def("sortnet_backward_work_bytes", &sn::backward_work_bytes, "Bytes of scratch of sortnet_backward.",
        py::arg("batch"), py::arg("n"), py::arg("comparators"), py::arg("dtype"), py::arg("with_P"));
  m.def("sortnet_backward", &sn::backward_cuda, nogil, "dL/dx from dL/dvalues and dL/dP (0: absent).",
        py::arg("x"), py::arg("alpha"), py::arg("g_values"), py::arg("g_P"), py::arg("g_P_transposed"),
        py::arg("dx"), py::arg("batch"), py::arg("n"), py::arg("dtype"), py::arg("layout"), py::arg("relaxation"),
        py::arg("work"), py::arg("device"), py::arg("stream"));
}
