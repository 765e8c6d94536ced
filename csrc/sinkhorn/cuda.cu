// CUDA kernels of log-domain Sinkhorn. The math (updates, free marginal
// error, plan read-out, CG preconditioner, unrolled adjoint steps) is
// sinkhorn.h's, shared with cpu.cpp; this file maps it onto threads.
//
// Design: one fused, persistent thread block per problem, one launch per
// call. The whole iteration loop runs on the device: the f-update gives each
// row to a warp (two sweeps over the row: maximum, then the sum of exp, warp
// shuffles), the g-update gives each column to a thread (the warp's threads
// read consecutive columns of a row, so loads are coalesced), block barriers
// separate the half-iterations, and the convergence test (sinkhorn.h,
// row_error, a block reduction) decides on the device whether the block
// stops: the host never synchronizes, and every problem stops at its own
// iteration count. The implicit backward runs its conjugate gradient the same
// way (one block per problem, matrix-vector products by rows for P y and by
// columns for P^T x); the unrolled backward replays the recorded iterates in
// reverse (rows for the g-update adjoint, columns for the f-update adjoint).
// Work arrays (potentials, CG vectors, adjoints) come from Python
// (cuda_work_bytes). Many problems fill the GPU; a single large problem uses
// one SM (a multi-block decomposition with a grid-wide barrier per
// half-iteration is the next step for batch 1).
#include <cuda_runtime.h>

#include <cstdint>

#include "../common/common.h"
#include "../common/cuda_utils.cuh"
#include "api.h"
#include "sinkhorn.h"

