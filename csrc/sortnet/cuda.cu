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
//     gradient (dL/dP[b, i, :], in either layout of api.h) backward through
//     the comparators (mix_lanes_vjp) and overwrites each tape entry with its
//     term of dL/dalpha_c. One warp per (b, c) then sums the tape over i in a
//     fixed order (deterministic). The batch goes in chunks so that tape and
//     state stay within kTapeBytes.
//   - Values: one block per row of the batch: the values are replayed layer
//     by layer from x and alpha (replay_swap, recording a - b and f'(b - a)),
//     then the adjoint runs backward layer by layer (swap_values_vjp) with
//     the P part added.
// Every launch goes on the caller's stream, returns early on empty input and
// is checked; nothing synchronizes the host.
#include <cuda_runtime.h>

#include <algorithm>

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
    values_forward_kernel(const T* x, T* values, T* alpha, SortNetwork net, int64_t n, int64_t C,
                          double steepness, double art_lambda) {
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
      al[c] = swap_values<S>(v, net.lo[c], net.hi[c], steepness, art_lambda);
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

// Rows [b0, b0 + gridDim.y) of the batch; state and tape hold rows from chunk0 on.
template <class T>
__global__ void __launch_bounds__(kLaneThreads)
    p_backward_kernel(const T* alpha, const T* g_P, PStrides gs, T* tape, T* state, SortNetwork net, int64_t n,
                      int64_t C, int64_t b0, int64_t chunk0) {
  const int64_t b = b0 + blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  T* st = state + (b - chunk0) * n * n + i;
  T* tp = tape + (b - chunk0) * C * n + i;
  const T* g = g_P + b * n * n + i * gs.row;
  const T* al = alpha + b * C;
  for (int64_t w = 0; w < n; ++w) st[w * n] = w == i ? T(1) : T(0);
  for (int64_t c = 0; c < C; ++c) {
    mix_lanes<1>(st + int64_t(net.lo[c]) * n, st + int64_t(net.hi[c]) * n, al[c], tp + c * n);
  }
  for (int64_t w = 0; w < n; ++w) st[w * n] = g[w * gs.col];
  for (int64_t c = C - 1; c >= 0; --c) {
    tp[c * n] = mix_lanes_vjp<1>(st + int64_t(net.lo[c]) * n, st + int64_t(net.hi[c]) * n, al[c], tp + c * n);
  }
}

// dalpha[r] = sum_i tape[r, i] for the rows r of the tape (each n long): one
// warp per row, its lanes over i in a fixed order, then a fixed shuffle tree.
template <class T>
__global__ void __launch_bounds__(kRowThreads) sum_tape_kernel(const T* tape, double* dalpha, int64_t rows,
                                                               int64_t n) {
  const int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;  // uniform across the warp
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  double sum = 0.0;
  for (int64_t i = lane; i < n; i += 32) sum += double(tape[r * n + i]);
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  if (lane == 0) dalpha[r] = sum;
}

template <Sigmoid S, class T>
__global__ void __launch_bounds__(kRowThreads)
    values_backward_kernel(const T* x, const T* alpha, const T* g_values, const double* dalpha_p, T* dx,
                           double* work_double, T* work_values, SortNetwork net, int64_t n, int64_t C,
                           double steepness, double art_lambda) {
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
      replay_swap<S>(v, net.lo[c], net.hi[c], al[c], steepness, art_lambda, a_minus_b + c, fprime + c);
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

// Bytes of tape and state per chunk of the backward of P.
constexpr int64_t kTapeBytes = int64_t(1) << 31;

// Rows of the batch per chunk of the backward of P: tape (chunk, C, n) and state (chunk, n, n).
int64_t tape_chunk(int64_t batch, int64_t n, int64_t C, int64_t itemsize) {
  const int64_t per_row = std::max<int64_t>((C * n + n * n) * itemsize, 1);
  return std::max<int64_t>(1, std::min<int64_t>(batch, kTapeBytes / per_row));
}

// The scratch of backward_cuda, in this order: dalpha (batch, C) doubles when
// with_P; then gv, a - b, f' (batch, n + 2 C) doubles; the replayed values
// (batch, n) of the dtype; when with_P, tape (chunk, C, n) and state (chunk, n, n).
struct BackwardWork {
  double* dalpha;
  double* values_double;
  char* values;
  char* tape;
  char* state;
  int64_t chunk;
  int64_t bytes;

  BackwardWork(std::uintptr_t base, int64_t batch, int64_t n, int64_t C, int64_t itemsize, bool with_P) {
    char* p = reinterpret_cast<char*>(base);
    const bool p_part = with_P && C > 0 && n > 0;
    chunk = p_part ? tape_chunk(batch, n, C, itemsize) : 0;
    dalpha = p_part ? reinterpret_cast<double*>(p) : nullptr;
    int64_t at = p_part ? batch * C * 8 : 0;
    values_double = reinterpret_cast<double*>(p + at);
    at += batch * (n + 2 * C) * 8;
    values = p + at;
    at += batch * n * itemsize;
    tape = p + at;
    at += chunk * C * n * itemsize;
    state = p + at;
    at += chunk * n * n * itemsize;
    bytes = at;
  }
};

}  // namespace

void forward_cuda(std::uintptr_t x, std::uintptr_t values, std::uintptr_t alpha, std::uintptr_t Pt, int64_t batch,
                  int64_t n, int dtype, const SortLayout& layout, const Relaxation& relaxation, int device,
                  std::uintptr_t stream) {
  check_call("sortnet_forward", batch, n, x, values, alpha, layout);
  if (batch == 0 || n == 0) return;
  DeviceGuard guard(device);
  cudaStream_t s = as_stream(stream);
  const SortNetwork net = make_network(layout);
  const int64_t C = layout.comparators;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    dispatch_sigmoid(relaxation.sigmoid, [&](auto sigmoid_tag) {
      constexpr Sigmoid S = decltype(sigmoid_tag)::value;
      values_forward_kernel<S, T><<<static_cast<unsigned>(batch), kRowThreads, 0, s>>>(
          as_ptr<const T>(x), as_ptr<T>(values), as_ptr<T>(alpha), net, n, C, relaxation.steepness,
          relaxation.art_lambda);
      check_launch("sortnet values_forward_kernel");
      if (!Pt) return;
      for (int64_t b0 = 0; b0 < batch; b0 += kMaxGridY) {
        const int64_t rows = std::min(batch - b0, kMaxGridY);
        p_forward_kernel<T><<<lane_grid(rows, n), kLaneThreads, 0, s>>>(as_ptr<const T>(x), as_ptr<const T>(alpha),
                                                                        as_ptr<T>(Pt), net, n, C, b0);
        check_launch("sortnet p_forward_kernel");
      }
    });
  });
}

