// CUDA driver of soft-DTW: the anti-diagonal engine of softdtw.h and layout.h
// (the geometry, the cell steps soft and hard, first and second order) as a
// tiled wavefront.
//
// Design.
// - Tiles: every pair is cut into the kTile x kTile tiles of layout.h. The
//   tiles of one tile anti-diagonal are independent, so one launch per tile
//   diagonal runs all of them, for all pairs of the batch, as one thread
//   block each: grid (batch, tiles of diagonal t). Inside a tile the block
//   walks the cell diagonals with a __syncthreads between them, one cell per
//   thread. A pass is tm + tn - 1 launches on the caller's stream and no
//   host synchronization; there is no sequence-length limit, and a few long
//   pairs still spread over many SMs.
// - Memory: each pair's arrays A, B (and D, Z for the second order; double)
//   and diagonal offsets live in one global work array from Python
//   (softdtw_work_bytes), in the CPU driver's layout: consecutive cells of a
//   diagonal are consecutive in memory, so a warp's accesses to A, B, D and Z
//   are coalesced. Only in-band cells are stored.
// - Costs are read (matrix) or computed from the series (x_i, y_j) by the
//   thread that computes the cell, when it computes it: no pass of its own
//   and no (B, N, M) intermediate for series.
// - Per-pair status in the work array: 1 infeasible band, 2 a non-finite
//   cost (raised with atomicOr by any tile), 4 a non-finite R[mb][nb] from
//   finite costs (their sums overflow double: no weights can be formed, as
//   in the CPU sweep); the final kernels turn it into +inf / NaN results
//   (SPEC section 0).
// - Gradients: E (and H Z) to matrices; for series, gx (one thread per row)
//   and gy (one thread per column) summed in a fixed order: deterministic,
//   no atomics.
// The CPU driver (cpu.cpp) runs the same tiles, diagonal by diagonal, when a
// small batch shares the threads, so the CPU tests cover this order.
#include <cstdint>

#include "../common/common.h"
#include "../common/cuda_utils.cuh"
#include "api.h"
#include "checks.h"
#include "layout.h"
#include "softdtw.h"

