// CUDA kernels of soft-DTW: the anti-diagonal engine of softdtw.h
// (Diagonals and the cell functions, soft and hard, first and second
// order), run by one thread block per pair.
//
// Design.
// - Wavefront: the block walks the diagonals k = 2 .. mb + nb (forward) and
//   back (backward) with a __syncthreads between diagonals; the threads take
//   the cells of a diagonal in strides of blockDim.x, so there is no length
//   limit (a diagonal longer than the block is looped over).
// - Memory: the pair's A, B (and D, Z for the second order; double) and
//   diagonal offsets live in a global
//   work array from Python (softdtw_cuda_work_bytes), laid out like the CPU
//   engine's: consecutive cells of a diagonal are consecutive in memory, so
//   a warp's loads and stores are coalesced. Only in-band cells are stored.
// - Costs are read (matrix) or computed from the series (x_i, y_j) when the
//   cell is reached, by the thread that computes the cell: no pass of its
//   own and no (B, N, M) intermediate for series.
// - Gradients: E to a matrix, or, for series, gx (one thread per row i) and
//   gy (one thread per column j) summed in a fixed order: deterministic, no
//   atomics.
// - A non-finite cost raises a block-wide flag; the pair's value and
//   outputs become NaN (SPEC section 0).
// - One block per pair keeps one SM per pair: large batches fill the GPU; a
//   batch of a few very long pairs runs on a few SMs.
#include <cstdint>

#include "../common/common.h"
#include "../common/cuda_utils.cuh"
#include "api.h"
#include "softdtw.h"

