// CUDA kernels of the sorting networks. The math is sortnet.h's, shared with
// cpu.cpp; this file only maps comparators and rows of P onto threads.
//
// Forward:
//   - Values and mixing weights: one thread block per row of the batch, the
//     values in the output array; the threads take the (disjoint) comparators
//     of a layer, a barrier between layers (swap_values).
//   - P: one thread per (row of the batch, row i of P). Thread i runs e_i
//     through all comparators (mix_lanes with one lane) directly in the output
//     Pt[b, :, i], which is wire-major, so the threads of a warp read and
//     write consecutive addresses; alpha, lo and hi are uniform across the
//     warp (broadcast loads).
// Backward:
//   - P part of dL/dalpha: one thread per (b, i) again: it replays its row of
//     P forward in a scratch state (b, :, i), recording the pre-swap
//     differences in a tape (b, c, i); then runs its row of the upstream
//     gradient backward through the comparators (mix_lanes_vjp) and overwrites
//     each tape entry with its term of dL/dalpha_c. The caller sums the tape
//     over i (torch.sum, a fixed-order reduction) and chunks the batch so that
//     the tape stays within a memory budget.
//   - Values: one block per row of the batch: the values are replayed layer
//     by layer from x and alpha (replay_swap, recording a - b and f'(b - a)),
//     then the adjoint runs backward layer by layer (swap_values_vjp) with
//     the P part added.
// Every launch goes on the caller's stream, returns early on empty input and
// is checked; nothing synchronizes the host.
#include <cuda_runtime.h>

#include "../common/common.h"
#include "../common/cuda_utils.cuh"
#include "api.h"
#include "dispatch.h"
#include "sortnet.h"