int64_t backward_work_bytes(int64_t batch, int64_t n, int64_t comparators, int dtype, bool with_P) {
  const int64_t itemsize = to_dtype(dtype) == DType::Float32 ? 4 : 8;
  return BackwardWork(0, batch, n, comparators, itemsize, with_P).bytes;
}

void backward_cuda(std::uintptr_t x, std::uintptr_t alpha, std::uintptr_t g_values, std::uintptr_t g_P,
                   bool g_P_transposed, std::uintptr_t dx, int64_t batch, int64_t n, int dtype,
                   const SortLayout& layout, const Relaxation& relaxation, std::uintptr_t work, int device,
                   std::uintptr_t stream) {
  check_call("sortnet_backward", batch, n, x, dx, alpha, layout);
  if (batch == 0 || n == 0) return;
  if (work == 0) throw std::invalid_argument("diffcomb native: sortnet_backward needs its work array");
  DeviceGuard guard(device);
  cudaStream_t s = as_stream(stream);
  const SortNetwork net = make_network(layout);
  const int64_t C = layout.comparators;
  const PStrides gs = p_strides(n, g_P_transposed);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const BackwardWork w(work, batch, n, C, sizeof(T), g_P != 0);
    T* tape = reinterpret_cast<T*>(w.tape);
    T* state = reinterpret_cast<T*>(w.state);
    for (int64_t c0 = 0; w.dalpha != nullptr && c0 < batch; c0 += w.chunk) {  // chunks of the tape
      const int64_t chunk_rows = std::min(w.chunk, batch - c0);
      for (int64_t b0 = c0; b0 < c0 + chunk_rows; b0 += kMaxGridY) {  // launches of at most kMaxGridY rows
        const int64_t rows = std::min(c0 + chunk_rows - b0, kMaxGridY);
        p_backward_kernel<T><<<lane_grid(rows, n), kLaneThreads, 0, s>>>(
            as_ptr<const T>(alpha), as_ptr<const T>(g_P), gs, tape, state, net, n, C, b0, c0);
        check_launch("sortnet p_backward_kernel");
      }
      const int64_t sums = chunk_rows * C;
      sum_tape_kernel<T><<<grid_for(sums * 32, kRowThreads), kRowThreads, 0, s>>>(tape, w.dalpha + c0 * C, sums, n);
      check_launch("sortnet sum_tape_kernel");
    }
    dispatch_sigmoid(relaxation.sigmoid, [&](auto sigmoid_tag) {
      constexpr Sigmoid S = decltype(sigmoid_tag)::value;
      values_backward_kernel<S, T><<<static_cast<unsigned>(batch), kRowThreads, 0, s>>>(
          as_ptr<const T>(x), as_ptr<const T>(alpha), as_ptr<const T>(g_values), w.dalpha, as_ptr<T>(dx),
          w.values_double, reinterpret_cast<T*>(w.values), net, n, C, relaxation.steepness, relaxation.art_lambda);
      check_launch("sortnet values_backward_kernel");
    });
  });
}

}  // namespace sortnet
}  // namespace diffcomb