namespace diffcomb {
namespace softdtw {
namespace {

constexpr int kTile = 256;     // tile side, in cells
constexpr int kThreads = 256;  // threads per tile block: one per cell of a tile diagonal
constexpr int kPairThreads = 256;

// Per pair: arrays * cells doubles, starts int64 offsets, one int64 status
// and two doubles (value, tangent). cells: the layout of the full (m, n)
// problem, the largest any lengths can need.
struct WorkLayout {
  int64_t cells;
  int64_t arrays;  // 2: A, B;  4: A, B, D, Z (second order)
  int64_t starts;
  int64_t batch;
  int64_t bytes() const { return batch * (arrays * cells * 8 + starts * 8 + 8 + 16); }
};

WorkLayout work_layout(int64_t batch, int64_t m, int64_t n, int64_t band, bool second_order) {
  return {Diagonals::of(m, n, band).size(), second_order ? 4 : 2, m + n + 2, batch};
}

struct PairWork {
  Arrays arrays;
  int64_t* start;  // arrays.start, writable (setup)
  int64_t* status;
  double* result;  // value, tangent
};

__device__ PairWork pair_work(void* work, const WorkLayout& layout, int64_t b) {
  double* base = static_cast<double*>(work);
  double* arrays = base + b * layout.arrays * layout.cells;
  int64_t* starts = reinterpret_cast<int64_t*>(base + layout.batch * layout.arrays * layout.cells);
  int64_t* status = starts + layout.batch * layout.starts;
  double* results = reinterpret_cast<double*>(status + layout.batch);
  const bool second = layout.arrays == 4;
  int64_t* start = starts + b * layout.starts;
  return {{arrays, arrays + layout.cells, second ? arrays + 2 * layout.cells : nullptr,
           second ? arrays + 3 * layout.cells : nullptr, start},
          start,
          status + b,
          results + 2 * b};
}

// Cost sources for pair b: a matrix (B, m, n) or two series (B, m, D), (B, n, D).
template <class T>
struct MatrixSource {
  const T* C;
  int64_t m, n;
  __device__ double cost(int64_t b, int64_t i, int64_t j) const {
    return double(C[(b * m + (i - 1)) * n + (j - 1)]);
  }
};

template <class T>
struct SeriesSource {
  const T* x;
  const T* y;
  int64_t m, n, D;
  int kind;
  __device__ SeriesPair<T> pair(int64_t b) const { return {x + b * m * D, y + b * n * D, D, kind}; }
  __device__ double cost(int64_t b, int64_t i, int64_t j) const { return pair(b).template cost<LibMath>(i, j); }
};

// One block per pair: the diagonal offsets, the pads, the origin, and the
// status (0, or 1 for an infeasible band).
__global__ void setup_kernel(Problem p, void* work, WorkLayout layout) {
  const int64_t b = blockIdx.x;
  const Diagonals g = p.pair(b);
  const PairWork w = pair_work(work, layout, b);
  if (threadIdx.x == 0) {
    g.layout(w.start);
    *w.status = g.feasible() ? 0 : 1;
  }
  __syncthreads();
  for (int64_t k = threadIdx.x; k <= g.last() + 1; k += blockDim.x) set_pads(w.arrays, g, k);
  if (threadIdx.x == 0) set_origin(w.arrays);  // not a pad slot: no race with the loop
}

// The tile of tile diagonal t that block (b, blockIdx.y) sweeps.
__device__ Tile block_tile(const Diagonals& g, int64_t t, int64_t first) {
  const int64_t ti = first + blockIdx.y;
  return Tile::at(g, kTile, ti, t - ti);
}

// Forward (or its tangent, with a direction Z) over the tiles of tile
// diagonal t.
template <bool Hard, class Source, class T>
__global__ void forward_tiles_kernel(int64_t t, int64_t first, Problem p, Source source, const T* Z, Smoothing s,
                                     void* work, WorkLayout layout) {
  const int64_t b = blockIdx.x;
  const Diagonals g = p.pair(b);
  const PairWork w = pair_work(work, layout, b);
  const Tile tile = block_tile(g, t, first);
  if (*w.status == 1 || tile.empty()) return;
  for (int64_t k = tile.first(); k <= tile.last(); ++k) {
    const int64_t i = tile.lo(g, k) + threadIdx.x;  // a tile diagonal has at most kTile = blockDim.x cells
    if (i <= tile.hi(g, k)) {
      const int64_t at = w.start[k] + i;
      const double c = source.cost(b, i, k - i);
      if (!is_finite(c)) atomicOr(reinterpret_cast<unsigned long long*>(w.status), 2ull);
      w.arrays.B[at] = c;
      if (Z) {
        w.arrays.Z[at] = double(Z[(b * p.m + (i - 1)) * p.n + (k - i - 1)]);
        TangentStep<LibMath, Hard>(w.arrays, k, s)(i);
      } else {
        ForwardStep<LibMath, Hard>(w.arrays, k, s)(i);
      }
    }
    __syncthreads();
  }
}

// Backward (first or second order) over the tiles of tile diagonal t.
template <bool Hard>
__global__ void backward_tiles_kernel(int64_t t, int64_t first, Problem p, Smoothing s, void* work,
                                      WorkLayout layout) {
  const int64_t b = blockIdx.x;
  const Diagonals g = p.pair(b);
  const PairWork w = pair_work(work, layout, b);
  const Tile tile = block_tile(g, t, first);
  if (*w.status != 0 || tile.empty()) return;
  for (int64_t k = tile.last_backward(g); k >= tile.first(); --k) {
    const int64_t i = tile.lo(g, k) + threadIdx.x;
    if (i <= tile.hi(g, k)) {
      if (w.arrays.D) {
        SecondBackwardStep<LibMath, Hard>(w.arrays, k, s)(i);
      } else {
        BackwardStep<LibMath, Hard>(w.arrays, k, s)(i);
      }
    }
    __syncthreads();
  }
}

// One thread per pair, between the passes (layout.h, finish_forward); writes
// the value output (the tangent for the second order) with the status
// applied.
template <class T>
__global__ void finish_forward_kernel(Problem p, T* out, bool tangent, void* work, WorkLayout layout) {
  const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= layout.batch) return;
  const PairWork w = pair_work(work, layout, b);
  const int64_t status = *w.status;
  double v = INFINITY;
  if (status == 0) {
    const Ends ends = finish_forward(w.arrays, p.pair(b));
    w.result[0] = ends.value;
    w.result[1] = ends.tangent;
    v = tangent ? ends.tangent : ends.value;
    if (!is_finite(ends.value)) {
      *w.status = 4;  // the backward and the stores see it: NaN derivatives (and a NaN tangent)
      if (tangent) v = NAN;
    }
  } else if (status != 1) {
    v = NAN;
  }
  out[b] = T(v);
}

// The used cells of `in` (A or D, by offset) into M (B, m, n), zeroed by the
// caller where a band or lengths leave cells out; NaN on the used block for
// a pair with a non-finite cost. Grid (batch, blocks).
template <class T>
__global__ void store_matrix_kernel(Problem p, int which, T* M, void* work, WorkLayout layout) {
  const int64_t b = blockIdx.x;
  const Diagonals g = p.pair(b);
  const PairWork w = pair_work(work, layout, b);
  const int64_t status = *w.status;
  if (status == 1) return;
  const double* in = which == 0 ? w.arrays.A : w.arrays.D;
  T* out = M + b * p.m * p.n;
  const int64_t stride = int64_t(gridDim.y) * blockDim.x;
  for (int64_t q = int64_t(blockIdx.y) * blockDim.x + threadIdx.x; q < g.mb * g.nb; q += stride) {
    const int64_t i = q / g.nb + 1, j = q % g.nb + 1;
    if (status != 0) {
      out[(i - 1) * p.n + (j - 1)] = quiet_nan<T>();
    } else if (j >= g.first_col(i) && j <= g.last_col(i)) {
      out[(i - 1) * p.n + (j - 1)] = T(in[w.start[i + j] + i]);
    }
  }
}

// Series gradients from E (softdtw.h, SeriesPair): gx_i with one thread per
// row (sum over j), gy_j with one thread per column (sum over i). Grid
// (batch, blocks); rows past the lengths are the caller's.
template <class T>
__global__ void series_gradients_kernel(Problem p, SeriesSource<T> source, T* gx, T* gy, void* work,
                                        WorkLayout layout) {
  const int64_t b = blockIdx.x;
  const Diagonals g = p.pair(b);
  const PairWork w = pair_work(work, layout, b);
  const int64_t status = *w.status;
  if (status == 1) return;
  const SeriesPair<T> pair = source.pair(b);
  const double* E = w.arrays.A;
  const int64_t D = pair.D;
  const int64_t stride = int64_t(gridDim.y) * blockDim.x;
  const int64_t first = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  for (int64_t i = first + 1; gx && i <= g.mb; i += stride) {
    for (int64_t d = 0; d < D; ++d) {
      double acc = 0.0;
      for (int64_t j = g.first_col(i); status == 0 && j <= g.last_col(i); ++j) {
        const double e = E[w.start[i + j] + i];
        if (e != 0.0) acc += pair.template weight<LibMath>(e, i, j) * pair.difference(i, j, d);
      }
      gx[(b * p.m + (i - 1)) * D + d] = status == 0 ? T(acc) : quiet_nan<T>();
    }
  }
  for (int64_t j = first + 1; gy && j <= g.nb; j += stride) {
    for (int64_t d = 0; d < D; ++d) {
      double acc = 0.0;
      for (int64_t i = g.first_row(j); status == 0 && i <= g.last_row(j); ++i) {
        const double e = E[w.start[i + j] + i];
        if (e != 0.0) acc += pair.template weight<LibMath>(e, i, j) * pair.difference(i, j, d);
      }
      gy[(b * p.n + (j - 1)) * D + d] = status == 0 ? T(-acc) : quiet_nan<T>();
    }
  }
}

unsigned int blocks_for(int64_t items, int threads, int64_t cap) {
  const int64_t blocks = (items + threads - 1) / threads;
  return static_cast<unsigned int>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

// Runs the passes on a stream: setup, the forward tile diagonals, the
// finish kernel (value or tangent into `out`), and, with `backward`, the
// backward tile diagonals. A then holds E, D holds H Z.
template <bool Hard, class Source, class T>
void run_passes(const Problem& p, const Source& source, const T* Z, T* out, bool backward, Smoothing s, void* work,
                const WorkLayout& layout, cudaStream_t stream) {
  const auto batch = static_cast<unsigned int>(layout.batch);
  setup_kernel<<<batch, kPairThreads, 0, stream>>>(p, work, layout);
  check_launch("softdtw setup_kernel");
  const Tiles tiles = Tiles::of(p.m, p.n, kTile);
  for (int64_t t = 0; t < tiles.count(); ++t) {
    const dim3 grid(batch, static_cast<unsigned int>(tiles.last(t) - tiles.first(t) + 1));
    forward_tiles_kernel<Hard><<<grid, kThreads, 0, stream>>>(t, tiles.first(t), p, source, Z, s, work, layout);
    check_launch("softdtw forward_tiles_kernel");
  }
  // One thread per pair, no grid-stride loop: the grid is not capped below the batch.
  finish_forward_kernel<T><<<blocks_for(layout.batch, 256, INT32_MAX), 256, 0, stream>>>(p, out, Z != nullptr,
                                                                                        work, layout);
  check_launch("softdtw finish_forward_kernel");
  if (!backward) return;
  for (int64_t t = tiles.count() - 1; t >= 0; --t) {
    const dim3 grid(batch, static_cast<unsigned int>(tiles.last(t) - tiles.first(t) + 1));
    backward_tiles_kernel<Hard><<<grid, kThreads, 0, stream>>>(t, tiles.first(t), p, s, work, layout);
    check_launch("softdtw backward_tiles_kernel");
  }
}

// run_passes with the mode (hard or soft) chosen from gamma.
template <class Source, class T>
void run(const Problem& p, const Source& source, const T* Z, T* out, bool backward, double gamma, void* work,
         const WorkLayout& layout, cudaStream_t stream) {
  dispatch_bool(gamma == 0.0, [&](auto hard) {
    run_passes<decltype(hard)::value>(p, source, Z, out, backward, Smoothing::of(gamma), work, layout, stream);
  });
}

template <class T>
void store_matrix(const Problem& p, int which, T* M, void* work, const WorkLayout& layout, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned int>(layout.batch), blocks_for(p.m * p.n, 256, 1024));
  store_matrix_kernel<T><<<grid, 256, 0, stream>>>(p, which, M, work, layout);
  check_launch("softdtw store_matrix_kernel");
}

}  // namespace

int64_t cuda_work_bytes(int64_t batch, int64_t m, int64_t n, int64_t band, bool second_order) {
  return work_layout(batch, m, n, band, second_order).bytes();
}

void value_and_alignment_cuda(std::uintptr_t C, std::uintptr_t value, std::uintptr_t E, std::uintptr_t lengths_x,
                              std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, double gamma,
                              int64_t band, int dtype, std::uintptr_t work, int device, std::uintptr_t stream) {
  check_value_and_alignment(C, value, batch, m, n, dtype, {{"work", work}});
  if (batch == 0) return;
  DeviceGuard guard(device);
  const WorkLayout layout = work_layout(batch, m, n, band, false);
  const Problem p{as_ptr<const int64_t>(lengths_x), as_ptr<const int64_t>(lengths_y), m, n, band};
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const MatrixSource<T> source{as_ptr<const T>(C), m, n};
    run(p, source, static_cast<const T*>(nullptr), as_ptr<T>(value), E != 0, gamma, as_ptr<void>(work),
        layout, as_stream(stream));
    if (E) store_matrix(p, 0, as_ptr<T>(E), as_ptr<void>(work), layout, as_stream(stream));
  });
}

