// diffcomb._C_cuda entry points of the sorting-network family (api.h).
#include "common/registry.h"
#include "sortnet/api.h"

namespace sn = diffcomb::sortnet;

DC_BIND_CUDA(sortnet) {
  m.def("sortnet_forward", &sn::forward_cuda, nogil);
  m.def("sortnet_p_backward", &sn::p_backward_cuda, nogil);
  m.def("sortnet_values_backward_work_bytes", &sn::values_backward_work_bytes);
  m.def("sortnet_values_backward", &sn::values_backward_cuda, nogil);
}
