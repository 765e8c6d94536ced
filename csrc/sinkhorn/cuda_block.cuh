// The CUDA side's block of threads for one Sinkhorn problem (cuda.cu,
// cuda_cloud.cu): warp reductions, the common loops of a sweeper (sweep.h)
// over the threads of a block, line sums, and the launch of one block per
// problem on the caller's stream. Included by the CUDA files only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../common/common.h"
#include "../common/cuda_utils.cuh"

namespace diffcomb {
namespace sinkhorn {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Two sums taken in one sweep.
struct Pair {
  double x, y;
};
__device__ __forceinline__ Pair& operator+=(Pair& a, const Pair& b) {
  a.x += b.x;
  a.y += b.y;
  return a;
}
__device__ __forceinline__ Pair warp_sum(Pair v) { return Pair{warp_sum(v.x), warp_sum(v.y)}; }
__device__ __forceinline__ double warp_max(double v) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ int lane_id() { return threadIdx.x & 31; }
__device__ __forceinline__ int warp_id() { return threadIdx.x >> 5; }

// A problem's slice of the work array.
__device__ double* problem_work(double* work, int64_t n, int64_t m) { return work + blockIdx.x * 7 * (n + m); }

// The common loops of a sweeper (sweep.h) for the threads of one block.
struct Block {
  int64_t n, m;
  double* scratch;  // kWarps doubles of shared memory

  __device__ Block(int64_t n_, int64_t m_, double* scratch_) : n(n_), m(m_), scratch(scratch_) {}

  template <class F>
  __device__ void rows(F f) const {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) f(i);
  }
  template <class F>
  __device__ void cols(F f) const {
    for (int64_t j = threadIdx.x; j < m; j += blockDim.x) f(j);
  }
  template <class F>
  __device__ void entries(F f) const {
    for (int64_t k = threadIdx.x; k < n * m; k += blockDim.x) f(k / m, k % m, k);
  }
  template <class F>
  __device__ void lines(int64_t N, F f) const {
    for (int64_t k = threadIdx.x; k < N; k += blockDim.x) f(k);
  }
  __device__ void sync() const { __syncthreads(); }
  // Every thread gets the sum, added in a fixed order (deterministic).
  __device__ double sum(double v) const {
    v = warp_sum(v);
    __syncthreads();
    if (lane_id() == 0) scratch[warp_id()] = v;
    __syncthreads();
    double s = 0.0;
    for (int w = 0; w < kWarps; ++w) s += scratch[w];
    return s;
  }
  __device__ bool leader() const { return threadIdx.x == 0; }

  // row(i, sum) for each row, with sum = sum_j entry(i, j) over the row (a
  // warp: the lanes stride the row; only lane 0 calls row). entry returns a
  // double or a Pair.
  template <class E, class R>
  __device__ void row_sums(E entry, R row) const {
    for (int64_t i = warp_id(); i < n; i += kWarps) {
      decltype(entry(i, i)) s{};
      for (int64_t j = lane_id(); j < m; j += 32) s += entry(i, j);
      s = warp_sum(s);
      if (lane_id() == 0) row(i, s);
    }
  }
  // col(j, sum) for each column, sum = sum_i entry(i, j) (a thread per column).
  template <class E, class R>
  __device__ void col_sums(E entry, R col) const {
    for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
      decltype(entry(j, j)) s{};
      for (int64_t i = 0; i < n; ++i) s += entry(i, j);
      col(j, s);
    }
  }
};

// The forward's work arrays (forward.h, ForwardProblem) in a problem's slice:
// 4 n + 3 m doubles.
template <class Problem>
__device__ void attach_forward_work(Problem& p, double* work, int64_t n, int64_t m) {
  p.f_cur = problem_work(work, n, m);
  p.f_new = p.f_cur + n;
  p.wa = p.f_new + n;
  p.loga = p.wa + n;
  p.g_cur = p.loga + n;
  p.wb = p.g_cur + m;
  p.logb = p.wb + m;
}

// One block per problem on the caller's stream.
template <class Kernel, class Batch>
void launch(Kernel kernel, const Batch& A, int64_t batch, std::uintptr_t work, int device, std::uintptr_t stream,
            const char* name) {
  DeviceGuard guard(device);
  kernel<<<static_cast<unsigned int>(batch), kThreads, 0, as_stream(stream)>>>(A, reinterpret_cast<double*>(work));
  check_launch(name);
}

}  // namespace
}  // namespace sinkhorn
}  // namespace diffcomb
