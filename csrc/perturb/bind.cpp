// diffcomb._C entry points of the perturb family (api.h; signatures in bind_args.h).
#include "common/registry.h"
#include "perturb/api.h"
#include "perturb/bind_args.h"

namespace pt = diffcomb::perturb;
namespace ptb = diffcomb::perturb::bind;
namespace py = pybind11;

DC_BIND_CPU(perturb) {
  const auto threads = py::arg("threads");
  m.def("perturb_noise", &pt::noise_cpu, ptb::kNoiseDoc, DC_PERTURB_NOISE_ARGS, threads, nogil);
  m.def("perturb_argmax", &pt::argmax_onehot_cpu, ptb::kArgmaxDoc, DC_PERTURB_ROWS_ARGS, py::arg("dtype"), threads,
        nogil);
  m.def("perturb_topk", &pt::topk_mask_cpu, ptb::kTopkDoc, DC_PERTURB_ROWS_ARGS, py::arg("k"), py::arg("dtype"),
        threads, nogil);
  m.def("perturb_ranks", &pt::ranks_cpu, ptb::kRanksDoc, DC_PERTURB_ROWS_ARGS, py::arg("dtype"), threads, nogil);
  m.def("perturb_grid_path", &pt::grid_shortest_path_cpu, ptb::kGridDoc, DC_PERTURB_GRID_ARGS, threads, nogil);
  m.def("perturb_assignment", &pt::linear_assignment_cpu, ptb::kAssignmentDoc, DC_PERTURB_ASSIGNMENT_ARGS, threads,
        nogil);
}
