// The CUDA driver of log-domain Sinkhorn: the algorithms are forward.h and
// backward.h; this file maps their sweeps onto threads.
//
// Design: one fused, persistent thread block per problem, one launch per
// call. The whole iteration loop runs on the device: a sweep along rows
// gives each row to a warp (lanes read consecutive entries, warp shuffles
// reduce), a sweep along columns gives each column to a thread (the warp's
// threads read consecutive columns of a row, so loads are coalesced), block
// barriers separate the steps, and the convergence test (a block reduction)
// decides on the device whether the block stops: the host never
// synchronizes, and every problem stops at its own iteration count. The
// sweeps run in double (W = double: the scaled potentials are kept in
// double). Work arrays come from Python (cuda_work_bytes: 7 (n + m) doubles
// per problem). Many problems fill the GPU; a single large problem uses one
// SM (a multi-block decomposition with a grid-wide barrier per
// half-iteration is the next step for batch 1).
#include <cuda_runtime.h>

#include <cstdint>

#include "../common/common.h"
#include "../common/cuda_utils.cuh"
#include "api.h"
#include "checks.h"
#include "backward.h"
#include "cuda_block.cuh"
#include "forward.h"

namespace diffcomb {
namespace sinkhorn {
namespace {

// ---------------------------------------------------------------------------
// Forward (forward.h).

template <class T>
struct ForwardSweeper : Block {
  const T* C;
  double inv_eps;
  __device__ ForwardSweeper(const ForwardProblem<T, double>& p, double* scratch_)
      : Block(p.n, p.m, scratch_), C(p.C), inv_eps(p.scale.inv_eps) {}

  __device__ void prepare() const {}
  __device__ void set_inv_eps(double x) { inv_eps = x; }
  __device__ double nonfinite() const {
    T bad = T(0);
    entries([&](int64_t, int64_t, int64_t k) { bad += C[k] - C[k]; });
    return bad == T(0) ? 0.0 : 1.0;
  }
  template <class E>
  __device__ void row_lse(const double* wb, E emit) const {
    for (int64_t i = warp_id(); i < n; i += kWarps) {
      const T* c = C + i * m;
      double mx = -INFINITY;
      for (int64_t j = lane_id(); j < m; j += 32) mx = fmax(mx, term(wb[j], double(c[j]), inv_eps));
      mx = warp_max(mx);
      double s = 0.0;
      if (mx != -INFINITY)
        for (int64_t j = lane_id(); j < m; j += 32) s += exp(term(wb[j], double(c[j]), inv_eps) - mx);
      s = warp_sum(s);
      if (lane_id() == 0) emit(i, mx, s);
    }
    __syncthreads();
  }
  template <class E>
  __device__ void col_lse(const double* wa, E emit) const {
    for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
      double mx = -INFINITY;
      for (int64_t i = 0; i < n; ++i) mx = fmax(mx, term(wa[i], double(C[i * m + j]), inv_eps));
      double s = 0.0;
      if (mx != -INFINITY)
        for (int64_t i = 0; i < n; ++i) s += exp(term(wa[i], double(C[i * m + j]), inv_eps) - mx);
      emit(j, mx, s);
    }
  }
  template <class V>
  __device__ double plan_rows(const double* wa, const double* wb, const T* g, T* P, V value) const {
    double mine = 0.0;
    for (int64_t i = warp_id(); i < n; i += kWarps) {
      double r = 0.0, gs = 0.0;
      for (int64_t j = lane_id(); j < m; j += 32) {
        const T pij = T(exp(wa[i] + term(wb[j], double(C[i * m + j]), inv_eps)));
        P[i * m + j] = pij;
        r += double(pij);
        gs += double(pij) * double(g[j]);
      }
      r = warp_sum(r);
      gs = warp_sum(gs);
      if (lane_id() == 0) mine += value(i, r, gs);
    }
    return mine;
  }
};

template <class T>
__global__ void __launch_bounds__(kThreads) forward_kernel(ForwardBatch A, double* work) {
  __shared__ double scratch[kWarps];
  const int64_t n = A.n, m = A.m;
  ForwardProblem<T, double> p = forward_problem_at<T, double>(A, blockIdx.x);
  attach_forward_work(p, work, n, m);
  ForwardSweeper<T> s(p, scratch);
  forward_problem(s, p);
}

// ---------------------------------------------------------------------------
// Implicit backward (backward.h).

template <class T>
struct ImplicitSweeper : Block {
  const T *P, *G;
  __device__ ImplicitSweeper(const ImplicitProblem<T>& p, double* scratch_)
      : Block(p.n, p.m, scratch_), P(p.P), G(p.G) {}