namespace diffcomb {
namespace sinkhorn {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_max(double v) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block; every thread gets the result. `scratch`: kWarps doubles.
__device__ double block_sum(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double s = 0.0;
  for (int w = 0; w < kWarps; ++w) s += scratch[w];  // fixed order: deterministic
  return s;
}

// -eps LSE_j(w_j - c_j/eps) over one row, by one warp (all lanes get it).
template <class T>
__device__ double warp_potential(const T* c, const double* w, int64_t len, double inv_eps, double eps) {
  const int lane = threadIdx.x & 31;
  double mx = -INFINITY;
  for (int64_t j = lane; j < len; j += 32) mx = fmax(mx, w[j] - double(c[j]) * inv_eps);
  mx = warp_max(mx);
  double s = 0.0;
  if (mx != -INFINITY)
    for (int64_t j = lane; j < len; j += 32) s += exp(w[j] - double(c[j]) * inv_eps - mx);
  s = warp_sum(s);
  return potential(mx, s, eps);
}

// -eps LSE_i(w_i - C_ij/eps) over column j, by one thread (rows strided by m).
template <class T>
__device__ double column_potential(const T* C, int64_t j, int64_t n, int64_t m, const double* w, double inv_eps,
                                   double eps) {
  double mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = fmax(mx, w[i] - double(C[i * m + j]) * inv_eps);
  double s = 0.0;
  if (mx != -INFINITY)
    for (int64_t i = 0; i < n; ++i) s += exp(w[i] - double(C[i * m + j]) * inv_eps - mx);
  return potential(mx, s, eps);
}

template <class T>
__device__ bool finite_range(const T* x, int64_t len) {
  bool ok = true;
  for (int64_t k = threadIdx.x; k < len; k += blockDim.x) ok = ok && is_finite(x[k]);
  return ok;
}

// ---------------------------------------------------------------------------
// Forward: one block per problem.

template <class T>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* C_, const T* a_, const T* b_, T* P_, T* f_out, T* g_out, T* cost, int64_t* n_iter,
                   double* err_out, T* f_hist, T* g_hist, double* work, int64_t n, int64_t m, double eps,
                   int64_t max_iter, double tol, int64_t check_every) {
  __shared__ double scratch[kWarps];
  __shared__ double shared_err;
  const int64_t bi = blockIdx.x;
  const T* C = C_ + bi * n * m;
  const T* a = a_ + bi * n;
  const T* b = b_ + bi * m;
  T* P = P_ + bi * n * m;
  T* fh = f_hist ? f_hist + bi * max_iter * n : nullptr;
  T* gh = g_hist ? g_hist + bi * (max_iter + 1) * m : nullptr;
  double* f_cur = work + bi * 3 * (n + m);
  double* f_new = f_cur + n;
  double* wa = f_new + n;
  double* g_cur = wa + n;
  double* wb = g_cur + m;
  const double inv_eps = 1.0 / eps;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  const bool ok = finite_range(C, n * m) && finite_range(a, n) && finite_range(b, m);
  if (block_sum(ok ? 0.0 : 1.0, scratch) != 0.0) {
    const T nan = quiet_nan<T>();
    for (int64_t k = threadIdx.x; k < n * m; k += blockDim.x) P[k] = nan;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) f_out[bi * n + i] = nan;
    for (int64_t j = threadIdx.x; j < m; j += blockDim.x) g_out[bi * m + j] = nan;
    if (threadIdx.x == 0) {
      cost[bi] = nan;
      n_iter[bi] = 0;
      err_out[bi] = NAN;
    }
    return;
  }
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) f_cur[i] = 0.0;
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
    g_cur[j] = 0.0;
    wb[j] = log_weight(double(b[j]));
    if (gh) gh[j] = T(0);
  }
  __syncthreads();
  const int64_t last = iteration_limit(n, m, max_iter);
  const bool check = tol > 0;
  int64_t iters = 0;
  double err = NAN;
  for (int64_t t = 1;; ++t) {
    if (t > last && !check) {
      iters = last;
      break;
    }
    for (int64_t i = warp; i < n; i += kWarps) {
      const double f = warp_potential(C + i * m, wb, m, inv_eps, eps);
      if (lane == 0) f_new[i] = f;
    }
    __syncthreads();
    if (t >= 2 && check && is_check(t - 1, last, check_every)) {
      double e = 0.0;
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) e += row_error(double(a[i]), f_cur[i], f_new[i], inv_eps);
      e = block_sum(e, scratch);
      if (threadIdx.x == 0) shared_err = e;
      __syncthreads();
      err = shared_err;
      if (err <= tol) {
        iters = t - 1;
        break;
      }
    }
    if (t > last) {
      iters = last;
      break;
    }
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      f_cur[i] = f_new[i];
      wa[i] = log_weight(double(a[i])) + f_new[i] * inv_eps;
      if (fh) fh[(t - 1) * n + i] = T(f_new[i]);
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
      const double g = column_potential(C, j, n, m, wa, inv_eps, eps);
      g_cur[j] = g;
      wb[j] = log_weight(double(b[j])) + g * inv_eps;
      if (gh) gh[t * m + j] = T(g);
    }
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    f_out[bi * n + i] = T(f_cur[i]);
    wa[i] = log_weight(double(a[i])) + f_cur[i] * inv_eps;
  }
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) g_out[bi * m + j] = T(g_cur[j]);
  __syncthreads();
  double value = 0.0;
  for (int64_t i = warp; i < n; i += kWarps) {
    double r = 0.0, gs = 0.0;
    for (int64_t j = lane; j < m; j += 32) {
      const T p = T(exp(wa[i] + wb[j] - double(C[i * m + j]) * inv_eps));
      P[i * m + j] = p;
      r += double(p);
      gs += double(p) * g_cur[j];
    }
    r = warp_sum(r);
    gs = warp_sum(gs);
    if (lane == 0) value += (r > 0 ? f_cur[i] * r : 0.0) + gs;
  }
  value = block_sum(value, scratch);
  if (threadIdx.x == 0) {
    cost[bi] = T(value);
    n_iter[bi] = iters;
    err_out[bi] = err;
  }
}

// ---------------------------------------------------------------------------
// Implicit backward: preconditioned CG on H, one block per problem.

