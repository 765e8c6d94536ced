// CUDA kernels of the isotonic family. The math is isotonic.h's (and, for the
// sparse soft top-k, the block solves of sparse_topk.h), shared with cpu.cpp;
// this file only maps rows and phases onto threads. The sparse top-k runs the
// same forward kernels with its own block statistics; its backward is the
// rank-mode VJP below applied to psi' * g (diffcomb/topk.py).
//
// Forward (PAV on rows that torch.sort already sorted):
//   - Short rows (n <= kRowwiseMaxN): one thread per row runs solve_row, the
//     stack's statistics in the work array. Many short rows fill the GPU.
//   - Longer rows: one thread block per row, kChunkThreads threads. The row is
//     cut into kChunkThreads chunks; each thread runs PAV on its chunk
//     (pav_run, stack left in place in the work arrays); thread 0 merges the
//     chunk stacks left to right (pav_merge_stack: pools only at junctions and
//     keeps the stack as a list of in-place pieces, so its serial work is the
//     number of chunks plus the number of poolings, not n); all threads then
//     compact the final blocks (starts and statistics) and write every
//     element (binary search of its block). PAV pools in any order to the same
//     unique solution, so this equals the sequential result up to the order of
//     floating-point sums. solve_row_chunked in isotonic.h runs these phases
//     serially; the CPU tests check it against solve_row.
// Backward (block VJP r_i = weights_i * sum_B u):
//   - Short rows: one thread per row (vjp_row).
//   - Longer rows: one thread block per row; threads take blocks round-robin
//     and handle each alone (vjp_block) unless the block is large, in which
//     case it is queued and all threads reduce it together afterwards
//     (fixed-order tree reduction, so results are deterministic).
// Every launch goes on the caller's stream, returns early on empty input and
// is checked; nothing synchronizes the host.
#include <cuda_runtime.h>

#include "../common/common.h"
#include "../common/cuda_utils.cuh"
#include "api.h"
#include "checks.h"
#include "dispatch.h"
#include "isotonic.h"
#include "sparse_topk.h"

