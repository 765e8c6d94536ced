// diffcomb._C entry points of the isotonic family (api.h, bind.h).
#include "isotonic/api.h"
#include "isotonic/bind.h"

namespace iso = diffcomb::isotonic;
namespace py = pybind11;

DC_BIND_CPU(isotonic) {
  const auto threads = py::arg("threads");
  const auto chunk = py::arg("chunk") = 0;
  m.def("isotonic_argsort_descending", &iso::argsort_descending_cpu,
        "sorted = (scale * x) sorted descending along rows (stable radix sort), perm = the int32 indices.",
        py::arg("x"), py::arg("sorted"), py::arg("perm"), py::arg("rows"), py::arg("n"), py::arg("scale"),
        py::arg("dtype"), threads, nogil);
  iso::def_project(m, &iso::project_cpu, threads, chunk, nogil);
  iso::def_sort_project(m, &iso::sort_project_cpu, threads, nogil);
  iso::def_regression(m, &iso::isotonic_cpu, threads, chunk, nogil);
  iso::def_vjp(m, &iso::vjp_cpu, threads, nogil);
  iso::def_sparse_topk(m, &iso::sparse_topk_cpu, threads, chunk, nogil);
}