// H p with H = [[diag(r), P], [P^T, diag(c)]], wt = (r, c) the plan's marginals (sinkhorn.h).
template <class T>
__device__ void h_matvec(const T* P, const double* wt, const double* p, double* hp, int64_t n, int64_t m) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t i = warp; i < n; i += kWarps) {
    double s = 0.0;
    for (int64_t j = lane; j < m; j += 32) s += double(P[i * m + j]) * p[n + j];
    s = warp_sum(s);
    if (lane == 0) hp[i] = wt[i] * p[i] + s;
  }
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += double(P[i * m + j]) * p[i];
    hp[n + j] = wt[n + j] * p[n + j] + s;
  }
  __syncthreads();
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    implicit_kernel(const T* C_, const T* a_, const T* b_, const T* P_, const T* f_, const T* g_, const T* G_,
                    const T* gcost, T* dC_, T* da_, T* db_, double* work, int64_t n, int64_t m, double eps,
                    double cg_tol, int64_t cg_max_iter) {
  __shared__ double scratch[kWarps];
  const int64_t bi = blockIdx.x;
  const int64_t N = n + m;
  const T* C = C_ + bi * n * m;
  const T* a = a_ + bi * n;
  const T* b = b_ + bi * m;
  const T* P = P_ + bi * n * m;
  const T* f = f_ + bi * n;
  const T* g = g_ + bi * m;
  const T* G = G_ ? G_ + bi * n * m : nullptr;
  T* dC = dC_ ? dC_ + bi * n * m : nullptr;
  T* da = da_ + bi * n;
  T* db = db_ + bi * m;
  const double gc = gcost ? double(gcost[bi]) : 0.0;
  const double inv_eps = 1.0 / eps;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (!G) {
    if (dC)
      for (int64_t k = threadIdx.x; k < n * m; k += blockDim.x) dC[k] = T(gc * double(P[k]));
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) da[i] = T(gc * cost_weight_gradient(double(f[i]), eps));
    for (int64_t j = threadIdx.x; j < m; j += blockDim.x) db[j] = T(gc * cost_weight_gradient(double(g[j]), eps));
    return;
  }
  double* rhs = work + bi * 7 * N;
  double* x = rhs + N;
  double* r = x + N;
  double* z = r + N;
  double* p = z + N;
  double* hp = p + N;
  double* wt = hp + N;
  // rhs = [Q 1; Q^T 1] and the plan's marginals wt = (P 1, P^T 1) (sinkhorn.h).
  for (int64_t i = warp; i < n; i += kWarps) {
    double s = 0.0, ri = 0.0;
    for (int64_t j = lane; j < m; j += 32) {
      const double pij = double(P[i * m + j]);
      s += double(G[i * m + j]) * pij;
      ri += pij;
    }
    s = warp_sum(s);
    ri = warp_sum(ri);
    if (lane == 0) {
      rhs[i] = s;
      wt[i] = ri;
    }
  }
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
    double s = 0.0, cj = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double pij = double(P[i * m + j]);
      s += double(G[i * m + j]) * pij;
      cj += pij;
    }
    rhs[n + j] = s;
    wt[n + j] = cj;
  }
  __syncthreads();
  double rr0 = 0.0, rz_part = 0.0;
  for (int64_t k = threadIdx.x; k < N; k += blockDim.x) {
    x[k] = 0.0;
    r[k] = rhs[k];
    z[k] = precondition(r[k], wt[k]);
    p[k] = z[k];
    rr0 += rhs[k] * rhs[k];
    rz_part += r[k] * z[k];
  }
  const double rhs2 = block_sum(rr0, scratch);
  double rz = block_sum(rz_part, scratch);
  if (!(rhs2 < INFINITY)) {
    const T nan = quiet_nan<T>();
    if (dC)
      for (int64_t k = threadIdx.x; k < n * m; k += blockDim.x) dC[k] = nan;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) da[i] = nan;
    for (int64_t j = threadIdx.x; j < m; j += blockDim.x) db[j] = nan;
    return;
  }
  const double stop = cg_tol * cg_tol * rhs2;
  __syncthreads();
  for (int64_t it = 0; it < cg_max_iter && rhs2 > 0; ++it) {
    double part = 0.0;
    for (int64_t k = threadIdx.x; k < N; k += blockDim.x) part += r[k] * r[k];
    if (block_sum(part, scratch) <= stop) break;
    h_matvec(P, wt, p, hp, n, m);
    part = 0.0;
    for (int64_t k = threadIdx.x; k < N; k += blockDim.x) part += p[k] * hp[k];
    const double php = block_sum(part, scratch);
    if (!(php > 0)) break;
    const double alpha = rz / php;
    part = 0.0;
    for (int64_t k = threadIdx.x; k < N; k += blockDim.x) {
      x[k] += alpha * p[k];
      r[k] -= alpha * hp[k];
      z[k] = precondition(r[k], wt[k]);
      part += r[k] * z[k];
    }
    const double rz_new = block_sum(part, scratch);
    const double beta = rz_new / rz;
    rz = rz_new;
    for (int64_t k = threadIdx.x; k < N; k += blockDim.x) p[k] = z[k] + beta * p[k];
    __syncthreads();
  }
  __syncthreads();
  const double* u = x;
  const double* v = x + n;
  if (dC)
    for (int64_t k = threadIdx.x; k < n * m; k += blockDim.x) {
      const int64_t i = k / m, j = k % m;
      dC[k] = T(implicit_cost_gradient(double(P[k]), u[i], v[j], double(G[k]), inv_eps, gc));
    }
  for (int64_t i = warp; i < n; i += kWarps) {
    double s = 0.0;
    for (int64_t j = lane; j < m; j += 32) s += double(P[i * m + j]) * (double(G[i * m + j]) - v[j]);
    s = warp_sum(s);
    if (lane == 0) {
      const double limit = wt[i] > 0 ? 0.0 : zero_marginal_gradient(C + i * m, G + i * m, b, g, v, m, 1, inv_eps);
      da[i] = T(implicit_weight_gradient(s, wt[i], limit) + gc * cost_weight_gradient(double(f[i]), eps));
    }
  }
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += double(P[i * m + j]) * (double(G[i * m + j]) - u[i]);
    const double limit = wt[n + j] > 0 ? 0.0 : zero_marginal_gradient(C + j, G + j, a, f, u, n, m, inv_eps);
    db[j] = T(implicit_weight_gradient(s, wt[n + j], limit) + gc * cost_weight_gradient(double(g[j]), eps));
  }
}

