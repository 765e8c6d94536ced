// diffcomb._C entry points of the sorting-network family (api.h).
#include "common/registry.h"
#include "sortnet/api.h"

namespace sn = diffcomb::sortnet;

DC_BIND_CPU(sortnet) {
  m.def("sortnet_forward", &sn::forward_cpu, nogil);
  m.def("sortnet_backward", &sn::backward_cpu, nogil);
}
