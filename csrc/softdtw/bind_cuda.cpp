// diffcomb._C_cuda entry points of the soft-DTW family (api.h).
#include "common/registry.h"
#include "softdtw/api.h"

namespace sdtw = diffcomb::softdtw;

DC_BIND_CUDA(softdtw) {
  m.def("softdtw_work_bytes", &sdtw::cuda_work_bytes);
  m.def("softdtw_value_and_alignment", &sdtw::value_and_alignment_cuda, nogil);
  m.def("softdtw_series", &sdtw::series_cuda, nogil);
  m.def("softdtw_second_order", &sdtw::second_order_cuda, nogil);
}