// ---------------------------------------------------------------------------
// Unrolled backward: the recorded iterates in reverse, one block per problem.

template <class T>
__global__ void __launch_bounds__(kThreads)
    unrolled_kernel(const T* C_, const T* a_, const T* b_, const T* f_hist, const T* g_hist, const int64_t* n_iter,
                    const T* G_, const T* gcost, T* dC_, T* da_, T* db_, double* work, int64_t n, int64_t m,
                    int64_t max_iter, double eps) {
  const int64_t bi = blockIdx.x;
  const T* C = C_ + bi * n * m;
  const T* a = a_ + bi * n;
  const T* b = b_ + bi * m;
  const T* fh = f_hist + bi * max_iter * n;
  const T* gh = g_hist + bi * (max_iter + 1) * m;
  const T* G = G_ ? G_ + bi * n * m : nullptr;
  T* dC = dC_ ? dC_ + bi * n * m : nullptr;
  T* da_out = da_ + bi * n;
  T* db_out = db_ + bi * m;
  const double gc = gcost ? double(gcost[bi]) : 0.0;
  const double inv_eps = 1.0 / eps;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t T_ = replayed_iterations(n_iter[bi], max_iter);
  if (T_ < 1) {
    const T nan = quiet_nan<T>();
    if (dC)
      for (int64_t k = threadIdx.x; k < n * m; k += blockDim.x) dC[k] = nan;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) da_out[i] = nan;
    for (int64_t j = threadIdx.x; j < m; j += blockDim.x) db_out[j] = nan;
    return;
  }
  double* fbar = work + bi * 3 * (n + m);
  double* da = fbar + n;
  double* gbar = da + n;
  double* gnew = gbar + m;
  double* db = gnew + m;
  // Cbar accumulates in dC (the caller passes dC; without it there is nothing to write but da, db).
  const T* ff = fh + (T_ - 1) * n;
  const T* gf = gh + T_ * m;
  auto E = [&](const T* fv, const T* gv, int64_t i, int64_t j) {
    return exp((double(fv[i]) + double(gv[j]) - double(C[i * m + j])) * inv_eps);
  };
  for (int64_t i = warp; i < n; i += kWarps) {
    double fb = 0.0, dai = 0.0;
    for (int64_t j = lane; j < m; j += 32) {
      const double e = E(ff, gf, i, j);
      const double gij = G ? double(G[i * m + j]) : 0.0;
      const double pij = double(a[i]) * double(b[j]) * e;
      fb += gij * pij;
      if (dC) dC[i * m + j] = T(-gij * pij * inv_eps + gc * pij);
      dai += gij * double(b[j]) * e;
    }
    fb = warp_sum(fb);
    dai = warp_sum(dai);
    if (lane == 0) {
      fbar[i] = fb * inv_eps;
      da[i] = dai + gc * cost_weight_gradient(double(ff[i]), eps);
    }
  }
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
    double gb = 0.0, dbj = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double e = E(ff, gf, i, j);
      const double gij = G ? double(G[i * m + j]) : 0.0;
      gb += gij * double(a[i]) * double(b[j]) * e;
      dbj += gij * double(a[i]) * e;
    }
    gbar[j] = gb * inv_eps;
    db[j] = dbj + gc * cost_weight_gradient(double(gf[j]), eps);
  }
  __syncthreads();
  for (int64_t t = (G ? T_ : 0); t >= 1; --t) {
    const T* ft = fh + (t - 1) * n;
    const T* gt = gh + t * m;
    const T* gp = gh + (t - 1) * m;
    // g-update adjoint (rows), then the f-update adjoint's Cbar term.
    for (int64_t i = warp; i < n; i += kWarps) {
      double s1 = 0.0;
      for (int64_t j = lane; j < m; j += 32) s1 += E(ft, gt, i, j) * gbar[j];
      s1 = warp_sum(s1);
      const double ai = double(a[i]);
      const double fb = fbar[i] - ai * s1;
      if (dC)
        for (int64_t j = lane; j < m; j += 32)
          dC[i * m + j] += T(ai * E(ft, gt, i, j) * gbar[j] + double(b[j]) * E(ft, gp, i, j) * fb);
      __syncwarp();
      if (lane == 0) {
        da[i] -= eps * s1;
        fbar[i] = fb;
      }
    }
    __syncthreads();
    // f-update adjoint (columns).
    for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
      double s = 0.0;
      for (int64_t i = 0; i < n; ++i) s += E(ft, gp, i, j) * fbar[i];
      gnew[j] = -double(b[j]) * s;
      db[j] -= eps * s;
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j < m; j += blockDim.x) gbar[j] = gnew[j];
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) fbar[i] = 0.0;
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) da_out[i] = T(da[i]);
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) db_out[j] = T(db[j]);
}

