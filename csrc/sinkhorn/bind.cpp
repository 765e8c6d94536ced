// diffcomb._C entry points of the Sinkhorn family (api.h).
#include "common/registry.h"
#include "sinkhorn/api.h"

namespace skh = diffcomb::sinkhorn;

DC_BIND_CPU(sinkhorn) {
  m.def("sinkhorn_forward", &skh::forward_cpu, nogil);
  m.def("sinkhorn_implicit_backward", &skh::implicit_backward_cpu, nogil);
  m.def("sinkhorn_unrolled_backward", &skh::unrolled_backward_cpu, nogil);
}
