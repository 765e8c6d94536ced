// The CUDA driver of Sinkhorn between point clouds (cloud.h): forward.h's
// forward and cloud.h's gradient over a sweeper that computes the cost of a
// pair from the points inside each sweep. As the dense driver (cuda.cu): one
// persistent block per problem, the iteration loop on the device. Every sweep
// gives a line (a row i against all y_j, or a column j against all x_i) to a
// warp: the lanes stride the other cloud, the line's own point sits in
// registers, warp shuffles reduce. Work arrays: the dense driver's
// cuda_work_bytes (7 (n + m) doubles per problem); the points are read in
// place, so a problem needs O(n + m) memory beyond its inputs.
#include <cuda_runtime.h>

#include <cstdint>

#include "../common/common.h"
#include "../common/cuda_utils.cuh"
#include "api.h"
#include "checks.h"
#include "cloud.h"
#include "cuda_block.cuh"

namespace diffcomb {
namespace sinkhorn {
namespace {

constexpr int kChunk = 8;  // coordinates of a line's point held in registers at once

// The cost between p (d coordinates, in registers for d <= kChunk) and q.
template <class T>
__device__ __forceinline__ double pair_cost(const double* p, const T* q, int64_t d, int metric) {
  double c = 0.0;
  for (int64_t k = 0; k < d; ++k) {
    const double diff = p[k < kChunk ? k : 0] - double(q[k]);
    c += diff * diff;
  }
  return metric == kEuclidean ? sqrt(c) : c;
}

template <class T>
struct CloudSweeper : Block {
  const T *x, *y;
  int64_t d;
  int metric;
  double inv_eps = 1.0;

  __device__ CloudSweeper(const T* x_, const T* y_, int64_t n_, int64_t m_, int64_t d_, int metric_,
                          double* scratch_)
      : Block(n_, m_, scratch_), x(x_), y(y_), d(d_), metric(metric_) {}

