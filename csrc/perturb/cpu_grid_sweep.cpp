// Grid shortest path on the CPU (SPEC.md 6.1 item 4): label-correcting
// Gauss-Seidel sweeps over 8 grids at once (one SIMD lane each), exact
// Dijkstra (cpu_grid.h) for the grids they do not settle in kMaxSweeps, and
// the entry point grid_shortest_path_cpu (api.h).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "../common/common.h"
#include "../common/parallel.h"
#include "api.h"
#include "checks.h"
#include "cpu_grid.h"
#include "cpu_util.h"
#include "perturb.h"

namespace diffcomb {
namespace perturb {
namespace {

// Dijkstra (cpu_grid.h) on one grid: the padded setup, the queue the weights
// allow, then perturb.h's backtrack on the labels of the settled vertices.
template <class T>
void grid_dijkstra(const T* w, T* out, int32_t H, int32_t Wd, GridScratch& g) {
  const int32_t nv = H * Wd;
  std::fill(out, out + nv, T(0));
  if (!all_finite(w, nv)) {
    fill_nan(out, nv);
    return;
  }
  const int32_t stride = Wd + 2, np = (H + 2) * stride;
  g.weight.resize(np);
  g.dist.assign(np, INFINITY);
  g.hops.assign(np, INT32_MAX / 2);
  g.state.assign(np, 2);
  g.heap.resize(np);
  for (int32_t i = 0; i < H; ++i) {
    for (int32_t j = 0; j < Wd; ++j) {
      const int32_t p = (i + 1) * stride + (j + 1);
      g.weight[p] = clamped_weight(w[i * Wd + j]);
      g.state[p] = 0;
    }
  }
  int32_t offset[8];
  for (int d = 0; d < 8; ++d) offset[d] = neighbour_di(d) * stride + neighbour_dj(d);
  const int32_t source = stride + 1, target = H * stride + Wd;
  // Bucket queue when the weights allow it (an upper bound of the target's
  // distance: the path along the first row, then the last column).
  double w_min = INFINITY, upper = 0.0;
  for (int32_t i = 0; i < H; ++i) {
    for (int32_t j = 0; j < Wd; ++j) {
      const double wv = g.weight[(i + 1) * stride + (j + 1)];
      w_min = wv < w_min ? wv : w_min;
      if (i == 0 || j == Wd - 1) upper += wv;
    }
  }
  if (!grid_buckets(offset, source, target, np, w_min, upper, g)) grid_heap(offset, source, target, g);
  const int8_t* state = g.state.data();
  const double* dist = g.dist.data();
  const int32_t* hops = g.hops.data();
  // Labels of settled vertices; the others never satisfy the backtrack's
  // equalities (their labels are not below the target's), so they stay infinite.
  g.out_dist.assign(nv, INFINITY);
  g.out_hops.assign(nv, INT32_MAX / 2);
  for (int32_t i = 0; i < H; ++i) {
    for (int32_t j = 0; j < Wd; ++j) {
      const int32_t p = (i + 1) * stride + (j + 1);
      if (state[p] == 2) {
        g.out_dist[i * Wd + j] = dist[p];
        g.out_hops[i * Wd + j] = hops[p];
      }
    }
  }
  backtrack_path(w, g.out_dist.data(), g.out_hops.data(), H, Wd, out);
}

// ---------------------------------------------------------------------------
// Label-correcting sweeps over several grids at once. kLanes instances are
// interleaved cell by cell (array[p * kLanes + lane], p a cell of the padded
// grid), so every step of a sweep is one SIMD operation over the instances.
// Distances only: dist[v] = min(dist[v], min over u of dist[u] + W[v]) applied
// in Gauss-Seidel order, alternating the row-major order (neighbours above and
// to the left) and its reverse. Floating-point addition is monotone, so any
// order of these updates started from infinity (dist[source] = W[source])
// reaches the same least fixed point as Dijkstra: the same doubles. After a
// sweep its own half of the neighbour constraints holds (each cell saw its
// predecessors' final values), so a lane whose sweep after the first one
// changes nothing is at the fixed point. Lanes still moving after kMaxSweeps
// fall back to Dijkstra (grid_dijkstra), which bounds the worst case (a maze).
// The hop counts of the (dist, hops) labels are needed only where the
// backtrack sees several tight neighbours (ties); they are then computed by a
// breadth-first search over the tight edges (dist[u] + W[v] == dist[v]),
// which gives the least hop count among the paths of least cost.

// kLanes instances per group, in kVecs vectors of kVecLanes doubles per
// cell (kVecs > 1 gives independent dependency chains along the row). On
// Zen 4, 30 x 30 grids: one vector of 8 is fastest (2 x 8 and 2 x 4 lanes are
// 10-20% slower: more memory per group, and a group waits for its slowest
// lane). kMaxSweeps: a sweep costs about 1/100 of a Dijkstra solve, so a grid
// that falls back has wasted under one solve.
constexpr int kVecLanes = 8;
constexpr int kVecs = 1;
constexpr int kLanes = kVecLanes * kVecs;
constexpr int kMaxSweeps = 64;

// kVecLanes lanes of one cell as a GCC vector (one AVX-512 register, two
// AVX2 or four SSE2 registers, depending on the clone). The helpers are
// always inlined into the clones, so no vector crosses a call (hence no
// -Wpsabi).
#pragma GCC diagnostic ignored "-Wpsabi"
typedef double LaneVec __attribute__((vector_size(kVecLanes * sizeof(double))));

__attribute__((always_inline)) inline LaneVec load_lanes(const double* p) {
  LaneVec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
__attribute__((always_inline)) inline LaneVec min_lanes(LaneVec a, LaneVec b) { return a < b ? a : b; }

// One sweep in row-major order (forward: above and left) or its reverse
// (backward: below and right) over the interior of a padded (H + 2) x (Wd + 2)
// grid. Returns the mask of the lanes where a distance changed to a value not
// above the lane's current distance of the target (bound): only vertices
// with distances up to the target's matter to the backtrack, and they get
// their final values from each other (a path's prefix costs no more).
// Rows are skipped when their inputs did not change (relevantly) since the
// last sweep in the same direction: before[i] and now[i] flag the rows i
// (padded indices) where the previous sweep and this one made such a change.
// Weights are stored in the input's precision (a float32 weight converts to
// the same double in the sweep as in Dijkstra), which halves their traffic.
typedef float LaneVecF __attribute__((vector_size(kVecLanes * sizeof(float))));
__attribute__((always_inline)) inline LaneVec load_weights(const double* p) { return load_lanes(p); }
__attribute__((always_inline)) inline LaneVec load_weights(const float* p) {
  LaneVecF v;
  std::memcpy(&v, p, sizeof v);
  return __builtin_convertvector(v, LaneVec);
}

template <class W>
__attribute__((always_inline)) inline uint32_t grid_sweep_impl(const W* w, double* d, int32_t h, int32_t wd,
                                                                bool forward, const uint8_t* before, uint8_t* now) {
  const int64_t stride = wd + 2;
  LaneVec bound[kVecs], fresh[kVecs], side[kVecs];  // fresh: the least value assigned by this sweep
  LaneVec infinite;
  for (int l = 0; l < kVecLanes; ++l) infinite[l] = INFINITY;
  for (int k = 0; k < kVecs; ++k) {
    bound[k] = load_lanes(d + (int64_t(h) * stride + wd) * kLanes + k * kVecLanes);
    fresh[k] = infinite;
  }
  // Neighbours in the previous row of the sweep (three) and in the same row (one).
  const int64_t row_off = (forward ? -stride : stride) * kLanes;
  const int64_t step = forward ? kLanes : -kLanes;
  for (int32_t r = 0; r < h; ++r) {
    const int64_t i = forward ? r + 1 : h - r;
    const int64_t ip = forward ? i - 1 : i + 1;
    now[i] = 0;
    if (!(before[i] | before[ip] | now[ip])) continue;
    LaneVec row_fresh[kVecs];
    for (int k = 0; k < kVecs; ++k) row_fresh[k] = infinite;
    const int64_t start = (forward ? i * stride + 1 : i * stride + wd) * kLanes;
    for (int k = 0; k < kVecs; ++k) side[k] = load_lanes(d + start - step + k * kVecLanes);
    int64_t p = start;
    for (int32_t c = 0; c < wd; ++c, p += step) {
      for (int k = 0; k < kVecs; ++k) {
        const int64_t q = p + k * kVecLanes;
        const double* prev = d + q + row_off;
        const LaneVec above = min_lanes(min_lanes(load_lanes(prev - kLanes), load_lanes(prev)),
                                        load_lanes(prev + kLanes));
        const LaneVec wv = load_weights(w + q);
        const LaneVec old = load_lanes(d + q);
        const LaneVec v = min_lanes(side[k] + wv, min_lanes(above + wv, old));
        row_fresh[k] = min_lanes(row_fresh[k], v < old ? v : infinite);
        std::memcpy(d + q, &v, sizeof v);
        side[k] = v;
      }
    }
    bool moved = false;
    for (int k = 0; k < kVecs; ++k) {
      fresh[k] = min_lanes(fresh[k], row_fresh[k]);
      for (int l = 0; l < kVecLanes; ++l) moved |= row_fresh[k][l] <= bound[k][l];
    }
    now[i] = moved;
  }
  uint32_t mask = 0;
  for (int k = 0; k < kVecs; ++k) {
    for (int l = 0; l < kVecLanes; ++l) mask |= fresh[k][l] <= bound[k][l] ? (1u << (k * kVecLanes + l)) : 0u;
  }
  return mask;
}

DC_SIMD_CLONES uint32_t grid_sweep(const double* w, double* d, int32_t h, int32_t wd, bool forward,
                                   const uint8_t* before, uint8_t* now) {
  return grid_sweep_impl(w, d, h, wd, forward, before, now);
}
DC_SIMD_CLONES uint32_t grid_sweep(const float* w, double* d, int32_t h, int32_t wd, bool forward,
                                   const uint8_t* before, uint8_t* now) {
  return grid_sweep_impl(w, d, h, wd, forward, before, now);
}

struct SweepScratch {
  std::vector<double> weight64, dist;  // (np, kLanes) interleaved
  std::vector<float> weight32;
  std::vector<int32_t> hops, queue;  // one lane's hop counts (np), BFS queue
  std::vector<uint8_t> rows_before, rows_now;  // grid_sweep's row flags
  GridScratch fallback;
};

// Least hop counts over tight edges from the source, for lane l (hops: -1 on
// the border, 0 for unreached, else the count of vertices on the path).
template <class W>
inline void tight_hops(const W* w, const double* d, int l, const int32_t* offset, int32_t source,
                       int32_t h, int32_t wd, SweepScratch& s) {
  const int32_t stride = wd + 2, np = (h + 2) * stride;
  s.hops.assign(np, -1);
  for (int32_t i = 1; i <= h; ++i) std::fill(s.hops.begin() + i * stride + 1, s.hops.begin() + i * stride + wd + 1, 0);
  s.queue.resize(np);
  int32_t* hops = s.hops.data();
  int32_t* queue = s.queue.data();
  int32_t head = 0, tail = 0;
  hops[source] = 1;
  queue[tail++] = source;
  while (head < tail) {
    const int32_t v = queue[head++];
    const double dv = d[int64_t(v) * kLanes + l];
    for (int k = 0; k < 8; ++k) {
      const int32_t u = v + offset[k];
      if (hops[u] != 0) continue;
      if (dv + double(w[int64_t(u) * kLanes + l]) == d[int64_t(u) * kLanes + l]) {
        hops[u] = hops[v] + 1;
        queue[tail++] = u;
      }
    }
  }
}

// SPEC.md 6.1.4's backtrack on lane l's fixed-point distances (perturb.h,
// backtrack_path): the first neighbour u in the fixed order with
// dist[u] + W[v] == dist[v] and hops[u] + 1 == hops[v]. While the tight
// neighbour is unique, it is that one and the hop counts are not needed.
template <class T, class W>
void sweep_backtrack(const W* w, const double* d, int l, const int32_t* offset, int32_t h, int32_t wd, T* out,
                     SweepScratch& s) {
  const int32_t stride = wd + 2, source = stride + 1, target = h * stride + wd;
  auto mark = [&](int32_t p) { out[(p / stride - 1) * wd + (p % stride - 1)] = T(1); };
  int32_t v = target;
  mark(v);
  while (v != source) {
    const double wv = double(w[int64_t(v) * kLanes + l]), dv = d[int64_t(v) * kLanes + l];
    int32_t next = -1, count = 0;
    for (int k = 0; k < 8; ++k) {
      const int32_t u = v + offset[k];
      const bool tight = d[int64_t(u) * kLanes + l] + wv == dv;
      next = (tight && next < 0) ? u : next;
      count += tight ? 1 : 0;
    }
    if (count != 1) break;
    v = next;
    mark(v);
  }
  if (v == source) return;
  // A tie: the full rule with hop counts, from the target again.
  tight_hops(w, d, l, offset, source, h, wd, s);
  const int32_t* hops = s.hops.data();
  std::fill(out, out + int64_t(h) * wd, T(0));
  v = target;
  mark(v);
  while (v != source) {
    const double wv = double(w[int64_t(v) * kLanes + l]), dv = d[int64_t(v) * kLanes + l];
    int32_t next = -1;
    for (int k = 0; k < 8 && next < 0; ++k) {
      const int32_t u = v + offset[k];
      if (hops[u] > 0 && hops[u] + 1 == hops[v] && d[int64_t(u) * kLanes + l] + wv == dv) next = u;
    }
    if (next < 0) return;  // unreachable with consistent labels
    v = next;
    mark(v);
  }
}

inline std::vector<double>& weights_of(SweepScratch& s, double) { return s.weight64; }
inline std::vector<float>& weights_of(SweepScratch& s, float) { return s.weight32; }

// Rows [first, first + count) (count <= kLanes) of the batch.
template <class T>
void grid_group(const T* ws, T* os, int64_t first, int count, int32_t h, int32_t wd, SweepScratch& s) {
  const int64_t nv = int64_t(h) * wd;
  const int32_t stride = wd + 2, np = (h + 2) * stride, source = stride + 1;
  std::vector<T>& weight = weights_of(s, T{});
  weight.resize(int64_t(np) * kLanes);  // the border and unused lanes are never read
  s.dist.assign(int64_t(np) * kLanes, INFINITY);
  T* w = weight.data();
  double* d = s.dist.data();
  uint32_t active = 0;
  for (int l = 0; l < count; ++l) {
    const T* wr = ws + (first + l) * nv;
    T* orow = os + (first + l) * nv;
    std::fill(orow, orow + nv, T(0));
    if (!all_finite(wr, nv)) {
      fill_nan(orow, nv);
      continue;
    }
    active |= 1u << l;
    for (int32_t i = 0; i < h; ++i) {
      for (int32_t j = 0; j < wd; ++j) {
        w[(int64_t(i + 1) * stride + j + 1) * kLanes + l] = T(clamped_weight(wr[i * wd + j]));
      }
    }
  }
  if (active == 0) return;
  for (int l = 0; l < kLanes; ++l) d[int64_t(source) * kLanes + l] = double(w[int64_t(source) * kLanes + l]);
  s.rows_before.assign(h + 2, 0);
  s.rows_now.assign(h + 2, 0);
  std::fill(s.rows_before.begin() + 1, s.rows_before.end() - 1, 1);
  uint8_t* before = s.rows_before.data();
  uint8_t* now = s.rows_now.data();
  uint32_t converged = ~active & ((1u << kLanes) - 1);
  for (int sweep = 0; sweep < kMaxSweeps && converged != (1u << kLanes) - 1; ++sweep) {
    const uint32_t changed = grid_sweep(w, d, h, wd, sweep % 2 == 0, before, now);
    std::swap(before, now);
    if (sweep > 0) converged |= ~changed & ((1u << kLanes) - 1);
  }
  int32_t offset[8];
  for (int k = 0; k < 8; ++k) offset[k] = neighbour_di(k) * stride + neighbour_dj(k);
  for (int l = 0; l < count; ++l) {
    if (!(active >> l & 1u)) continue;
    T* orow = os + (first + l) * nv;
    if (converged >> l & 1u) {
      sweep_backtrack(w, d, l, offset, h, wd, orow, s);
    } else {
      grid_dijkstra(ws + (first + l) * nv, orow, h, wd, s.fallback);
    }
  }
}

}  // namespace

void grid_shortest_path_cpu(std::uintptr_t w, std::uintptr_t out, int64_t rows, int64_t h, int64_t wd, int dtype,
                            int threads) {
  check_grid(w, out, rows, h, wd, dtype);
  if (rows == 0 || h == 0 || wd == 0) return;
  const int64_t nv = h * wd;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* ws = as_ptr<const T>(w);
    T* os = as_ptr<T>(out);
    const int64_t groups = (rows + kLanes - 1) / kLanes;
    // Cost: about 8 ns per vertex and grid on one core.
    parallel_rows(groups, threads, 8 * kLanes * nv, [&](int64_t begin, int64_t end) {
      SweepScratch scratch;
      for (int64_t g = begin; g < end; ++g) {
        const int count = static_cast<int>(std::min<int64_t>(kLanes, rows - g * kLanes));
        grid_group(ws, os, g * kLanes, count, static_cast<int32_t>(h), static_cast<int32_t>(wd), scratch);
      }
    });
  });
}

}  // namespace perturb
}  // namespace diffcomb
