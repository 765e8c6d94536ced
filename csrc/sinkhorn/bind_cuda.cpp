// diffcomb._C_cuda entry points of the Sinkhorn family (api.h).
#include "common/registry.h"
#include "sinkhorn/api.h"

namespace skh = diffcomb::sinkhorn;

DC_BIND_CUDA(sinkhorn) {
  m.def("sinkhorn_work_bytes", &skh::cuda_work_bytes);
  m.def("sinkhorn_forward", &skh::forward_cuda, nogil);
  m.def("sinkhorn_implicit_backward", &skh::implicit_backward_cuda, nogil);
  m.def("sinkhorn_unrolled_backward", &skh::unrolled_backward_cuda, nogil);
}