  __device__ void plan_line_sums(double* rhs, double* wt) const {
    // (G_ij P_ij, P_ij) summed along rows and columns.
    auto entry = [&](int64_t i, int64_t j) {
      const double pij = double(P[i * m + j]);
      return Pair{double(G[i * m + j]) * pij, pij};
    };
    row_sums(entry, [&](int64_t i, Pair s) {
      rhs[i] = s.x;
      wt[i] = s.y;
    });
    col_sums(entry, [&](int64_t j, Pair s) {
      rhs[n + j] = s.x;
      wt[n + j] = s.y;
    });
    __syncthreads();
  }
  __device__ void plan_matvec(const double* x, double* out) const {
    row_sums([&](int64_t i, int64_t j) { return double(P[i * m + j]) * x[n + j]; },
             [&](int64_t i, double s) { out[i] = s; });
    col_sums([&](int64_t i, int64_t j) { return double(P[i * m + j]) * x[i]; },
             [&](int64_t j, double s) { out[n + j] = s; });
    __syncthreads();
  }
};

template <class T>
__global__ void __launch_bounds__(kThreads) implicit_kernel(ImplicitBatch A, double* work) {
  __shared__ double scratch[kWarps];
  ImplicitProblem<T> p = implicit_problem_at<T>(A, blockIdx.x);
  p.work = problem_work(work, A.n, A.m);
  ImplicitSweeper<T> s(p, scratch);
  implicit_problem(s, p);
}

// The implicit system alone (backward.h, solve_problem).
template <class T>
__global__ void __launch_bounds__(kThreads) solve_kernel(SolveBatch A, double* work) {
  __shared__ double scratch[kWarps];
  const ImplicitProblem<T> p = solve_problem_at<T>(A, blockIdx.x);
  ImplicitSweeper<T> s(p, scratch);
  solve_problem(s, p, A, blockIdx.x, problem_work(work, A.n, A.m));
}

// ---------------------------------------------------------------------------
// Unrolled backward (backward.h).

template <class T>
struct UnrolledSweeper : Block {
  const UnrolledProblem<T, double>& p;
  __device__ UnrolledSweeper(const UnrolledProblem<T, double>& p_, double* scratch_)
      : Block(p_.n, p_.m, scratch_), p(p_) {}

