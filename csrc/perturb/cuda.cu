// CUDA kernels of the perturb family. The math is perturb.h's, shared with
// cpu.cpp; this file maps it onto threads.
//
// - Noise: one thread per group of elements (perturb.h, noise_group; grid-stride);
//   each group is a pure function of (seed, group index), so the GPU draws the
//   CPU's numbers (up to the last bit of the device's log/cos). The seed
//   is read from device memory (drawn there by torch), so nothing synchronizes.
// - argmax: one block per row, a (value, index) reduction that keeps the
//   first maximal index.
// - top-k and ranks: one block per row; each thread counts, for its elements,
//   how many elements precede them in the stable order (descending for top-k,
//   ascending for ranks): O(n^2 / threads) per row, no sort and no workspace.
//   Good for the n of perturbed top-k layers (up to a few thousand).
// - Grid shortest path: one block per grid. Min-plus relaxation sweeps
//   (Jacobi, two label buffers in the work array) on (dist, hops) labels until
//   no label changes (at most H*W sweeps), then one thread backtracks with
//   the same rule as the CPU. The labels are the unique fixed point that the
//   CPU's Dijkstra computes, so both devices return the same path.
// - Linear assignment: one block per matrix runs the CPU's shortest
//   augmenting path algorithm; the column scan of each Dijkstra step is split
//   over the block's threads and the minimum slack is reduced with ties to the
//   smaller column, which is the serial loop's choice, so the result equals the
//   CPU's. Exact (float64), O(n^2 m) work per matrix.
// Every launch goes on the caller's stream, returns early on empty input and is
// checked; nothing synchronizes the host.
#include <cuda_runtime.h>

#include <cstdint>

#include "../common/common.h"
#include "../common/cuda_utils.cuh"
#include "api.h"
#include "checks.h"
#include "perturb.h"