namespace diffcomb {
namespace isotonic {
namespace {

constexpr int kRowThreads = 128;    // block size of the one-thread-per-row kernels
constexpr int kChunkThreads = 256;  // threads (and chunks) per row in the block-per-row kernels
constexpr int32_t kRowwiseMaxN = 32;
constexpr int32_t kMaxLargeBlocks = 1024;  // queue of cooperatively reduced blocks, per row

// Work arrays per row: two arrays of n block statistics and n int32 starts.
constexpr int64_t kStatsBytes =
    sizeof(MeanStats) > sizeof(LogSumExpStats) ? sizeof(MeanStats) : sizeof(LogSumExpStats);

// ---------------------------------------------------------------------------
// Forward kernels.

template <class Batch>
__global__ void solve_rowwise_kernel(Batch batch, int64_t rows, int32_t n, int32_t* starts,
                                     typename Batch::Problem::Stats* stats) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  solve_row(batch.row(r), n, starts + r * (n + 1), stats + r * n);
}

template <class Batch>
__global__ void __launch_bounds__(kChunkThreads)
    solve_chunked_kernel(Batch batch, int32_t n, int32_t chunk, int32_t* starts,
                         typename Batch::Problem::Stats* ws_stats, typename Batch::Problem::Stats* compact,
                         int32_t* ws_start) {
  __shared__ int32_t counts[kChunkThreads];
  __shared__ Piece pieces[kChunkThreads];
  __shared__ int32_t offsets[kChunkThreads + 1];
  __shared__ int32_t npieces_shared;

  const int64_t r = blockIdx.x;
  const int tid = threadIdx.x;
  const auto problem = batch.row(r);
  int32_t* row_starts = starts + r * (n + 1);
  ws_stats += r * n;
  compact += r * n;
  ws_start += r * n;

  int bad = 0;
  for (int32_t i = tid; i < n; i += kChunkThreads) bad |= !problem.finite(i);
  if (__syncthreads_or(bad)) {
    for (int32_t i = tid; i < n; i += kChunkThreads) {
      problem.fail(i);
      row_starts[i] = n;
    }
    if (tid == 0) row_starts[n] = -1;
    return;
  }

  // Phase 1: PAV on each chunk, stack in place at [begin, begin + count).
  const int32_t begin = tid * chunk;
  const int32_t end = begin + chunk < n ? begin + chunk : n;
  counts[tid] = begin < n ? pav_run(problem, begin, end, ws_start + begin, ws_stats + begin) : 0;
  __syncthreads();

  // Phase 2: one thread merges the chunk stacks (serial work: chunks + poolings).
  if (tid == 0) {
    int32_t npieces = 0;
    for (int c = 0; c < kChunkThreads && c * chunk < n; ++c) {
      npieces = pav_merge_stack(pieces, npieces, ws_start, ws_stats, c * chunk, c * chunk + counts[c]);
    }
    offsets[0] = 0;
    for (int32_t p = 0; p < npieces; ++p) offsets[p + 1] = offsets[p] + (pieces[p].end - pieces[p].begin);
    npieces_shared = npieces;
  }
  __syncthreads();

  // Phase 3: compact the final blocks.
  const int32_t npieces = npieces_shared;
  const int32_t nblocks = offsets[npieces];
  for (int32_t b = tid; b < nblocks; b += kChunkThreads) {
    const int32_t p = find_block(offsets, npieces, b);
    const int32_t k = pieces[p].begin + (b - offsets[p]);
    row_starts[b] = ws_start[k];
    compact[b] = ws_stats[k];
  }
  for (int32_t b = nblocks + tid; b < n; b += kChunkThreads) row_starts[b] = n;
  if (tid == 0) row_starts[n] = nblocks;
  __syncthreads();

  // Phase 4: every element from its block.
  for (int32_t i = tid; i < n; i += kChunkThreads) problem.emit(i, compact[find_block(row_starts, nblocks, i)]);
}

template <class Batch>
void launch_solve(const Batch& batch, int64_t rows, int64_t n, std::uintptr_t starts, std::uintptr_t work,
                  int device, std::uintptr_t stream_handle) {
  using Stats = typename Batch::Problem::Stats;
  if (rows == 0) return;
  DeviceGuard guard(device);
  const cudaStream_t stream = as_stream(stream_handle);
  int32_t* row_starts = as_ptr<int32_t>(starts);
  if (n == 0) {  // every row: zero blocks
    cuda_check(cudaMemsetAsync(row_starts, 0, rows * sizeof(int32_t), stream), "cudaMemsetAsync");
    return;
  }
  Stats* ws_stats = as_ptr<Stats>(work);
  Stats* compact = ws_stats + rows * n;
  int32_t* ws_start = reinterpret_cast<int32_t*>(compact + rows * n);
  const int32_t len = static_cast<int32_t>(n);
  if (len <= kRowwiseMaxN) {
    solve_rowwise_kernel<<<grid_for(rows, kRowThreads), kRowThreads, 0, stream>>>(batch, rows, len, row_starts,
                                                                                  ws_stats);
    check_launch("solve_rowwise_kernel");
  } else {
    const int32_t chunk = (len + kChunkThreads - 1) / kChunkThreads;
    solve_chunked_kernel<<<static_cast<unsigned int>(rows), kChunkThreads, 0, stream>>>(
        batch, len, chunk, row_starts, ws_stats, compact, ws_start);
    check_launch("solve_chunked_kernel");
  }
}

// The sparse top-k's threshold solve (sparse_topk.h, any p other than 2 and
// 4/3): one thread per row; its work is O(log n + m) per evaluation plus the
// O(n) writes of the row.
template <class Batch>
__global__ void threshold_kernel(Batch batch, int64_t rows, int32_t* starts) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  batch.solve(r, starts);
}

template <class Batch>
void launch_threshold(const Batch& batch, int64_t rows, std::uintptr_t starts, int device,
                      std::uintptr_t stream_handle) {
  if (rows == 0) return;
  DeviceGuard guard(device);
  threshold_kernel<<<grid_for(rows, kRowThreads), kRowThreads, 0, as_stream(stream_handle)>>>(batch, rows,
                                                                                            as_ptr<int32_t>(starts));
  check_launch("threshold_kernel");
}

// ---------------------------------------------------------------------------
// Backward kernels.

template <class T, Vjp M>
__global__ void vjp_rowwise_kernel(const T* g, const int32_t* perm, const int32_t* starts, const T* weights,
                                   T scale, int64_t rows, int32_t n, T* dx) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const int64_t off = r * n;
  vjp_row<T, M>(g + off, M == Vjp::Plain ? nullptr : perm + off, starts + r * (n + 1), weights + off, scale, n,
                dx + off);
}