void series_cuda(std::uintptr_t x, std::uintptr_t y, std::uintptr_t value, std::uintptr_t gx, std::uintptr_t gy,
                 std::uintptr_t lengths_x, std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, int64_t D,
                 int cost, double gamma, int64_t band, int dtype, std::uintptr_t work, int device,
                 std::uintptr_t stream) {
  check_series(x, y, value, batch, m, n, D, cost, dtype, {{"work", work}});
  if (batch == 0) return;
  DeviceGuard guard(device);
  const WorkLayout layout = work_layout(batch, m, n, band, false);
  const Problem p{as_ptr<const int64_t>(lengths_x), as_ptr<const int64_t>(lengths_y), m, n, band};
  const bool grads = gx || gy;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const SeriesSource<T> source{as_ptr<const T>(x), as_ptr<const T>(y), m, n, D, cost};
    run(p, source, static_cast<const T*>(nullptr), as_ptr<T>(value), grads, gamma, as_ptr<void>(work), layout,
        as_stream(stream));
    if (!grads) return;
    const dim3 grid(static_cast<unsigned int>(batch), blocks_for(m > n ? m : n, 128, 64));
    series_gradients_kernel<T><<<grid, 128, 0, as_stream(stream)>>>(p, source, as_ptr<T>(gx), as_ptr<T>(gy),
                                                                     as_ptr<void>(work), layout);
    check_launch("softdtw series_gradients_kernel");
  });
}

void second_order_cuda(std::uintptr_t C, std::uintptr_t Z, std::uintptr_t jvp, std::uintptr_t E, std::uintptr_t HZ,
                       std::uintptr_t lengths_x, std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n,
                       double gamma, int64_t band, int dtype, std::uintptr_t work, int device,
                       std::uintptr_t stream) {
  check_second_order(C, Z, jvp, E, HZ, batch, m, n, dtype, {{"work", work}});
  if (batch == 0) return;
  DeviceGuard guard(device);
  const WorkLayout layout = work_layout(batch, m, n, band, true);
  const Problem p{as_ptr<const int64_t>(lengths_x), as_ptr<const int64_t>(lengths_y), m, n, band};
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const MatrixSource<T> source{as_ptr<const T>(C), m, n};
    run(p, source, as_ptr<const T>(Z), as_ptr<T>(jvp), true, gamma, as_ptr<void>(work), layout,
        as_stream(stream));
    store_matrix(p, 0, as_ptr<T>(E), as_ptr<void>(work), layout, as_stream(stream));
    store_matrix(p, 1, as_ptr<T>(HZ), as_ptr<void>(work), layout, as_stream(stream));
  });
}

}  // namespace softdtw
}  // namespace diffcomb
