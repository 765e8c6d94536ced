// The perturb family's binding signatures, shared by bind.cpp (diffcomb._C)
// and bind_cuda.cpp (diffcomb._C_cuda): the op arguments of each entry point,
// named once (api.h), and its docstring. Each binding file appends its
// execution context: CPU `threads`; CUDA `[work,] device, stream`.
#pragma once

#include <pybind11/pybind11.h>

namespace diffcomb {
namespace perturb {
namespace bind {

#define DC_PERTURB_NOISE_ARGS                                                                       \
  pybind11::arg("seed"), pybind11::arg("out"), pybind11::arg("numel"), pybind11::arg("kind"), pybind11::arg("k"), \
      pybind11::arg("tau"), pybind11::arg("s"), pybind11::arg("dtype")
#define DC_PERTURB_ROWS_ARGS pybind11::arg("x"), pybind11::arg("out"), pybind11::arg("rows"), pybind11::arg("n")
#define DC_PERTURB_GRID_ARGS                                                                                   \
  pybind11::arg("w"), pybind11::arg("out"), pybind11::arg("rows"), pybind11::arg("h"), pybind11::arg("wd"), \
      pybind11::arg("dtype")
#define DC_PERTURB_ASSIGNMENT_ARGS                                                                             \
  pybind11::arg("cost"), pybind11::arg("out"), pybind11::arg("rows"), pybind11::arg("n"), pybind11::arg("m"), \
      pybind11::arg("maximize"), pybind11::arg("dtype")

constexpr const char* kNoiseDoc =
    "out[:numel] = noise of kind (0 gumbel, 1 normal, 2 sum_of_gamma with k, tau, s) from the Philox stream of *seed.";
constexpr const char* kArgmaxDoc = "out (rows, n) = one-hot of the first maximal entry of each row of x.";
constexpr const char* kTopkDoc =
    "out (rows, n) = 0/1 mask of the k largest entries of each row of x (lower index on ties).";
constexpr const char* kRanksDoc = "out (rows, n) = 1-based ascending ranks of each row of x, stable on ties.";
constexpr const char* kGridDoc =
    "out (rows, h, wd) = 0/1 mask of the cheapest king-move path from (0, 0) to (h-1, wd-1) on vertex costs w.";
constexpr const char* kAssignmentDoc =
    "out (rows, n, m) = 0/1 optimal (partial) assignment of the costs (scores with maximize).";
constexpr const char* kGridWorkDoc = "Bytes of the work array of perturb_grid_path on (rows, h, wd).";
constexpr const char* kAssignmentWorkDoc = "Bytes of the work array of perturb_assignment on (rows, n, m).";

}  // namespace bind
}  // namespace perturb
}  // namespace diffcomb
