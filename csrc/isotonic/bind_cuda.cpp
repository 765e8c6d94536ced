// diffcomb._C_cuda entry points of the isotonic family (api.h, bind.h).
#include "isotonic/api.h"
#include "isotonic/bind.h"

namespace iso = diffcomb::isotonic;
namespace py = pybind11;

DC_BIND_CUDA(isotonic) {
  const auto work = py::arg("work");
  const auto device = py::arg("device");
  const auto stream = py::arg("stream");
  m.def("isotonic_work_bytes", &iso::cuda_work_bytes,
        "Bytes of the work array of isotonic_project and isotonic_regression on rows (rows, n).", py::arg("rows"),
        py::arg("n"));
  m.def("sparse_topk_work_bytes", &iso::sparse_topk_cuda_work_bytes,
        "Bytes of the work array of sparse_topk on rows (rows, n).", py::arg("rows"), py::arg("n"));
  iso::def_project(m, &iso::project_cuda, work, device, stream, nogil);
  iso::def_regression(m, &iso::isotonic_cuda, work, device, stream, nogil);
  iso::def_vjp(m, &iso::vjp_cuda, device, stream, nogil);
  iso::def_sparse_topk(m, &iso::sparse_topk_cuda, work, device, stream, nogil);
}