namespace diffcomb {
namespace perturb {
namespace {

constexpr int kElementThreads = 256;
constexpr int kRowThreads = 256;

__host__ __device__ int64_t align_up(int64_t bytes) { return (bytes + 255) / 256 * 256; }

template <class T>
__global__ void noise_kernel(const int64_t* seed, T* out, int64_t numel, int kind, double k, double tau, int32_t s) {
  const uint64_t key = static_cast<uint64_t>(*seed);
  const int64_t group = noise_group_size<T>(kind);
  const int64_t groups = (numel + group - 1) / group;
  for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < groups; q += int64_t(gridDim.x) * blockDim.x) {
    T values[4];
    noise_group<T>(kind, key, static_cast<uint64_t>(q), k, tau, s, values);
    const int64_t first = q * group;
    const int64_t count = numel - first < group ? numel - first : group;
    for (int64_t l = 0; l < count; ++l) out[first + l] = values[l];
  }
}

// Block-wide AND of a per-thread flag (all threads must call it).
__device__ bool block_all(bool flag) { return __syncthreads_and(flag ? 1 : 0) != 0; }

template <class T>
__device__ bool row_finite(const T* x, int64_t n) {
  bool ok = true;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ok &= is_finite(x[i]);
  return block_all(ok);
}

template <class T>
__global__ void __launch_bounds__(kRowThreads) argmax_kernel(const T* x, T* out, int64_t n) {
  const T* xr = x + int64_t(blockIdx.x) * n;
  T* orow = out + int64_t(blockIdx.x) * n;
  __shared__ T best_value[kRowThreads];
  __shared__ int64_t best_index[kRowThreads];
  const bool finite = row_finite(xr, n);
  T bv = xr[0];
  int64_t bi = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    if (xr[i] > bv || (xr[i] == bv && i < bi)) {
      bv = xr[i];
      bi = i;
    }
  }
  best_value[threadIdx.x] = bv;
  best_index[threadIdx.x] = bi;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      const T ov = best_value[threadIdx.x + stride];
      const int64_t oi = best_index[threadIdx.x + stride];
      if (ov > best_value[threadIdx.x] || (ov == best_value[threadIdx.x] && oi < best_index[threadIdx.x])) {
        best_value[threadIdx.x] = ov;
        best_index[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  const int64_t winner = best_index[0];
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    orow[i] = finite ? (i == winner ? T(1) : T(0)) : quiet_nan<T>();
  }
}

// kRanks = false: top-k mask (stable descending position < k);
// kRanks = true: 1-based stable ascending ranks.
template <class T, bool kRanks>
__global__ void __launch_bounds__(kRowThreads) order_kernel(const T* x, T* out, int64_t n, int64_t k) {
  const T* xr = x + int64_t(blockIdx.x) * n;
  T* orow = out + int64_t(blockIdx.x) * n;
  const bool finite = row_finite(xr, n);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    if (!finite) {
      orow[i] = quiet_nan<T>();
      continue;
    }
    if (kRanks) {
      orow[i] = T(ascending_rank(xr, static_cast<int32_t>(n), static_cast<int32_t>(i)));
    } else {
      const int32_t pos = descending_position(xr, static_cast<int32_t>(n), static_cast<int32_t>(i));
      orow[i] = pos < k ? T(1) : T(0);
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kRowThreads)
    grid_kernel(const T* w, T* out, double* dist_work, int32_t* hops_work, int32_t H, int32_t Wd) {
  const int32_t nv = H * Wd;
  const int64_t r = blockIdx.x;
  const T* wr = w + r * nv;
  T* orow = out + r * nv;
  double* dist[2] = {dist_work + 2 * r * nv, dist_work + (2 * r + 1) * nv};
  int32_t* hops[2] = {hops_work + 2 * r * nv, hops_work + (2 * r + 1) * nv};
  const bool finite = row_finite(wr, nv);
  for (int32_t v = threadIdx.x; v < nv; v += blockDim.x) {
    orow[v] = finite ? T(0) : quiet_nan<T>();
    const double d0 = v == 0 ? clamped_weight(wr[0]) : INFINITY;
    const int32_t h0 = v == 0 ? 1 : INT32_MAX / 2;
    dist[0][v] = d0;
    hops[0][v] = h0;
  }
  if (!finite) return;
  int cur = 0;
  for (int32_t sweep = 0; sweep < nv + 1; ++sweep) {
    bool changed = false;
    __syncthreads();
    for (int32_t v = threadIdx.x; v < nv; v += blockDim.x) {
      double d;
      int32_t h;
      changed |= relax_vertex(wr, dist[cur], hops[cur], H, Wd, v, d, h);
      dist[1 - cur][v] = d;
      hops[1 - cur][v] = h;
    }
    cur = 1 - cur;
    if (!__syncthreads_or(changed ? 1 : 0)) break;
  }
  __syncthreads();
  if (threadIdx.x == 0) backtrack_path(wr, dist[cur], hops[cur], H, Wd, orow);
}

// Work layout of one assignment problem (bytes, each part 256-aligned).
struct AssignmentWork {
  int64_t c, u, v, minv, p, way, used, total;
  __host__ __device__ AssignmentWork(int64_t nr, int64_t nc) {
    c = 0;
    u = c + align_up(8 * nr * nc);
    v = u + align_up(8 * (nr + 1));
    minv = v + align_up(8 * (nc + 1));
    p = minv + align_up(8 * (nc + 1));
    way = p + align_up(4 * (nc + 1));
    used = way + align_up(4 * (nc + 1));
    total = used + align_up(nc + 1);
  }
};

template <class T>
__global__ void __launch_bounds__(kRowThreads)
    assignment_kernel(const T* cost, T* out, char* work, int64_t n, int64_t m, bool maximize, int64_t stride) {
  const int64_t r = blockIdx.x;
  const bool transpose = n > m;
  const int32_t nr = static_cast<int32_t>(transpose ? m : n), nc = static_cast<int32_t>(transpose ? n : m);
  const AssignmentWork layout(nr, nc);
  char* base = work + r * stride;
  double* c = reinterpret_cast<double*>(base + layout.c);
  const AssignmentState s{reinterpret_cast<double*>(base + layout.u), reinterpret_cast<double*>(base + layout.v),
                          reinterpret_cast<double*>(base + layout.minv), reinterpret_cast<int32_t*>(base + layout.p),
                          reinterpret_cast<int32_t*>(base + layout.way), reinterpret_cast<int8_t*>(base + layout.used)};
  const T* cr = cost + r * n * m;
  T* orow = out + r * n * m;
  const bool finite = row_finite(cr, n * m);
  bool huge = false;
  for (int64_t e = threadIdx.x; e < n * m; e += blockDim.x) huge |= assignment_huge(double(cr[e]));
  const double factor = (maximize ? -1.0 : 1.0) * (__syncthreads_or(huge ? 1 : 0) ? kAssignmentScale : 1.0);
  for (int64_t e = threadIdx.x; e < n * m; e += blockDim.x) {
    orow[e] = finite ? T(0) : quiet_nan<T>();
    const int64_t i = e / m, j = e % m;
    c[transpose ? j * n + i : e] = factor * double(cr[e]);
  }
  if (!finite) return;
  for (int32_t j = threadIdx.x; j <= nc; j += blockDim.x) {
    s.v[j] = 0.0;
    s.p[j] = 0;
    s.way[j] = 0;
  }
  for (int32_t i = threadIdx.x; i <= nr; i += blockDim.x) s.u[i] = 0.0;
  __shared__ double red_value[kRowThreads];
  __shared__ int32_t red_index[kRowThreads];
  __shared__ int32_t shared_j0;
  __syncthreads();
  for (int32_t i = 1; i <= nr; ++i) {
    if (threadIdx.x == 0) {
      s.p[0] = i;
      shared_j0 = 0;
    }
    for (int32_t j = threadIdx.x; j <= nc; j += blockDim.x) {
      s.minv[j] = INFINITY;
      s.used[j] = 0;
    }
    __syncthreads();
    while (true) {
      const int32_t j0 = shared_j0;
      if (threadIdx.x == 0) s.used[j0] = 1;
      __syncthreads();
      const int32_t i0 = s.p[j0];
      double delta = INFINITY;
      int32_t j1 = 0;
      for (int32_t j = 1 + threadIdx.x; j <= nc; j += blockDim.x) {
        if (s.used[j]) continue;
        const double slack = scan_column(c, nc, s, i0, j0, j);
        if (slack < delta) {  // j increases along the thread's loop: keeps the smallest j on ties
          delta = slack;
          j1 = j;
        }
      }
      red_value[threadIdx.x] = delta;
      red_index[threadIdx.x] = j1;
      __syncthreads();
      for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) {
          const double ov = red_value[threadIdx.x + stride];
          const int32_t oi = red_index[threadIdx.x + stride];
          const double mv = red_value[threadIdx.x];
          const int32_t mi = red_index[threadIdx.x];
          if (ov < mv || (ov == mv && oi != 0 && (mi == 0 || oi < mi))) {
            red_value[threadIdx.x] = ov;
            red_index[threadIdx.x] = oi;
          }
        }
        __syncthreads();
      }
      const double best = red_value[0];
      const int32_t best_j = red_index[0];
      for (int32_t j = threadIdx.x; j <= nc; j += blockDim.x) update_column(s, j, best);
      __syncthreads();
      if (threadIdx.x == 0) shared_j0 = best_j;
      __syncthreads();
      if (s.p[best_j] == 0) break;
    }
    if (threadIdx.x == 0) augment(s, shared_j0);
    __syncthreads();
  }
  for (int32_t j = 1 + threadIdx.x; j <= nc; j += blockDim.x) {
    const int32_t row = s.p[j];
    if (row == 0) continue;
    const int64_t i = row - 1, jj = j - 1;
    orow[transpose ? jj * m + i : i * m + jj] = T(1);
  }
}

}  // namespace