namespace diffcomb {
namespace sortnet {
namespace {

constexpr int kRowThreads = 256;   // threads of the one-block-per-row kernels
constexpr int kLaneThreads = 128;  // threads per block of the one-thread-per-row-of-P kernels

template <class T>
__device__ __forceinline__ bool row_has_nonfinite(const T* x, int64_t n) {
  int bad = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) bad |= !is_finite(x[i]);
  return __syncthreads_or(bad) != 0;
}

template <Sigmoid S, class T>
__global__ void __launch_bounds__(kRowThreads)
    values_forward_kernel(const T* x, T* values, T* alpha, SortNetwork net, int64_t n, int64_t C, double beta,
                          double lambda) {
  const int64_t b = blockIdx.x;
  const T* xb = x + b * n;
  T* v = values + b * n;
  T* al = alpha + b * C;
  if (row_has_nonfinite(xb, n)) {  // SPEC 0: the whole row is NaN
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v[i] = quiet_nan<T>();
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) al[c] = quiet_nan<T>();
    return;
  }
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v[i] = xb[i];
  __syncthreads();
  for (int32_t l = 0; l < net.layers; ++l) {
    for (int32_t c = net.offsets[l] + threadIdx.x; c < net.offsets[l + 1]; c += blockDim.x) {
      al[c] = swap_values<S>(v, net.lo[c], net.hi[c], beta, lambda);
    }
    __syncthreads();
  }
}

template <class T>
__global__ void __launch_bounds__(kLaneThreads)
    p_forward_kernel(const T* x, const T* alpha, T* Pt, SortNetwork net, int64_t n, int64_t C, int64_t b0) {
  const int64_t b = b0 + blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  T* pt = Pt + b * n * n + i;
  const T* al = alpha + b * C;
  // A row with a non-finite input is NaN (SPEC 0), decided from x as on the CPU (the
  // values can overflow on a finite row); O(n) uniform loads next to the O(C) mixes.
  bool finite = true;
  for (int64_t w = 0; w < n; ++w) finite = finite && is_finite(x[b * n + w]);
  if (!finite) {
    for (int64_t w = 0; w < n; ++w) pt[w * n] = quiet_nan<T>();
    return;
  }
  for (int64_t w = 0; w < n; ++w) pt[w * n] = w == i ? T(1) : T(0);
  for (int64_t c = 0; c < C; ++c) {
    mix_lanes<1>(pt + int64_t(net.lo[c]) * n, pt + int64_t(net.hi[c]) * n, al[c], static_cast<T*>(nullptr));
  }
}

template <class T>
__global__ void __launch_bounds__(kLaneThreads)
    p_backward_kernel(const T* alpha, const T* g_Pt, T* tape, T* state, SortNetwork net, int64_t n, int64_t C,
                      int64_t b0) {
  const int64_t b = b0 + blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  T* st = state + b * n * n + i;
  T* tp = tape + b * C * n + i;
  const T* g = g_Pt + b * n * n + i;
  const T* al = alpha + b * C;
  for (int64_t w = 0; w < n; ++w) st[w * n] = w == i ? T(1) : T(0);
  for (int64_t c = 0; c < C; ++c) {
    mix_lanes<1>(st + int64_t(net.lo[c]) * n, st + int64_t(net.hi[c]) * n, al[c], tp + c * n);
  }
  for (int64_t w = 0; w < n; ++w) st[w * n] = g[w * n];
  for (int64_t c = C - 1; c >= 0; --c) {
    tp[c * n] = mix_lanes_vjp<1>(st + int64_t(net.lo[c]) * n, st + int64_t(net.hi[c]) * n, al[c], tp + c * n);
  }
}

template <Sigmoid S, class T>
__global__ void __launch_bounds__(kRowThreads)
    values_backward_kernel(const T* x, const T* alpha, const T* g_values, const double* dalpha_p, T* dx,
                           double* work_double, T* work_values, SortNetwork net, int64_t n, int64_t C, double beta,
                           double lambda) {
  const int64_t b = blockIdx.x;
  const T* xb = x + b * n;
  const T* al = alpha + b * C;
  T* out = dx + b * n;
  double* gv = work_double + b * (n + 2 * C);
  double* a_minus_b = gv + n;
  double* fprime = a_minus_b + C;
  T* v = work_values + b * n;
  if (row_has_nonfinite(xb, n)) {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) out[i] = quiet_nan<T>();
    return;
  }
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    v[i] = xb[i];
    gv[i] = g_values ? double(g_values[b * n + i]) : 0.0;
  }
  __syncthreads();
  for (int32_t l = 0; l < net.layers; ++l) {
    for (int32_t c = net.offsets[l] + threadIdx.x; c < net.offsets[l + 1]; c += blockDim.x) {
      replay_swap<S>(v, net.lo[c], net.hi[c], al[c], beta, lambda, a_minus_b + c, fprime + c);
    }
    __syncthreads();
  }
  for (int32_t l = net.layers - 1; l >= 0; --l) {
    for (int32_t c = net.offsets[l] + threadIdx.x; c < net.offsets[l + 1]; c += blockDim.x) {
      swap_values_vjp(gv, net.lo[c], net.hi[c], double(al[c]), a_minus_b[c], fprime[c],
                      dalpha_p ? dalpha_p[b * C + c] : 0.0);
    }
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) out[i] = T(gv[i]);
}

constexpr int64_t kMaxGridY = 65535;  // rows of the batch per launch of the lane kernels

dim3 lane_grid(int64_t rows, int64_t n) { return dim3(grid_for(n, kLaneThreads), static_cast<unsigned>(rows)); }

}  // namespace