namespace diffcomb {
namespace softdtw {
namespace {

constexpr int kThreads = 256;

// Doubles of A (and of B) per pair: the layout of the full (m, n) problem,
// the largest any lengths can need.
int64_t cells_per_pair(int64_t m, int64_t n, int64_t band) {
  const Diagonals g{m, n, band};
  int64_t size = 0;
  for (int64_t k = 0; k <= g.last() + 1; ++k) size += g.length(k) + 2;
  return size;
}

struct WorkLayout {
  int64_t cells;   // doubles of each array per pair
  int64_t arrays;  // A, B (and D, Z for the second order)
  int64_t starts;  // int64 offsets per pair
  int64_t bytes(int64_t batch) const { return batch * (arrays * cells * 8 + starts * 8); }
};

WorkLayout work_layout(int64_t m, int64_t n, int64_t band, bool second_order) {
  return {cells_per_pair(m, n, band), second_order ? 4 : 2, m + n + 2};
}

// Cost sources: a matrix (row stride n) or two series.
template <class T>
struct MatrixSource {
  const T* C;
  int64_t n;
  __device__ double cost(int64_t i, int64_t j) const { return double(C[(i - 1) * n + (j - 1)]); }
};

template <class T>
struct SeriesSource {
  const T* x;
  const T* y;
  int64_t D;
  int kind;
  __device__ double half_sq(int64_t i, int64_t j) const {
    const T* xi = x + (i - 1) * D;
    const T* yj = y + (j - 1) * D;
    double h = 0.0;
    for (int64_t d = 0; d < D; ++d) {
      const double diff = double(xi[d]) - double(yj[d]);
      h += diff * diff;
    }
    return 0.5 * h;
  }
  __device__ double cost(int64_t i, int64_t j) const {
    const double h = half_sq(i, j);
    if (kind == kCostSqEuclidean) return 2.0 * h;
    if (kind == kCostHalfSqEuclidean) return h;
    return h + log(2.0 - exp(-h));
  }
  // d cost / d x_i = factor (x_i - y_j)
  __device__ double factor(int64_t i, int64_t j) const {
    if (kind == kCostSqEuclidean) return 2.0;
    if (kind == kCostHalfSqEuclidean) return 1.0;
    const double e = exp(-half_sq(i, j));
    return 1.0 + e / (2.0 - e);
  }
};

struct PairWork {
  double* A;
  double* B;
  double* D;  // second order only
  double* Z;  // second order only
  int64_t* start;
};

__device__ PairWork pair_work(void* work, WorkLayout layout, int64_t b) {
  double* base = static_cast<double*>(work) + b * layout.arrays * layout.cells;
  int64_t* starts = reinterpret_cast<int64_t*>(static_cast<double*>(work) + gridDim.x * layout.arrays * layout.cells);
  const bool second = layout.arrays == 4;
  return {base, base + layout.cells, second ? base + 2 * layout.cells : nullptr,
          second ? base + 3 * layout.cells : nullptr, starts + b * layout.starts};
}

// Forward (and, with `backward`, the backward) of this block's pair; returns
// in every thread: 0 ok, 1 infeasible band, 2 non-finite cost. A holds E
// afterwards when `backward`. With a direction (w.D, w.Z and dir non-null),
// the second order: *tangent = <E, Z> and D holds H Z afterwards.
template <bool Hard, class Source, class T = double>
__device__ int run_pair(const Diagonals& g, const Source& source, PairWork w, double gamma, bool backward,
                        double* value, const T* dir = nullptr, int64_t ld = 0, double* tangent = nullptr) {
  __shared__ int bad;
  if (!g.feasible()) return 1;
  const bool second = dir != nullptr;
  const double inv_gamma = Hard ? 0.0 : 1.0 / gamma;
  const int64_t K = g.last();
  if (threadIdx.x == 0) {
    g.layout(w.start);
    bad = 0;
  }
  __syncthreads();
  for (int64_t k = threadIdx.x; k <= K + 1; k += blockDim.x) {
    const int64_t pads[2] = {w.start[k] + g.lo(k) - 1, w.start[k] + g.hi(k) + 1};
    for (int64_t p : pads) {
      w.A[p] = w.B[p] = INFINITY;
      if (second) w.D[p] = w.Z[p] = 0.0;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    w.A[w.start[0]] = 0.0;
    if (second) w.D[w.start[0]] = w.Z[w.start[0]] = 0.0;
  }
  __syncthreads();
  for (int64_t k = 2; k <= K; ++k) {
    for (int64_t i = g.lo(k) + threadIdx.x; i <= g.hi(k); i += blockDim.x) {
      const double c = source.cost(i, k - i);
      if (!is_finite(c)) atomicOr(&bad, 1);
      w.B[w.start[k] + i] = c;
      if (second) {
        w.Z[w.start[k] + i] = double(dir[(i - 1) * ld + (k - i - 1)]);
        tangent_cell<LibMath, Hard>(w.A, w.B, w.D, w.Z, w.start, k, i, gamma, inv_gamma);
      } else {
        forward_cell<LibMath, Hard>(w.A, w.B, w.start, k, i, gamma, inv_gamma);
      }
    }
    __syncthreads();
  }
  const int64_t end = w.start[K] + g.mb;
  *value = w.A[end];
  if (second) *tangent = w.D[end];
  __syncthreads();
  if (bad) return 2;
  if (!backward) return 0;
  if (threadIdx.x == 0) {
    w.A[end] = 1.0;  // E[mb][nb]
    if (second) w.D[end] = 0.0;  // dE[mb][nb]
  }
  __syncthreads();
  for (int64_t k = K - 1; k >= 2; --k) {
    for (int64_t i = g.lo(k) + threadIdx.x; i <= g.hi(k); i += blockDim.x) {
      if (second) {
        second_backward_cell<LibMath, Hard>(w.A, w.B, w.D, w.Z, w.start, k, i, inv_gamma);
      } else {
        backward_cell<LibMath, Hard>(w.A, w.B, w.start, k, i, inv_gamma);
      }
    }
    __syncthreads();
  }
  return 0;
}

// The used cells of `in` (diagonal layout) into matrix M (row stride ld);
// with `nan`, NaN on the whole used block instead.
template <class T>
__device__ void store_matrix(const Diagonals& g, const PairWork& w, const double* in, T* M, int64_t ld, bool nan) {
  if (nan) {
    for (int64_t q = threadIdx.x; q < g.mb * g.nb; q += blockDim.x) M[(q / g.nb) * ld + q % g.nb] = quiet_nan<T>();
    return;
  }
  for (int64_t k = 2; k <= g.last(); ++k) {
    for (int64_t i = g.lo(k) + threadIdx.x; i <= g.hi(k); i += blockDim.x) {
      M[(i - 1) * ld + (k - i - 1)] = T(in[w.start[k] + i]);
    }
  }
}

__device__ int64_t used(const int64_t* lengths, int64_t b, int64_t full) { return lengths ? lengths[b] : full; }

// value (B); E (B, m, n), zeroed by the caller, or null.
template <class T, bool Hard>
__global__ void matrix_kernel(const T* C, T* value, T* E, const int64_t* lengths_x, const int64_t* lengths_y,
                              int64_t m, int64_t n, double gamma, int64_t band, void* work, WorkLayout layout) {
  const int64_t b = blockIdx.x;
  const Diagonals g{used(lengths_x, b, m), used(lengths_y, b, n), band};
  const MatrixSource<T> source{C + b * m * n, n};
  const PairWork w = pair_work(work, layout, b);
  double v = 0.0;
  const int status = run_pair<Hard>(g, source, w, gamma, E != nullptr, &v);
  if (threadIdx.x == 0) value[b] = status == 1 ? T(INFINITY) : (status == 2 ? quiet_nan<T>() : T(v));
  if (E && status != 1) store_matrix(g, w, w.A, E + b * m * n, n, status == 2);
}

// jvp (B) = <E, Z>; E and HZ (B, m, n), zeroed by the caller.
template <class T, bool Hard>
__global__ void second_order_kernel(const T* C, const T* Z, T* jvp, T* E, T* HZ, const int64_t* lengths_x,
                                    const int64_t* lengths_y, int64_t m, int64_t n, double gamma, int64_t band,
                                    void* work, WorkLayout layout) {
  const int64_t b = blockIdx.x;
  const Diagonals g{used(lengths_x, b, m), used(lengths_y, b, n), band};
  const MatrixSource<T> source{C + b * m * n, n};
  const PairWork w = pair_work(work, layout, b);
  double v = 0.0, t = 0.0;
  const int status = run_pair<Hard>(g, source, w, gamma, true, &v, Z + b * m * n, n, &t);
  if (threadIdx.x == 0) jvp[b] = status == 1 ? T(INFINITY) : (status == 2 ? quiet_nan<T>() : T(t));
  if (status == 1) return;
  store_matrix(g, w, w.A, E + b * m * n, n, status == 2);
  store_matrix(g, w, w.D, HZ + b * m * n, n, status == 2);
}

// value (B); gx (B, m, D), gy (B, n, D), zeroed by the caller, or null.
template <class T, bool Hard>
__global__ void series_kernel(const T* x, const T* y, T* value, T* gx, T* gy, const int64_t* lengths_x,
                              const int64_t* lengths_y, int64_t m, int64_t n, int64_t D, int kind, double gamma,
                              int64_t band, void* work, WorkLayout layout) {
  const int64_t b = blockIdx.x;
  const Diagonals g{used(lengths_x, b, m), used(lengths_y, b, n), band};
  const SeriesSource<T> source{x + b * m * D, y + b * n * D, D, kind};
  const PairWork w = pair_work(work, layout, b);
  const bool grads = gx != nullptr || gy != nullptr;
  double v = 0.0;
  const int status = run_pair<Hard>(g, source, w, gamma, grads, &v);
  if (threadIdx.x == 0) value[b] = status == 1 ? T(INFINITY) : (status == 2 ? quiet_nan<T>() : T(v));
  if (!grads || status == 1) return;
  T* gxb = gx ? gx + b * m * D : nullptr;
  T* gyb = gy ? gy + b * n * D : nullptr;
  if (status == 2) {
    for (int64_t q = threadIdx.x; gxb && q < g.mb * D; q += blockDim.x) gxb[q] = quiet_nan<T>();
    for (int64_t q = threadIdx.x; gyb && q < g.nb * D; q += blockDim.x) gyb[q] = quiet_nan<T>();
    return;
  }
  // W = E * factor in place, then the row and column sums of W (x_i - y_j).
  for (int64_t k = 2; k <= g.last(); ++k) {
    for (int64_t i = g.lo(k) + threadIdx.x; i <= g.hi(k); i += blockDim.x) {
      double& a = w.A[w.start[k] + i];
      if (a != 0.0) a *= source.factor(i, k - i);
    }
  }
  __syncthreads();
  for (int64_t i = 1 + threadIdx.x; gxb && i <= g.mb; i += blockDim.x) {
    const int64_t j0 = g.first_col(i), j1 = g.last_col(i);
    for (int64_t d = 0; d < D; ++d) {
      const double xd = double(source.x[(i - 1) * D + d]);
      double acc = 0.0;
      for (int64_t j = j0; j <= j1; ++j) acc += w.A[w.start[i + j] + i] * (xd - double(source.y[(j - 1) * D + d]));
      gxb[(i - 1) * D + d] = T(acc);
    }
  }
  for (int64_t j = 1 + threadIdx.x; gyb && j <= g.nb; j += blockDim.x) {
    const int64_t i0 = g.first_row(j), i1 = g.last_row(j);
    for (int64_t d = 0; d < D; ++d) {
      const double yd = double(source.y[(j - 1) * D + d]);
      double acc = 0.0;
      for (int64_t i = i0; i <= i1; ++i) acc += w.A[w.start[i + j] + i] * (double(source.x[(i - 1) * D + d]) - yd);
      gyb[(j - 1) * D + d] = T(-acc);
    }
  }
}

template <class T>
T* ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

}  // namespace

int64_t cuda_work_bytes(int64_t batch, int64_t m, int64_t n, int64_t band, bool second_order) {
  return work_layout(m, n, band, second_order).bytes(batch);
}

void value_and_alignment_cuda(std::uintptr_t C, std::uintptr_t value, std::uintptr_t E, std::uintptr_t lengths_x,
                              std::uintptr_t lengths_y, std::uintptr_t work, int64_t batch, int64_t m, int64_t n,
                              double gamma, int64_t band, int dtype, int device, std::uintptr_t stream) {
  if (batch == 0) return;
  DeviceGuard guard(device);
  const WorkLayout layout = work_layout(m, n, band, false);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    dispatch_bool(gamma == 0.0, [&](auto hard) {
      matrix_kernel<T, decltype(hard)::value><<<static_cast<unsigned int>(batch), kThreads, 0, as_stream(stream)>>>(
          ptr<const T>(C), ptr<T>(value), E ? ptr<T>(E) : nullptr, ptr<const int64_t>(lengths_x),
          ptr<const int64_t>(lengths_y), m, n, gamma, band, ptr<void>(work), layout);
      check_launch("softdtw matrix_kernel");
    });
  });
}

void series_cuda(std::uintptr_t x, std::uintptr_t y, std::uintptr_t value, std::uintptr_t gx, std::uintptr_t gy,
                 std::uintptr_t lengths_x, std::uintptr_t lengths_y, std::uintptr_t work, int64_t batch, int64_t m,
                 int64_t n, int64_t D, int cost, double gamma, int64_t band, int dtype, int device,
                 std::uintptr_t stream) {
  if (batch == 0) return;
  DeviceGuard guard(device);
  const WorkLayout layout = work_layout(m, n, band, false);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    dispatch_bool(gamma == 0.0, [&](auto hard) {
      series_kernel<T, decltype(hard)::value><<<static_cast<unsigned int>(batch), kThreads, 0, as_stream(stream)>>>(
          ptr<const T>(x), ptr<const T>(y), ptr<T>(value), gx ? ptr<T>(gx) : nullptr, gy ? ptr<T>(gy) : nullptr,
          ptr<const int64_t>(lengths_x), ptr<const int64_t>(lengths_y), m, n, D, cost, gamma, band, ptr<void>(work),
          layout);
      check_launch("softdtw series_kernel");
    });
  });
}

void second_order_cuda(std::uintptr_t C, std::uintptr_t Z, std::uintptr_t jvp, std::uintptr_t E, std::uintptr_t HZ,
                       std::uintptr_t lengths_x, std::uintptr_t lengths_y, std::uintptr_t work, int64_t batch,
                       int64_t m, int64_t n, double gamma, int64_t band, int dtype, int device,
                       std::uintptr_t stream) {
  if (batch == 0) return;
  DeviceGuard guard(device);
  const WorkLayout layout = work_layout(m, n, band, true);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    dispatch_bool(gamma == 0.0, [&](auto hard) {
      second_order_kernel<T, decltype(hard)::value>
          <<<static_cast<unsigned int>(batch), kThreads, 0, as_stream(stream)>>>(
              ptr<const T>(C), ptr<const T>(Z), ptr<T>(jvp), ptr<T>(E), ptr<T>(HZ), ptr<const int64_t>(lengths_x),
              ptr<const int64_t>(lengths_y), m, n, gamma, band, ptr<void>(work), layout);
      check_launch("softdtw second_order_kernel");
    });
  });
}

}  // namespace softdtw
}  // namespace diffcomb
