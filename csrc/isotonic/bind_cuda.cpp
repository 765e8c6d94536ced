// diffcomb._C_cuda entry points of the isotonic family (api.h).
#include "common/registry.h"
#include "isotonic/api.h"

namespace iso = diffcomb::isotonic;

DC_BIND_CUDA(isotonic) {
  m.def("work_bytes", &iso::cuda_work_bytes);
  m.def("project", &iso::project_cuda, nogil);
  m.def("isotonic", &iso::isotonic_cuda, nogil);
  m.def("vjp", &iso::vjp_cuda, nogil);
  m.def("sparse_topk_work_bytes", &iso::sparse_topk_cuda_work_bytes);
  m.def("sparse_topk", &iso::sparse_topk_cuda, nogil);
}
