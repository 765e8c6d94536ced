// Entry points of the Sinkhorn family (raw addresses from diffcomb/sinkhorn.py).
// One problem per batch row b, all arrays contiguous and row-major:
//   C, P, G, dC: (B, n, m);  a, f, da: (B, n);  b, g, db: (B, m);
//   cost, gcost: (B) of the dtype;  n_iter: (B) int64;  err: (B) float64;
//   f_hist: (B, max_iter, n) and g_hist: (B, max_iter + 1, m) iterates kept
//   for the unrolled backward (address 0: not kept).
// f and g are the full log-sum-exp potentials (sinkhorn.h). tol <= 0 runs
// exactly max_iter iterations with no convergence check. G = 0 (no plan
// gradient) gives the envelope gradients gcost * (P, f, g) only; gcost = 0
// means no cost gradient. dC = 0: the cost gradient is not written.
#pragma once

#include <cstdint>

namespace diffcomb {
namespace sinkhorn {

void forward_cpu(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P, std::uintptr_t f,
                 std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter, std::uintptr_t err,
                 std::uintptr_t f_hist, std::uintptr_t g_hist, int64_t batch, int64_t n, int64_t m, double eps,
                 int64_t max_iter, double tol, int64_t check_every, int dtype, int threads);

// Implicit differentiation (SPEC 4.3 b) by preconditioned conjugate gradient
// to relative residual cg_tol (at most cg_max_iter steps per problem).
void implicit_backward_cpu(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P,
                           std::uintptr_t f, std::uintptr_t g, std::uintptr_t G, std::uintptr_t gcost,
                           std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, int64_t batch, int64_t n,
                           int64_t m, double eps, double cg_tol, int64_t cg_max_iter, int dtype, int threads);

// Unrolled backward (SPEC 4.3 a) through the n_iter[b] recorded iterations.
void unrolled_backward_cpu(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f_hist,
                           std::uintptr_t g_hist, std::uintptr_t n_iter, std::uintptr_t G, std::uintptr_t gcost,
                           std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, int64_t batch, int64_t n,
                           int64_t m, int64_t max_iter, double eps, int dtype, int threads);

// Extended entry points (sinkhorn.h, Options): params (B, 5) float64 holds
// each problem's eps, the start eps0 of epsilon scaling (factor `scaling` in
// (0, 1]; eps0 = eps: none), the marginal penalties rho_a, rho_b of
// unbalanced transport (+inf: balanced) and the symmetric flag (1: a
// symmetric problem, C = C^T and a = b, solved with g = f; for n = m); f_init (B, n), g_init (B, m): warm
// start (address 0: none; the first update is f's from g, or g is first
// computed from f_init when only f_init is given). The unrolled backward
// takes no epsilon scaling and no symmetric problems.
void forward_ext_cpu(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P, std::uintptr_t f,
                     std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter, std::uintptr_t err,
                     std::uintptr_t f_hist, std::uintptr_t g_hist, std::uintptr_t f_init, std::uintptr_t g_init,
                     std::uintptr_t params, double scaling, int64_t batch, int64_t n, int64_t m, int64_t max_iter,
                     double tol, int64_t check_every, int dtype, int threads);
void implicit_backward_ext_cpu(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P,
                               std::uintptr_t f, std::uintptr_t g, std::uintptr_t G, std::uintptr_t gcost,
                               std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, std::uintptr_t params,
                               int64_t batch, int64_t n, int64_t m, double cg_tol, int64_t cg_max_iter, int dtype,
                               int threads);
void unrolled_backward_ext_cpu(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f_hist,
                               std::uintptr_t g_hist, std::uintptr_t n_iter, std::uintptr_t G, std::uintptr_t gcost,
                               std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, std::uintptr_t params,
                               int64_t batch, int64_t n, int64_t m, int64_t max_iter, int dtype, int threads);

// Point clouds (cloud.h): x (B, n, d), y (B, m, d) contiguous, metric 0
// (squared Euclidean) or 1 (Euclidean); the cost is never stored. The
// forward writes f, g, cost, n_iter, err (no plan); the backward the envelope
// gradients dx (B, n, d), dy (B, m, d), da, db of the costs for gcost (B).
void cloud_forward_cpu(std::uintptr_t x, std::uintptr_t y, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f,
                       std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter, std::uintptr_t err,
                       std::uintptr_t f_init, std::uintptr_t g_init, std::uintptr_t params, double scaling,
                       int64_t batch, int64_t n, int64_t m, int64_t d, int metric, int64_t max_iter, double tol,
                       int64_t check_every, int dtype, int threads);
void cloud_backward_cpu(std::uintptr_t x, std::uintptr_t y, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f,
                        std::uintptr_t g, std::uintptr_t gcost, std::uintptr_t dx, std::uintptr_t dy,
                        std::uintptr_t da, std::uintptr_t db, std::uintptr_t params, int64_t batch, int64_t n,
                        int64_t m, int64_t d, int metric, int dtype, int threads);

// The implicit system alone: x = H^-1 rhs (backward.h, solve_problem) for
// rhs, wt, x: (B, n + m) float64, wt the plan P's row and column sums; used
// by the derivatives of the implicit backward (forward mode, second order).
void implicit_solve_cpu(std::uintptr_t P, std::uintptr_t rhs, std::uintptr_t wt, std::uintptr_t x, int64_t batch,
                        int64_t n, int64_t m, double cg_tol, int64_t cg_max_iter, int dtype, int threads);

// CUDA versions (csrc/sinkhorn/cuda.cu, cuda_cloud.cu): the same arguments as device
// addresses, then the execution context: work, device scratch of
// cuda_work_bytes(batch, n, m) bytes; the device index; the stream.
int64_t cuda_work_bytes(int64_t batch, int64_t n, int64_t m);
void forward_cuda(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P, std::uintptr_t f,
                  std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter, std::uintptr_t err,
                  std::uintptr_t f_hist, std::uintptr_t g_hist, int64_t batch, int64_t n, int64_t m, double eps,
                  int64_t max_iter, double tol, int64_t check_every, int dtype, std::uintptr_t work, int device,
                  std::uintptr_t stream);
void implicit_backward_cuda(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P,
                            std::uintptr_t f, std::uintptr_t g, std::uintptr_t G, std::uintptr_t gcost,
                            std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, int64_t batch, int64_t n,
                            int64_t m, double eps, double cg_tol, int64_t cg_max_iter, int dtype, std::uintptr_t work,
                            int device, std::uintptr_t stream);
void implicit_solve_cuda(std::uintptr_t P, std::uintptr_t rhs, std::uintptr_t wt, std::uintptr_t x, int64_t batch,
                         int64_t n, int64_t m, double cg_tol, int64_t cg_max_iter, int dtype, std::uintptr_t work,
                         int device, std::uintptr_t stream);
void unrolled_backward_cuda(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f_hist,
                            std::uintptr_t g_hist, std::uintptr_t n_iter, std::uintptr_t G, std::uintptr_t gcost,
                            std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, int64_t batch, int64_t n,
                            int64_t m, int64_t max_iter, double eps, int dtype, std::uintptr_t work, int device,
                            std::uintptr_t stream);
void forward_ext_cuda(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P, std::uintptr_t f,
                      std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter, std::uintptr_t err,
                      std::uintptr_t f_hist, std::uintptr_t g_hist, std::uintptr_t f_init, std::uintptr_t g_init,
                      std::uintptr_t params, double scaling, int64_t batch, int64_t n, int64_t m, int64_t max_iter,
                      double tol, int64_t check_every, int dtype, std::uintptr_t work, int device,
                      std::uintptr_t stream);
void implicit_backward_ext_cuda(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P,
                                std::uintptr_t f, std::uintptr_t g, std::uintptr_t G, std::uintptr_t gcost,
                                std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, std::uintptr_t params,
                                int64_t batch, int64_t n, int64_t m, double cg_tol, int64_t cg_max_iter, int dtype,
                                std::uintptr_t work, int device, std::uintptr_t stream);
void unrolled_backward_ext_cuda(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f_hist,
                                std::uintptr_t g_hist, std::uintptr_t n_iter, std::uintptr_t G, std::uintptr_t gcost,
                                std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, std::uintptr_t params,
                                int64_t batch, int64_t n, int64_t m, int64_t max_iter, int dtype, std::uintptr_t work,
                                int device, std::uintptr_t stream);
void cloud_forward_cuda(std::uintptr_t x, std::uintptr_t y, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f,
                        std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter, std::uintptr_t err,
                        std::uintptr_t f_init, std::uintptr_t g_init, std::uintptr_t params, double scaling,
                        int64_t batch, int64_t n, int64_t m, int64_t d, int metric, int64_t max_iter, double tol,
                        int64_t check_every, int dtype, std::uintptr_t work, int device, std::uintptr_t stream);
void cloud_backward_cuda(std::uintptr_t x, std::uintptr_t y, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f,
                         std::uintptr_t g, std::uintptr_t gcost, std::uintptr_t dx, std::uintptr_t dy,
                         std::uintptr_t da, std::uintptr_t db, std::uintptr_t params, int64_t batch, int64_t n,
                         int64_t m, int64_t d, int metric, int dtype, std::uintptr_t work, int device,
                         std::uintptr_t stream);

}  // namespace sinkhorn
}  // namespace diffcomb