void noise_cuda(std::uintptr_t seed, std::uintptr_t out, int64_t numel, int kind, double k, double tau, int64_t s,
                int dtype, int device, std::uintptr_t stream) {
  check_noise(seed, out, numel, kind, dtype);
  if (numel == 0) return;
  DeviceGuard guard(device);
  const int64_t blocks64 = (numel + kElementThreads - 1) / kElementThreads;
  const unsigned int blocks = static_cast<unsigned int>(blocks64 < 65535 * 16 ? blocks64 : 65535 * 16);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    noise_kernel<T><<<blocks, kElementThreads, 0, as_stream(stream)>>>(
        as_ptr<const int64_t>(seed), as_ptr<T>(out), numel, kind, k, tau, static_cast<int32_t>(s));
  });
  check_launch("perturb noise_kernel");
}

void argmax_onehot_cuda(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int dtype, int device,
                        std::uintptr_t stream) {
  check_rows("perturb_argmax", x, out, rows, n, dtype);
  if (rows == 0 || n == 0) return;
  DeviceGuard guard(device);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    argmax_kernel<T><<<static_cast<unsigned int>(rows), kRowThreads, 0, as_stream(stream)>>>(
        as_ptr<const T>(x), as_ptr<T>(out), n);
  });
  check_launch("perturb argmax_kernel");
}

