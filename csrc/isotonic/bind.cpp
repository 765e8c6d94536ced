// diffcomb._C entry points of the isotonic family (api.h).
#include "common/registry.h"
#include "isotonic/api.h"

namespace iso = diffcomb::isotonic;

DC_BIND_CPU(isotonic) {
  m.def("argsort_descending", &iso::argsort_descending_cpu, nogil);
  m.def("project", &iso::project_cpu, nogil);
  m.def("isotonic", &iso::isotonic_cpu, nogil);
  m.def("vjp", &iso::vjp_cpu, nogil);
  m.def("sparse_topk", &iso::sparse_topk_cpu, nogil);
}