template <class T, Vjp M>
__global__ void __launch_bounds__(kChunkThreads)
    vjp_blockwise_kernel(const T* g, const int32_t* perm, const int32_t* starts, const T* weights, T scale,
                         int32_t n, int32_t large, T* dx) {
  __shared__ int32_t large_blocks[kMaxLargeBlocks];
  __shared__ int32_t nlarge;
  __shared__ double partial[kChunkThreads];

  const int64_t r = blockIdx.x;
  const int tid = threadIdx.x;
  const int64_t off = r * n;
  g += off;
  weights += off;
  dx += off;
  if (M != Vjp::Plain) perm += off;
  const int32_t* row_starts = starts + r * (n + 1);
  const int32_t nblocks = row_starts[n];
  // The structure and the permutation are checked first (isotonic.h, blocks_ok and perm_ok, split
  // over the threads), so the queue of large blocks below cannot overflow.
  const bool bad = !blocks_ok(row_starts, nblocks, n, tid, kChunkThreads) ||
                   !perm_ok<M>(perm, tid, n, n, kChunkThreads);
  if (__syncthreads_or(bad)) {
    for (int32_t i = tid; i < n; i += kChunkThreads) dx[i] = quiet_nan<T>();
    return;
  }
  if (tid == 0) nlarge = 0;
  __syncthreads();
  for (int32_t b = tid; b < nblocks; b += kChunkThreads) {
    const int32_t begin = row_starts[b];
    const int32_t end = b + 1 < nblocks ? row_starts[b + 1] : n;
    if (end - begin > large) {
      large_blocks[atomicAdd(&nlarge, 1)] = b;  // at most n / large <= kMaxLargeBlocks of them
    } else {
      vjp_block<T, M>(g, perm, weights, scale, begin, end, dx);
    }
  }
  __syncthreads();
  const int32_t count = nlarge;
  for (int32_t q = 0; q < count; ++q) {
    const int32_t b = large_blocks[q];
    const int32_t begin = row_starts[b];
    const int32_t end = b + 1 < nblocks ? row_starts[b + 1] : n;
    double sum = 0.0;
    for (int32_t i = begin + tid; i < end; i += kChunkThreads) sum += double(vjp_input<T, M>(g, perm, i));
    partial[tid] = sum;
    __syncthreads();
    for (int stride = kChunkThreads / 2; stride > 0; stride /= 2) {
      if (tid < stride) partial[tid] += partial[tid + stride];
      __syncthreads();
    }
    const double total = partial[0];
    for (int32_t i = begin + tid; i < end; i += kChunkThreads) {
      vjp_write<T, M>(dx, perm, i, vjp_input<T, M>(g, perm, i), double(weights[i]) * total, scale);
    }
    __syncthreads();
  }
}