void forward_cuda(std::uintptr_t x, std::uintptr_t values, std::uintptr_t alpha, std::uintptr_t Pt,
                  std::uintptr_t lo, std::uintptr_t hi, std::uintptr_t offsets, int64_t batch, int64_t n,
                  int64_t layers, int64_t comparators, int sigmoid, double steepness, double art_lambda, int dtype, int device,
                  std::uintptr_t stream) {
  if (batch == 0 || n == 0) return;
  DeviceGuard guard(device);
  cudaStream_t s = as_stream(stream);
  const SortNetwork net = make_network(lo, hi, offsets, layers);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    dispatch_sigmoid(sigmoid, [&](auto sigmoid_tag) {
      constexpr Sigmoid S = decltype(sigmoid_tag)::value;
      const int64_t C = comparators;
      values_forward_kernel<S, T><<<static_cast<unsigned>(batch), kRowThreads, 0, s>>>(
          as_ptr<const T>(x), as_ptr<T>(values), as_ptr<T>(alpha), net, n, C, steepness, art_lambda);
      check_launch("sortnet values_forward_kernel");
      if (Pt) {
        for (int64_t b0 = 0; b0 < batch; b0 += kMaxGridY) {
          const int64_t rows = batch - b0 < kMaxGridY ? batch - b0 : kMaxGridY;
          p_forward_kernel<T><<<lane_grid(rows, n), kLaneThreads, 0, s>>>(
              as_ptr<const T>(x), as_ptr<const T>(alpha), as_ptr<T>(Pt), net, n, C, b0);
          check_launch("sortnet p_forward_kernel");
        }
      }
    });
  });
}

void p_backward_cuda(std::uintptr_t alpha, std::uintptr_t g_Pt, std::uintptr_t tape, std::uintptr_t state,
                     std::uintptr_t lo, std::uintptr_t hi, std::uintptr_t offsets, int64_t batch, int64_t n,
                     int64_t layers, int64_t comparators, int dtype, int device, std::uintptr_t stream) {
  if (batch == 0 || n == 0 || layers == 0) return;
  DeviceGuard guard(device);
  cudaStream_t s = as_stream(stream);
  const SortNetwork net = make_network(lo, hi, offsets, layers);
  const int64_t C = comparators;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t b0 = 0; b0 < batch; b0 += kMaxGridY) {
      const int64_t rows = batch - b0 < kMaxGridY ? batch - b0 : kMaxGridY;
      p_backward_kernel<T><<<lane_grid(rows, n), kLaneThreads, 0, s>>>(
          as_ptr<const T>(alpha), as_ptr<const T>(g_Pt), as_ptr<T>(tape), as_ptr<T>(state), net, n, C, b0);
      check_launch("sortnet p_backward_kernel");
    }
  });
}

int64_t values_backward_work_bytes(int64_t batch, int64_t n, int64_t comparators, int dtype) {
  const int64_t itemsize = to_dtype(dtype) == DType::Float32 ? 4 : 8;
  return batch * ((n + 2 * comparators) * 8 + n * itemsize);
}

void values_backward_cuda(std::uintptr_t x, std::uintptr_t alpha, std::uintptr_t g_values, std::uintptr_t dalpha_p,
                          std::uintptr_t dx, std::uintptr_t work, std::uintptr_t lo, std::uintptr_t hi,
                          std::uintptr_t offsets, int64_t batch, int64_t n, int64_t layers, int64_t comparators, int sigmoid,
                          double steepness, double art_lambda, int dtype, int device, std::uintptr_t stream) {
  if (batch == 0 || n == 0) return;
  DeviceGuard guard(device);
  cudaStream_t s = as_stream(stream);
  const SortNetwork net = make_network(lo, hi, offsets, layers);
  const int64_t C = comparators;
  double* work_double = as_ptr<double>(work);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    dispatch_sigmoid(sigmoid, [&](auto sigmoid_tag) {
      constexpr Sigmoid S = decltype(sigmoid_tag)::value;
      T* work_values = reinterpret_cast<T*>(work_double + batch * (n + 2 * C));
      values_backward_kernel<S, T><<<static_cast<unsigned>(batch), kRowThreads, 0, s>>>(
          as_ptr<const T>(x), as_ptr<const T>(alpha), as_ptr<const T>(g_values), as_ptr<const double>(dalpha_p),
          as_ptr<T>(dx), work_double, work_values, net, n, C, steepness, art_lambda);
      check_launch("sortnet values_backward_kernel");
    });
  });
}

}  // namespace sortnet
}  // namespace diffcomb
