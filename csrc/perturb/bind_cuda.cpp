// diffcomb._C_cuda entry points of the perturb family (api.h).
#include "common/registry.h"
#include "perturb/api.h"

namespace pt = diffcomb::perturb;

DC_BIND_CUDA(perturb) {
  m.def("perturb_noise", &pt::noise_cuda, nogil);
  m.def("perturb_argmax", &pt::argmax_onehot_cuda, nogil);
  m.def("perturb_topk", &pt::topk_mask_cuda, nogil);
  m.def("perturb_ranks", &pt::ranks_cuda, nogil);
  m.def("perturb_grid_work_bytes", &pt::grid_work_bytes);
  m.def("perturb_grid_path", &pt::grid_shortest_path_cuda, nogil);
  m.def("perturb_assignment_work_bytes", &pt::assignment_work_bytes);
  m.def("perturb_assignment", &pt::linear_assignment_cuda, nogil);
}