  __device__ double E(const double* ge, int64_t i, int64_t j) const {
    return scaled_exp(p.fe[i], ge[j], p.C[i * m + j], p.scale.inv_eps);
  }
  // The f-update's kernel: the balanced potential f / lam_a (backward.h).
  __device__ double E2(const double* ge, int64_t i, int64_t j) const {
    return scaled_exp(p.fe2[i], ge[j], p.C[i * m + j], p.scale.inv_eps);
  }
  __device__ ReadoutEntry entry(int64_t i, int64_t j) const {
    return readout_entry(p.G ? double(p.G[i * m + j]) : 0.0, double(p.a[i]), double(p.b[j]), E(p.ge, i, j),
                         p.scale.inv_eps, p.gcost);
  }
  __device__ void readout() const {
    const double inv = p.scale.inv_eps;
    row_sums([&](int64_t i, int64_t j) {
      const ReadoutEntry r = entry(i, j);
      if (p.cbar) p.cbar[i * m + j] = T(r.cbar);
      return Pair{r.q, r.row};
    }, [&](int64_t i, Pair s) {
      p.fbar[i] = s.x * inv;
      p.sa[i] += s.y;
    });
    col_sums([&](int64_t i, int64_t j) {
      const ReadoutEntry r = entry(i, j);
      return Pair{r.q, r.col};
    }, [&](int64_t j, Pair s) {
      p.gbar[j] = s.x * inv;
      p.sb[j] += s.y;
    });
    __syncthreads();
  }
  __device__ void adjoint() const {
    const double eps = p.scale.eps;
    // g-update adjoint by rows, with the f-update adjoint's Cbar term.
    for (int64_t i = warp_id(); i < n; i += kWarps) {
      double s1 = 0.0;
      for (int64_t j = lane_id(); j < m; j += 32) s1 += E(p.ge, i, j) * p.gbar[j];
      s1 = warp_sum(s1);
      const double ai = double(p.a[i]);
      const double fb = p.lam_a * (p.fbar[i] - ai * s1);  // the adjoint of the balanced f-update
      if (p.cbar)
        for (int64_t j = lane_id(); j < m; j += 32)
          p.cbar[i * m + j] += T(ai * E(p.ge, i, j) * p.gbar[j] + double(p.b[j]) * E2(p.ge_prev, i, j) * fb);
      __syncwarp();
      if (lane_id() == 0) {
        p.sa[i] -= eps * s1;
        p.fbar[i] = fb;
      }
    }
    __syncthreads();
    // f-update adjoint by columns.
    col_sums([&](int64_t i, int64_t j) { return E2(p.ge_prev, i, j) * p.fbar[i]; }, [&](int64_t j, double s) {
      p.gnew[j] -= double(p.b[j]) * s;
      p.sb[j] -= eps * s;
    });
    __syncthreads();
  }
};

template <class T>
__global__ void __launch_bounds__(kThreads) unrolled_kernel(UnrolledBatch A, double* work) {
  __shared__ double scratch[kWarps];
  const int64_t n = A.n, m = A.m;
  UnrolledProblem<T, double> p = unrolled_problem_at<T, double>(A, blockIdx.x);
  p.cbar = p.dC;  // Cbar accumulates in dC; without dC only da and db are written
  p.fbar = problem_work(work, n, m);
  p.sa = p.fbar + n;
  p.fe = p.sa + n;
  p.gbar = p.fe + n;
  p.gnew = p.gbar + m;
  p.sb = p.gnew + m;
  p.ge = p.sb + m;
  p.ge_prev = p.ge + m;
  p.fe2 = p.ge_prev + m;
  UnrolledSweeper<T> s(p, scratch);
  unrolled_problem(s, p);
}

}  // namespace

int64_t cuda_work_bytes(int64_t batch, int64_t n, int64_t m) {
  return batch * 7 * (n + m) * static_cast<int64_t>(sizeof(double));
}

void forward_cuda(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P, std::uintptr_t f,
                  std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter, std::uintptr_t err,
                  std::uintptr_t f_hist, std::uintptr_t g_hist, int64_t batch, int64_t n, int64_t m, double eps,
                  int64_t max_iter, double tol, int64_t check_every, int dtype, std::uintptr_t work, int device,
                  std::uintptr_t stream) {
  check_forward(C, a, b, P, f, g, cost, n_iter, err, batch, n, m, eps, max_iter, check_every, dtype);
  if (batch == 0 || n == 0 || m == 0) return;
  const ForwardBatch A{C, a, b, P, f, g, cost, n_iter, err, f_hist, g_hist, n, m, max_iter, check_every, eps, tol};
  dispatch_float(dtype, [&](auto tag) {
    launch(forward_kernel<decltype(tag)>, A, batch, work, device, stream, "sinkhorn forward_kernel");
  });
}

void forward_ext_cuda(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P, std::uintptr_t f,
                      std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter, std::uintptr_t err,
                      std::uintptr_t f_hist, std::uintptr_t g_hist, std::uintptr_t f_init, std::uintptr_t g_init,
                      std::uintptr_t params, double scaling, int64_t batch, int64_t n, int64_t m, int64_t max_iter,
                      double tol, int64_t check_every, int dtype, std::uintptr_t work, int device,
                      std::uintptr_t stream) {
  check_forward_ext(C, a, b, P, f, g, cost, n_iter, err, params, scaling, batch, n, m, max_iter, check_every, dtype);
  if (batch == 0 || n == 0 || m == 0) return;
  const ForwardBatch A = extended(
      ForwardBatch{C, a, b, P, f, g, cost, n_iter, err, f_hist, g_hist, n, m, max_iter, check_every, 1.0, tol}, f_init,
      g_init, params, scaling);
  dispatch_float(dtype, [&](auto tag) {
    launch(forward_kernel<decltype(tag)>, A, batch, work, device, stream, "sinkhorn forward_kernel (ext)");
  });
}

void implicit_backward_cuda(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P,
                            std::uintptr_t f, std::uintptr_t g, std::uintptr_t G, std::uintptr_t gcost,
                            std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, int64_t batch, int64_t n,
                            int64_t m, double eps, double cg_tol, int64_t cg_max_iter, int dtype, std::uintptr_t work,
                            int device, std::uintptr_t stream) {
  check_implicit_backward(C, a, b, P, f, g, dC, da, db, batch, n, m, eps, cg_max_iter, dtype);
  if (batch == 0 || n == 0 || m == 0) return;
  const ImplicitBatch A{C, a, b, P, f, g, G, gcost, dC, da, db, n, m, eps, cg_tol, cg_max_iter};
  dispatch_float(dtype, [&](auto tag) {
    launch(implicit_kernel<decltype(tag)>, A, batch, work, device, stream, "sinkhorn implicit_kernel");
  });
}

void implicit_backward_ext_cuda(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P,
                                std::uintptr_t f, std::uintptr_t g, std::uintptr_t G, std::uintptr_t gcost,
                                std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, std::uintptr_t params,
                                int64_t batch, int64_t n, int64_t m, double cg_tol, int64_t cg_max_iter, int dtype,
                                std::uintptr_t work, int device, std::uintptr_t stream) {
  check_implicit_backward(C, a, b, P, f, g, dC, da, db, batch, n, m, 1.0, cg_max_iter, dtype);
  check_params("sinkhorn_implicit_backward_ext", params, batch, n, m);
  if (batch == 0 || n == 0 || m == 0) return;
  ImplicitBatch A{C, a, b, P, f, g, G, gcost, dC, da, db, n, m, 1.0, cg_tol, cg_max_iter};
  A.params = params;
  dispatch_float(dtype, [&](auto tag) {
    launch(implicit_kernel<decltype(tag)>, A, batch, work, device, stream, "sinkhorn implicit_kernel (ext)");
  });
}

void implicit_solve_cuda(std::uintptr_t P, std::uintptr_t rhs, std::uintptr_t wt, std::uintptr_t x, int64_t batch,
                         int64_t n, int64_t m, double cg_tol, int64_t cg_max_iter, int dtype, std::uintptr_t work,
                         int device, std::uintptr_t stream) {
  check_implicit_solve(P, rhs, wt, x, batch, n, m, cg_max_iter, dtype);
  if (batch == 0 || n == 0 || m == 0) return;
  const SolveBatch A{P, rhs, wt, x, n, m, cg_tol, cg_max_iter};
  dispatch_float(dtype, [&](auto tag) {
    launch(solve_kernel<decltype(tag)>, A, batch, work, device, stream, "sinkhorn solve_kernel");
  });
}

void unrolled_backward_cuda(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f_hist,
                            std::uintptr_t g_hist, std::uintptr_t n_iter, std::uintptr_t G, std::uintptr_t gcost,
                            std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, int64_t batch, int64_t n,
                            int64_t m, int64_t max_iter, double eps, int dtype, std::uintptr_t work, int device,
                            std::uintptr_t stream) {
  check_unrolled_backward(C, a, b, f_hist, g_hist, n_iter, dC, da, db, batch, n, m, max_iter, eps, dtype);
  if (batch == 0 || n == 0 || m == 0) return;
  const UnrolledBatch A{C, a, b, f_hist, g_hist, n_iter, G, gcost, dC, da, db, n, m, max_iter, eps};
  dispatch_float(dtype, [&](auto tag) {
    launch(unrolled_kernel<decltype(tag)>, A, batch, work, device, stream, "sinkhorn unrolled_kernel");
  });
}

void unrolled_backward_ext_cuda(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f_hist,
                                std::uintptr_t g_hist, std::uintptr_t n_iter, std::uintptr_t G, std::uintptr_t gcost,
                                std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, std::uintptr_t params,
                                int64_t batch, int64_t n, int64_t m, int64_t max_iter, int dtype, std::uintptr_t work,
                                int device, std::uintptr_t stream) {
  check_unrolled_backward(C, a, b, f_hist, g_hist, n_iter, dC, da, db, batch, n, m, max_iter, 1.0, dtype);
  check_params("sinkhorn_unrolled_backward_ext", params, batch, n, m);
  if (batch == 0 || n == 0 || m == 0) return;
  UnrolledBatch A{C, a, b, f_hist, g_hist, n_iter, G, gcost, dC, da, db, n, m, max_iter, 1.0};
  A.params = params;
  dispatch_float(dtype, [&](auto tag) {
    launch(unrolled_kernel<decltype(tag)>, A, batch, work, device, stream, "sinkhorn unrolled_kernel (ext)");
  });
}

}  // namespace sinkhorn
}  // namespace diffcomb
