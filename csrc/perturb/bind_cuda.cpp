// diffcomb._C_cuda entry points of the perturb family (api.h; signatures in bind_args.h).
#include "common/registry.h"
#include "perturb/api.h"
#include "perturb/bind_args.h"

namespace pt = diffcomb::perturb;
namespace ptb = diffcomb::perturb::bind;
namespace py = pybind11;

DC_BIND_CUDA(perturb) {
  const auto device = py::arg("device"), stream = py::arg("stream"), work = py::arg("work");
  m.def("perturb_noise", &pt::noise_cuda, ptb::kNoiseDoc, DC_PERTURB_NOISE_ARGS, device, stream, nogil);
  m.def("perturb_argmax", &pt::argmax_onehot_cuda, ptb::kArgmaxDoc, DC_PERTURB_ROWS_ARGS, py::arg("dtype"), device,
        stream, nogil);
  m.def("perturb_topk", &pt::topk_mask_cuda, ptb::kTopkDoc, DC_PERTURB_ROWS_ARGS, py::arg("k"), py::arg("dtype"),
        device, stream, nogil);
  m.def("perturb_ranks", &pt::ranks_cuda, ptb::kRanksDoc, DC_PERTURB_ROWS_ARGS, py::arg("dtype"), device, stream,
        nogil);
  m.def("perturb_grid_work_bytes", &pt::grid_work_bytes, ptb::kGridWorkDoc, py::arg("rows"), py::arg("h"),
        py::arg("wd"));
  m.def("perturb_grid_path", &pt::grid_shortest_path_cuda, ptb::kGridDoc, DC_PERTURB_GRID_ARGS, work, device, stream,
        nogil);
  m.def("perturb_assignment_work_bytes", &pt::assignment_work_bytes, ptb::kAssignmentWorkDoc, py::arg("rows"),
        py::arg("n"), py::arg("m"));
  m.def("perturb_assignment", &pt::linear_assignment_cuda, ptb::kAssignmentDoc, DC_PERTURB_ASSIGNMENT_ARGS, work,
        device, stream, nogil);
}
