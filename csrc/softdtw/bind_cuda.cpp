// diffcomb._C_cuda entry points of the soft-DTW family (api.h, bind_entries.h).
#include "common/registry.h"
#include "softdtw/api.h"
#include "softdtw/bind_entries.h"

namespace sdtw = diffcomb::softdtw;
using pybind11::arg;

DC_BIND_CUDA(softdtw) {
  m.def("softdtw_work_bytes", &sdtw::cuda_work_bytes,
        "Bytes of the work array the soft-DTW entry points need for this batch (api.h).", arg("batch"), arg("m"),
        arg("n"), arg("band"), arg("second_order"));
  sdtw::bind_entries(m, nogil, &sdtw::value_and_alignment_cuda, &sdtw::series_cuda, &sdtw::second_order_cuda,
                     arg("work"), arg("device"), arg("stream"));
}