template <class T, Vjp M>
void launch_vjp(std::uintptr_t g, std::uintptr_t perm, std::uintptr_t starts, std::uintptr_t weights,
                std::uintptr_t dx, int64_t rows, int64_t n, double scale, cudaStream_t stream) {
  const int32_t len = static_cast<int32_t>(n);
  if (len <= kRowwiseMaxN) {
    vjp_rowwise_kernel<T, M><<<grid_for(rows, kRowThreads), kRowThreads, 0, stream>>>(
        as_ptr<const T>(g), as_ptr<const int32_t>(perm), as_ptr<const int32_t>(starts), as_ptr<const T>(weights), T(scale),
        rows, len, as_ptr<T>(dx));
    check_launch("vjp_rowwise_kernel");
  } else {
    const int32_t by_count = (len + kMaxLargeBlocks - 1) / kMaxLargeBlocks;
    const int32_t large = by_count > 4 * kChunkThreads ? by_count : 4 * kChunkThreads;
    vjp_blockwise_kernel<T, M><<<static_cast<unsigned int>(rows), kChunkThreads, 0, stream>>>(
        as_ptr<const T>(g), as_ptr<const int32_t>(perm), as_ptr<const int32_t>(starts), as_ptr<const T>(weights), T(scale),
        len, large, as_ptr<T>(dx));
    check_launch("vjp_blockwise_kernel");
  }
}

}  // namespace

int64_t cuda_work_bytes(int64_t rows, int64_t n) {
  return rows * n * (2 * kStatsBytes + static_cast<int64_t>(sizeof(int32_t)));
}

void project_cuda(std::uintptr_t a, std::uintptr_t c, std::uintptr_t perm, std::uintptr_t out,
                  std::uintptr_t starts, std::uintptr_t weights, int64_t rows, int64_t n, double out_scale, bool rank,
                  bool kl, int dtype, std::uintptr_t work, int device, std::uintptr_t stream) {
  check_project(a, c, perm, out, starts, weights, rows, n, dtype, {{"work", work}});
  with_projection_batch(a, c, perm, out, weights, n, out_scale, rank, kl, dtype, [&](const auto& batch) {
    launch_solve(batch, rows, n, starts, work, device, stream);
  });
}

void isotonic_cuda(std::uintptr_t y, std::uintptr_t c, std::uintptr_t out, std::uintptr_t starts,
                   std::uintptr_t weights, int64_t rows, int64_t n, double sign, int dtype, std::uintptr_t work,
                   int device, std::uintptr_t stream) {
  check_regression(y, out, starts, weights, rows, n, dtype, {{"work", work}});
  with_isotonic_batch(y, c, out, weights, n, sign, dtype, [&](const auto& batch) {
    launch_solve(batch, rows, n, starts, work, device, stream);
  });
}

int64_t sparse_topk_cuda_work_bytes(int64_t rows, int64_t n) {
  return rows * n * (2 * kTopkStatsBytes + static_cast<int64_t>(sizeof(int32_t)));
}

void sparse_topk_cuda(std::uintptr_t s, std::uintptr_t perm, std::uintptr_t out, std::uintptr_t deriv,
                      std::uintptr_t starts, std::uintptr_t weights, int64_t rows, int64_t n, int64_t k, double r,
                      int method, int dtype, std::uintptr_t work, int device, std::uintptr_t stream) {
  check_sparse_topk(s, perm, out, deriv, starts, weights, rows, n, k, method, dtype, {{"work", work}});
  with_sparse_topk_batch(
      s, perm, out, deriv, weights, n, k, r, method, dtype,
      [&](const auto& batch) { launch_solve(batch, rows, n, starts, work, device, stream); },
      [&](const auto& batch) { launch_threshold(batch, rows, starts, device, stream); });
}

void vjp_cuda(std::uintptr_t g, std::uintptr_t perm, std::uintptr_t starts, std::uintptr_t weights,
              std::uintptr_t dx, int64_t rows, int64_t n, double scale, int mode, int dtype, int device,
              std::uintptr_t stream_handle) {
  check_vjp(g, perm, starts, weights, dx, rows, n, mode, dtype);
  if (rows == 0 || n == 0) return;
  DeviceGuard guard(device);
  const cudaStream_t stream = as_stream(stream_handle);
  with_vjp_mode(dtype, mode, [&](auto tag, auto mode_tag) {
    using T = decltype(tag);
    launch_vjp<T, decltype(mode_tag)::value>(g, perm, starts, weights, dx, rows, n, scale, stream);
  });
}

}  // namespace isotonic
}  // namespace diffcomb