  __device__ void prepare() const {}
  __device__ void set_inv_eps(double v) { inv_eps = v; }
  __device__ double nonfinite() const {
    T bad = T(0);
    for (int64_t k = threadIdx.x; k < n * d; k += blockDim.x) bad += x[k] - x[k];
    for (int64_t k = threadIdx.x; k < m * d; k += blockDim.x) bad += y[k] - y[k];
    return bad == T(0) ? 0.0 : 1.0;
  }
  // The cost of point P (row i of X) against point j of Q; coordinates beyond kChunk from memory.
  __device__ double cost(const T* P, const double* pr, const T* Q, int64_t j) const {
    if (d <= kChunk) return pair_cost(pr, Q + j * d, d, metric);
    double c = 0.0;
    for (int64_t k = 0; k < d; ++k) {
      const double diff = double(P[k]) - double(Q[j * d + k]);
      c += diff * diff;
    }
    return metric == kEuclidean ? sqrt(c) : c;
  }
  // For each line i of `lines` points (X) against `len` points (Q) with weights w:
  // emit(i, max, sum) of the terms w_j - C(X_i, Q_j) / eps, a warp per line.
  template <class E>
  __device__ void lse(const T* X, int64_t lines, const T* Q, int64_t len, const double* w, E emit) const {
    for (int64_t i = warp_id(); i < lines; i += kWarps) {
      const T* P = X + i * d;
      double pr[kChunk];
      for (int k = 0; k < kChunk; ++k) pr[k] = k < d ? double(P[k]) : 0.0;
      double mx = -INFINITY;
      for (int64_t j = lane_id(); j < len; j += 32) mx = fmax(mx, w[j] - cost(P, pr, Q, j) * inv_eps);
      mx = warp_max(mx);
      double s = 0.0;
      if (mx != -INFINITY)
        for (int64_t j = lane_id(); j < len; j += 32) s += exp(w[j] - cost(P, pr, Q, j) * inv_eps - mx);
      s = warp_sum(s);
      if (lane_id() == 0) emit(i, mx, s);
    }
    __syncthreads();
  }
  template <class E>
  __device__ void row_lse(const double* wb, E emit) const {
    lse(x, n, y, m, wb, emit);
  }
  template <class E>
  __device__ void col_lse(const double* wa, E emit) const {
    lse(y, m, x, n, wa, emit);
  }
  template <class V>
  __device__ double plan_rows(const double* wa, const double* wb, const T* g, T*, V value) const {
    double mine = 0.0;
    for (int64_t i = warp_id(); i < n; i += kWarps) {
      const T* P = x + i * d;
      double pr[kChunk];
      for (int k = 0; k < kChunk; ++k) pr[k] = k < d ? double(P[k]) : 0.0;
      double r = 0.0, gs = 0.0;
      for (int64_t j = lane_id(); j < m; j += 32) {
        const double e = exp(wa[i] + wb[j] - cost(P, pr, y, j) * inv_eps);
        r += e;
        gs += e * double(g[j]);
      }
      r = warp_sum(r);
      gs = warp_sum(gs);
      if (lane_id() == 0) mine += value(i, r, gs);
    }
    return mine;
  }
  // out_i = gc sum_j P_ij factor_ij (X_i - Q_j) for each line i, coordinates in chunks of kChunk.
  __device__ void line_gradients(const T* X, int64_t lines, const T* Q, int64_t len, const double* wx,
                                 const double* wq, double gc, T* out) const {
    for (int64_t i = warp_id(); i < lines; i += kWarps) {
      const T* P = X + i * d;
      double pr[kChunk];
      for (int k = 0; k < kChunk; ++k) pr[k] = k < d ? double(P[k]) : 0.0;
      for (int64_t k0 = 0; k0 < d; k0 += kChunk) {
        double acc[kChunk] = {};
        for (int64_t j = lane_id(); j < len; j += 32) {
          const double c = cost(P, pr, Q, j);
          const double factor = metric == kEuclidean ? cost_factor<kEuclidean>(c) : cost_factor<kSqEuclidean>(c);
          const double e = exp(wx[i] + wq[j] - c * inv_eps) * factor;
          for (int k = 0; k < kChunk && k0 + k < d; ++k) acc[k] += e * (double(P[k0 + k]) - double(Q[j * d + k0 + k]));
        }
        for (int k = 0; k < kChunk && k0 + k < d; ++k) {
          const double s = warp_sum(acc[k]);
          if (lane_id() == 0) out[i * d + k0 + k] = T(gc * s);
        }
      }
    }
  }
  __device__ void gradients(const double* wa, const double* wb, double gc, T* dx, T* dy) const {
    line_gradients(x, n, y, m, wa, wb, gc, dx);
    line_gradients(y, m, x, n, wb, wa, gc, dy);
    __syncthreads();
  }
};

template <class T>
__global__ void __launch_bounds__(kThreads) cloud_forward_kernel(CloudForwardBatch A, double* work) {
  __shared__ double scratch[kWarps];
  const int64_t n = A.base.n, m = A.base.m, d = A.d, bi = blockIdx.x;
  ForwardProblem<T, double> p = forward_problem_at<T, double>(A.base, bi);
  attach_forward_work(p, work, n, m);
  CloudSweeper<T> s(reinterpret_cast<const T*>(A.x) + bi * n * d, reinterpret_cast<const T*>(A.y) + bi * m * d, n,
                    m, d, A.metric, scratch);
  forward_problem(s, p);
}

template <class T>
__global__ void __launch_bounds__(kThreads) cloud_grad_kernel(CloudGradBatch A, double* work) {
  __shared__ double scratch[kWarps];
  CloudGradProblem<T, double> p = cloud_grad_problem_at<T, double>(A, blockIdx.x);
  p.wa = problem_work(work, A.n, A.m);
  p.wb = p.wa + A.n;
  CloudSweeper<T> s(p.x, p.y, A.n, A.m, A.d, A.metric, scratch);
  cloud_gradient_problem(s, p);
}

}  // namespace

void cloud_forward_cuda(std::uintptr_t x, std::uintptr_t y, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f,
                        std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter, std::uintptr_t err,
                        std::uintptr_t f_init, std::uintptr_t g_init, std::uintptr_t params, double scaling,
                        int64_t batch, int64_t n, int64_t m, int64_t d, int metric, int64_t max_iter, double tol,
                        int64_t check_every, int dtype, std::uintptr_t work, int device, std::uintptr_t stream) {
  check_cloud_forward(x, y, a, b, f, g, cost, n_iter, err, params, scaling, batch, n, m, d, metric, max_iter,
                      check_every, dtype);
  if (batch == 0 || n == 0 || m == 0) return;
  const CloudForwardBatch A{
      extended(ForwardBatch{0, a, b, 0, f, g, cost, n_iter, err, 0, 0, n, m, max_iter, check_every, 1.0, tol}, f_init,
               g_init, params, scaling),
      x, y, d, metric};
  dispatch_float(dtype, [&](auto tag) {
    launch(cloud_forward_kernel<decltype(tag)>, A, batch, work, device, stream, "sinkhorn cloud_forward_kernel");
  });
}

void cloud_backward_cuda(std::uintptr_t x, std::uintptr_t y, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f,
                         std::uintptr_t g, std::uintptr_t gcost, std::uintptr_t dx, std::uintptr_t dy,
                         std::uintptr_t da, std::uintptr_t db, std::uintptr_t params, int64_t batch, int64_t n,
                         int64_t m, int64_t d, int metric, int dtype, std::uintptr_t work, int device,
                         std::uintptr_t stream) {
  check_cloud_backward(x, y, a, b, f, g, gcost, dx, dy, da, db, params, batch, n, m, d, metric, dtype);
  if (batch == 0 || n == 0 || m == 0) return;
  const CloudGradBatch A{x, y, a, b, f, g, gcost, dx, dy, da, db, params, n, m, d, metric};
  dispatch_float(dtype, [&](auto tag) {
    launch(cloud_grad_kernel<decltype(tag)>, A, batch, work, device, stream, "sinkhorn cloud_grad_kernel");
  });
}

}  // namespace sinkhorn
}  // namespace diffcomb