void topk_mask_cuda(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int64_t k, int dtype, int device,
                    std::uintptr_t stream) {
  check_topk(x, out, rows, n, k, dtype);
  if (rows == 0 || n == 0) return;
  DeviceGuard guard(device);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    order_kernel<T, false><<<static_cast<unsigned int>(rows), kRowThreads, 0, as_stream(stream)>>>(
        as_ptr<const T>(x), as_ptr<T>(out), n, k);
  });
  check_launch("perturb topk order_kernel");
}

void ranks_cuda(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int dtype, int device,
                std::uintptr_t stream) {
  check_rows("perturb_ranks", x, out, rows, n, dtype);
  if (rows == 0 || n == 0) return;
  DeviceGuard guard(device);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    order_kernel<T, true><<<static_cast<unsigned int>(rows), kRowThreads, 0, as_stream(stream)>>>(
        as_ptr<const T>(x), as_ptr<T>(out), n, 0);
  });
  check_launch("perturb ranks order_kernel");
}

int64_t grid_work_bytes(int64_t rows, int64_t h, int64_t wd) {
  const int64_t nv = h * wd;
  return align_up(2 * rows * nv * int64_t(sizeof(double))) + align_up(2 * rows * nv * int64_t(sizeof(int32_t)));
}

void grid_shortest_path_cuda(std::uintptr_t w, std::uintptr_t out, int64_t rows, int64_t h, int64_t wd, int dtype,
                             std::uintptr_t work, int device, std::uintptr_t stream) {
  check_grid(w, out, rows, h, wd, dtype, {{"work", work}});
  if (rows == 0 || h == 0 || wd == 0) return;
  DeviceGuard guard(device);
  const int64_t nv = h * wd;
  double* dist = as_ptr<double>(work);
  int32_t* hops = reinterpret_cast<int32_t*>(reinterpret_cast<char*>(work) +
                                             align_up(2 * rows * nv * int64_t(sizeof(double))));
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    grid_kernel<T><<<static_cast<unsigned int>(rows), kRowThreads, 0, as_stream(stream)>>>(
        as_ptr<const T>(w), as_ptr<T>(out), dist, hops, static_cast<int32_t>(h), static_cast<int32_t>(wd));
  });
  check_launch("perturb grid_kernel");
}

int64_t assignment_work_bytes(int64_t rows, int64_t n, int64_t m) {
  const AssignmentWork layout(n > m ? m : n, n > m ? n : m);
  return rows * layout.total;
}

void linear_assignment_cuda(std::uintptr_t cost, std::uintptr_t out, int64_t rows, int64_t n, int64_t m,
                            bool maximize, int dtype, std::uintptr_t work, int device, std::uintptr_t stream) {
  check_assignment(cost, out, rows, n, m, dtype, {{"work", work}});
  if (rows == 0 || n == 0 || m == 0) return;
  DeviceGuard guard(device);
  const int64_t stride = AssignmentWork(n > m ? m : n, n > m ? n : m).total;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    assignment_kernel<T><<<static_cast<unsigned int>(rows), kRowThreads, 0, as_stream(stream)>>>(
        as_ptr<const T>(cost), as_ptr<T>(out), reinterpret_cast<char*>(work), n, m, maximize, stride);
  });
  check_launch("perturb assignment_kernel");
}

}  // namespace perturb
}  // namespace diffcomb
