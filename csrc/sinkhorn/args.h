// The named arguments of the Sinkhorn bindings (bind.cpp, bind_cuda.cpp): the
// op arguments are the same on both devices (api.h), then each device's
// execution context.
#pragma once

#include <pybind11/pybind11.h>

namespace diffcomb {
namespace sinkhorn {


#define DC_SINKHORN_FORWARD_ARGS                                                                                 \
  py::arg("C"), py::arg("a"), py::arg("b"), py::arg("P"), py::arg("f"), py::arg("g"), py::arg("cost"),           \
      py::arg("n_iter"), py::arg("err"), py::arg("f_hist"), py::arg("g_hist"), py::arg("batch"), py::arg("n"),   \
      py::arg("m"), py::arg("eps"), py::arg("max_iter"), py::arg("tol"), py::arg("check_every"), py::arg("dtype")
#define DC_SINKHORN_IMPLICIT_ARGS                                                                              \
  py::arg("C"), py::arg("a"), py::arg("b"), py::arg("P"), py::arg("f"), py::arg("g"), py::arg("G"),            \
      py::arg("gcost"), py::arg("dC"), py::arg("da"), py::arg("db"), py::arg("batch"), py::arg("n"), py::arg("m"), \
      py::arg("eps"), py::arg("cg_tol"), py::arg("cg_max_iter"), py::arg("dtype")
#define DC_SINKHORN_UNROLLED_ARGS                                                                               \
  py::arg("C"), py::arg("a"), py::arg("b"), py::arg("f_hist"), py::arg("g_hist"), py::arg("n_iter"), py::arg("G"), \
      py::arg("gcost"), py::arg("dC"), py::arg("da"), py::arg("db"), py::arg("batch"), py::arg("n"), py::arg("m"),  \
      py::arg("max_iter"), py::arg("eps"), py::arg("dtype")

#define DC_SINKHORN_FORWARD_EXT_ARGS                                                                            \
  py::arg("C"), py::arg("a"), py::arg("b"), py::arg("P"), py::arg("f"), py::arg("g"), py::arg("cost"),           \
      py::arg("n_iter"), py::arg("err"), py::arg("f_hist"), py::arg("g_hist"), py::arg("f_init"),                \
      py::arg("g_init"), py::arg("params"), py::arg("scaling"), py::arg("batch"), py::arg("n"), py::arg("m"),    \
      py::arg("max_iter"), py::arg("tol"), py::arg("check_every"), py::arg("dtype")
#define DC_SINKHORN_IMPLICIT_EXT_ARGS                                                                           \
  py::arg("C"), py::arg("a"), py::arg("b"), py::arg("P"), py::arg("f"), py::arg("g"), py::arg("G"),            \
      py::arg("gcost"), py::arg("dC"), py::arg("da"), py::arg("db"), py::arg("params"), py::arg("batch"),        \
      py::arg("n"), py::arg("m"), py::arg("cg_tol"), py::arg("cg_max_iter"), py::arg("dtype")
#define DC_SINKHORN_UNROLLED_EXT_ARGS                                                                           \
  py::arg("C"), py::arg("a"), py::arg("b"), py::arg("f_hist"), py::arg("g_hist"), py::arg("n_iter"), py::arg("G"), \
      py::arg("gcost"), py::arg("dC"), py::arg("da"), py::arg("db"), py::arg("params"), py::arg("batch"),          \
      py::arg("n"), py::arg("m"), py::arg("max_iter"), py::arg("dtype")
#define DC_SINKHORN_CLOUD_FORWARD_ARGS                                                                          \
  py::arg("x"), py::arg("y"), py::arg("a"), py::arg("b"), py::arg("f"), py::arg("g"), py::arg("cost"),           \
      py::arg("n_iter"), py::arg("err"), py::arg("f_init"), py::arg("g_init"), py::arg("params"),                \
      py::arg("scaling"), py::arg("batch"), py::arg("n"), py::arg("m"), py::arg("d"), py::arg("metric"),         \
      py::arg("max_iter"), py::arg("tol"), py::arg("check_every"), py::arg("dtype")
#define DC_SINKHORN_CLOUD_BACKWARD_ARGS                                                                         \
  py::arg("x"), py::arg("y"), py::arg("a"), py::arg("b"), py::arg("f"), py::arg("g"), py::arg("gcost"),          \
      py::arg("dx"), py::arg("dy"), py::arg("da"), py::arg("db"), py::arg("params"), py::arg("batch"),           \
      py::arg("n"), py::arg("m"), py::arg("d"), py::arg("metric"), py::arg("dtype")
#define DC_SINKHORN_SOLVE_ARGS                                                                                \
  py::arg("P"), py::arg("rhs"), py::arg("wt"), py::arg("x"), py::arg("batch"), py::arg("n"), py::arg("m"),        \
      py::arg("cg_tol"), py::arg("cg_max_iter"), py::arg("dtype")

constexpr const char* kForwardDoc =
    "Log-domain Sinkhorn on a contiguous batch (B, n, m): plan P, potentials f, g, cost, n_iter, err and, "
    "where f_hist/g_hist are nonzero, the iterates (addresses of the caller's arrays). On the CPU, problems "
    "with n m < 2^14 and (max C - min C) / eps <= 100 iterate in the kernel domain (the same results to "
    "rounding, no exponential per iteration).";
constexpr const char* kImplicitDoc =
    "Implicit backward (SPEC 4.3 b): dC, da, db from the plan P, potentials f, g and the upstream G, gcost "
    "(address 0: zero) by preconditioned conjugate gradient.";
constexpr const char* kSolveDoc =
    "The implicit system alone: x = H^-1 rhs for the plan P (B, n, m) and rhs, its marginals wt, x: (B, n + m) "
    "float64, by the implicit backward's preconditioned conjugate gradient.";
constexpr const char* kUnrolledDoc =
    "Unrolled backward (SPEC 4.3 a): dC, da, db through the n_iter recorded iterations f_hist, g_hist.";

constexpr const char* kForwardExtDoc =
    "Log-domain Sinkhorn with per problem options params (B, 5) float64 (eps, eps0 of epsilon scaling, rho_a, "
    "rho_b of unbalanced marginals; +inf: balanced; symmetric flag), the scaling factor and warm starts f_init, "
    "g_init (address 0: none).";
constexpr const char* kImplicitExtDoc =
    "Implicit backward of sinkhorn_forward_ext's plan and cost for its params (B, 5) (no epsilon scaling "
    "needed: the plan is at the target eps).";
constexpr const char* kUnrolledExtDoc =
    "Unrolled backward of sinkhorn_forward_ext's recorded iterations for its params (B, 5) (balanced or "
    "unbalanced; without epsilon scaling).";
constexpr const char* kCloudForwardDoc =
    "Log-domain Sinkhorn between point clouds x (B, n, d), y (B, m, d) with the cost (metric 0: squared "
    "Euclidean, 1: Euclidean) computed on the fly: potentials f, g, cost, n_iter, err; no plan.";
constexpr const char* kCloudBackwardDoc =
    "Envelope gradients dx, dy, da, db of sinkhorn_cloud_forward's costs for the upstream gcost (B).";

}  // namespace sinkhorn
}  // namespace diffcomb
