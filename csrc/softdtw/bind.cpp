// diffcomb._C entry points of the soft-DTW family (api.h).
#include "common/registry.h"
#include "softdtw/api.h"

namespace sdtw = diffcomb::softdtw;

DC_BIND_CPU(softdtw) {
  m.def("softdtw_value_and_alignment", &sdtw::value_and_alignment_cpu, nogil);
  m.def("softdtw_series", &sdtw::series_cpu, nogil);
  m.def("softdtw_second_order", &sdtw::second_order_cpu, nogil);
}
