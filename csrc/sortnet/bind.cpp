// diffcomb._C entry points of the sorting-network family (api.h), and the two
// argument structs, which diffcomb._C_cuda's entry points take as well.
#include <pybind11/pybind11.h>

#include "common/registry.h"
#include "sortnet/api.h"

namespace py = pybind11;
namespace sn = diffcomb::sortnet;

DC_BIND_CPU(sortnet) {
  py::class_<sn::SortLayout>(m, "SortLayout", "The comparators of a sorting network: addresses of its int32 arrays.")
      .def(py::init<std::uintptr_t, std::uintptr_t, std::uintptr_t, std::uintptr_t, int64_t, int64_t>(),
           py::arg("lo"), py::arg("hi"), py::arg("offsets"), py::arg("reach"), py::arg("layers"),
           py::arg("comparators"))
      .def_readonly("lo", &sn::SortLayout::lo)
      .def_readonly("hi", &sn::SortLayout::hi)
      .def_readonly("offsets", &sn::SortLayout::offsets)
      .def_readonly("reach", &sn::SortLayout::reach)
      .def_readonly("layers", &sn::SortLayout::layers)
      .def_readonly("comparators", &sn::SortLayout::comparators);
  py::class_<sn::Relaxation>(m, "Relaxation", "How the comparators are relaxed: sigmoid code, steepness, art_lambda.")
      .def(py::init<int, double, double>(), py::arg("sigmoid"), py::arg("steepness"), py::arg("art_lambda"))
      .def_readonly("sigmoid", &sn::Relaxation::sigmoid)
      .def_readonly("steepness", &sn::Relaxation::steepness)
      .def_readonly("art_lambda", &sn::Relaxation::art_lambda);
  m.def("sortnet_forward", &sn::forward_cpu, nogil, "Relaxed sorted values, mixing weights and (Pt != 0) Pt.",
        py::arg("x"), py::arg("values"), py::arg("alpha"), py::arg("Pt"), py::arg("batch"), py::arg("n"),
        py::arg("dtype"), py::arg("layout"), py::arg("relaxation"), py::arg("threads"));
  m.def("sortnet_backward", &sn::backward_cpu, nogil, "dL/dx from dL/dvalues and dL/dP (0: absent).", py::arg("x"),
        py::arg("alpha"), py::arg("g_values"), py::arg("g_P"), py::arg("g_P_transposed"), py::arg("dx"),
        py::arg("batch"), py::arg("n"), py::arg("dtype"), py::arg("layout"), py::arg("relaxation"),
        py::arg("threads"));
}