template <class T>
T* ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

}  // namespace

int64_t cuda_work_bytes(int64_t batch, int64_t n, int64_t m) {
  return batch * 7 * (n + m) * static_cast<int64_t>(sizeof(double));
}

void forward_cuda(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P, std::uintptr_t f,
                  std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter, std::uintptr_t err,
                  std::uintptr_t f_hist, std::uintptr_t g_hist, std::uintptr_t work, int64_t batch, int64_t n,
                  int64_t m, double eps, int64_t max_iter, double tol, int64_t check_every, int dtype, int device,
                  std::uintptr_t stream) {
  if (batch == 0 || n == 0 || m == 0) return;
  DeviceGuard guard(device);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    forward_kernel<T><<<static_cast<unsigned int>(batch), kThreads, 0, as_stream(stream)>>>(
        ptr<const T>(C), ptr<const T>(a), ptr<const T>(b), ptr<T>(P), ptr<T>(f), ptr<T>(g), ptr<T>(cost),
        ptr<int64_t>(n_iter), ptr<double>(err), ptr<T>(f_hist), ptr<T>(g_hist), ptr<double>(work), n, m, eps,
        max_iter, tol, check_every);
    check_launch("sinkhorn forward_kernel");
  });
}

void implicit_backward_cuda(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P,
                            std::uintptr_t f, std::uintptr_t g, std::uintptr_t G, std::uintptr_t gcost,
                            std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, std::uintptr_t work,
                            int64_t batch, int64_t n, int64_t m, double eps, double cg_tol, int64_t cg_max_iter,
                            int dtype, int device, std::uintptr_t stream) {
  if (batch == 0 || n == 0 || m == 0) return;
  DeviceGuard guard(device);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    implicit_kernel<T><<<static_cast<unsigned int>(batch), kThreads, 0, as_stream(stream)>>>(
        ptr<const T>(C), ptr<const T>(a), ptr<const T>(b), ptr<const T>(P), ptr<const T>(f), ptr<const T>(g),
        ptr<const T>(G), ptr<const T>(gcost), ptr<T>(dC), ptr<T>(da), ptr<T>(db), ptr<double>(work), n, m, eps,
        cg_tol, cg_max_iter);
    check_launch("sinkhorn implicit_kernel");
  });
}

void unrolled_backward_cuda(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f_hist,
                            std::uintptr_t g_hist, std::uintptr_t n_iter, std::uintptr_t G, std::uintptr_t gcost,
                            std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, std::uintptr_t work,
                            int64_t batch, int64_t n, int64_t m, int64_t max_iter, double eps, int dtype,
                            int device, std::uintptr_t stream) {
  if (batch == 0 || n == 0 || m == 0) return;
  DeviceGuard guard(device);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    unrolled_kernel<T><<<static_cast<unsigned int>(batch), kThreads, 0, as_stream(stream)>>>(
        ptr<const T>(C), ptr<const T>(a), ptr<const T>(b), ptr<const T>(f_hist), ptr<const T>(g_hist),
        ptr<const int64_t>(n_iter), ptr<const T>(G), ptr<const T>(gcost), ptr<T>(dC), ptr<T>(da), ptr<T>(db),
        ptr<double>(work), n, m, max_iter, eps);
    check_launch("sinkhorn unrolled_kernel");
  });
}

}  // namespace sinkhorn
}  // namespace diffcomb
