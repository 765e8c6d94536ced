// diffcomb._C entry points of the soft-DTW family (api.h, bind_entries.h).
#include "common/registry.h"
#include "softdtw/api.h"
#include "softdtw/bind_entries.h"

namespace sdtw = diffcomb::softdtw;

DC_BIND_CPU(softdtw) {
  sdtw::bind_entries(m, nogil, &sdtw::value_and_alignment_cpu, &sdtw::series_cpu, &sdtw::second_order_cpu,
                     pybind11::arg("threads"));
}
