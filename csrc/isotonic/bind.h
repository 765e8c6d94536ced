// The isotonic family's Python entry points, defined once for both modules:
// bind.cpp (diffcomb._C) and bind_cuda.cpp (diffcomb._C_cuda) pass each
// function and its execution context (api.h): the CPU's threads (and chunk, a
// test hook: > 0 runs the chunked GPU algorithm on the host), CUDA's work
// array, device and stream. The op arguments, their names, order and the
// docstrings are the same on both devices.
#pragma once

#include "common/registry.h"

namespace diffcomb {
namespace isotonic {
namespace py = pybind11;

template <class F, class... Context>
void def_project(py::module_& m, F f, const Context&... context) {
  m.def("isotonic_project", f,
        "Permutahedron projection (PAV) of rows a (rows, n) sorted descending against the sorted c (isotonic.h).",
        py::arg("a"), py::arg("c"), py::arg("perm"), py::arg("out"), py::arg("starts"), py::arg("weights"),
        py::arg("rows"), py::arg("n"), py::arg("out_scale"), py::arg("rank"), py::arg("kl"), py::arg("dtype"),
        context...);
}

template <class F, class... Context>
void def_sort_project(py::module_& m, F f, const Context&... context) {
  m.def("isotonic_sort_project", f,
        "The stable descending argsort of scale * x (rows, n), then the permutahedron projection of isotonic_project, "
        "in one call (the sorted rows are scratch).",
        py::arg("x"), py::arg("c"), py::arg("out"), py::arg("perm"), py::arg("starts"), py::arg("weights"),
        py::arg("rows"), py::arg("n"), py::arg("scale"), py::arg("out_scale"), py::arg("rank"), py::arg("kl"),
        py::arg("dtype"), context...);
}

template <class F, class... Context>
void def_regression(py::module_& m, F f, const Context&... context) {
  m.def("isotonic_regression", f,
        "Weighted isotonic regression of rows y (rows, n): the non-increasing fit of sign * y, times sign.",
        py::arg("y"), py::arg("sample_weight"), py::arg("out"), py::arg("starts"), py::arg("weights"), py::arg("rows"),
        py::arg("n"), py::arg("sign"), py::arg("dtype"), context...);
}

template <class F, class... Context>
void def_vjp(py::module_& m, F f, const Context&... context) {
  m.def("isotonic_vjp", f, "Block VJP of a projection or fit (isotonic.h, vjp_row); mode: VjpCode.", py::arg("grad"),
        py::arg("perm"), py::arg("starts"), py::arg("weights"), py::arg("dx"), py::arg("rows"), py::arg("n"),
        py::arg("scale"), py::arg("mode"), py::arg("dtype"), context...);
}

template <class F, class... Context>
void def_sparse_topk(py::module_& m, F f, const Context&... context) {
  m.def("sparse_topk", f,
        "Sparse soft top-k of rows s (rows, n) sorted descending (sparse_topk.h); method: TopkMethod, r = 1/(p-1).",
        py::arg("s"), py::arg("perm"), py::arg("out"), py::arg("deriv"), py::arg("starts"), py::arg("weights"),
        py::arg("rows"), py::arg("n"), py::arg("k"), py::arg("r"), py::arg("method"), py::arg("dtype"), context...);
}

}  // namespace isotonic
}  // namespace diffcomb
