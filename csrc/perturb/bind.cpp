// diffcomb._C entry points of the perturb family (api.h).
#include "common/registry.h"
#include "perturb/api.h"

namespace pt = diffcomb::perturb;

DC_BIND_CPU(perturb) {
  m.def("perturb_noise", &pt::noise_cpu, nogil);
  m.def("perturb_argmax", &pt::argmax_onehot_cpu, nogil);
  m.def("perturb_topk", &pt::topk_mask_cpu, nogil);
  m.def("perturb_ranks", &pt::ranks_cpu, nogil);
  m.def("perturb_grid_path", &pt::grid_shortest_path_cpu, nogil);
  m.def("perturb_assignment", &pt::linear_assignment_cpu, nogil);
}
