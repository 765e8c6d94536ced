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

// The implicit system alone: x = H^-1 rhs (backward.h, solve_problem) for
// rhs, wt, x: (B, n + m) float64, wt the plan P's row and column sums; used
// by the derivatives of the implicit backward (forward mode, second order).
void implicit_solve_cpu(std::uintptr_t P, std::uintptr_t rhs, std::uintptr_t wt, std::uintptr_t x, int64_t batch,
                        int64_t n, int64_t m, double cg_tol, int64_t cg_max_iter, int dtype, int threads);

// CUDA versions (csrc/sinkhorn/cuda.cu): the same arguments as device
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

}  // namespace sinkhorn
}  // namespace diffcomb
