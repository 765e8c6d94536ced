// CPU kernels of the perturb family: the batch is split over OpenMP threads
// (common/parallel.h); each row runs perturb.h's math.
#include <algorithm>
#include <cstring>
#include <cstdint>
#include <queue>
#include <utility>
#include <vector>

#include "../common/common.h"
#include "../common/parallel.h"
#include "../common/radix_sort.h"
#include "api.h"
#include "perturb.h"

namespace diffcomb {
namespace perturb {
namespace {

template <class T>
T* as_ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

// x - x is 0 for finite x and NaN for inf and NaN: a loop the compiler vectorizes.
template <class T>
bool all_finite(const T* x, int64_t n) {
  int bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= !(x[i] - x[i] == T(0));
  return bad == 0;
}

template <class T>
void fill_nan(T* out, int64_t n) {
  std::fill(out, out + n, quiet_nan<T>());
}

// Dijkstra on (dist, hops) labels (perturb.h, grid section) with an indexed
// binary heap (decrease-key, no stale entries) on a grid padded by one ring of
// blocked cells, so the neighbour loop has no bounds checks.

// Min-heap of (dist, hops, vertex) entries stored inline. Vertex weights make
// a vertex's label final when it is first reached: every later candidate
// comes from a vertex settled later, whose label is not smaller, plus the same
// weight. So each vertex is pushed once and there is no decrease-key. Pops
// use the bottom-up sift (move the hole to a leaf along the smaller children,
// then sift the last entry up), which saves comparisons.
struct HeapEntry {
  double dist;
  int32_t hops;
  int32_t v;
};

struct LabelHeap {
  HeapEntry* heap;
  int32_t size = 0;

  static bool less(const HeapEntry& a, const HeapEntry& b) { return label_less(a.dist, a.hops, b.dist, b.hops); }
  void sift_up(int32_t at, const HeapEntry& e) {
    while (at > 0) {
      const int32_t parent = (at - 1) / 2;
      if (!less(e, heap[parent])) break;
      heap[at] = heap[parent];
      at = parent;
    }
    heap[at] = e;
  }
  void push(const HeapEntry& e) { sift_up(size++, e); }
  HeapEntry pop() {
    const HeapEntry top = heap[0];
    const HeapEntry last = heap[--size];
    if (size == 0) return top;
    int32_t at = 0;
    while (true) {
      int32_t child = 2 * at + 1;
      if (child >= size) break;
      if (child + 1 < size && less(heap[child + 1], heap[child])) ++child;
      heap[at] = heap[child];
      at = child;
    }
    sift_up(at, last);
    return top;
  }
};

struct GridScratch {
  std::vector<double> weight, dist, out_dist;
  std::vector<int32_t> hops, out_hops, bucket_head, entry_next, entry_vertex;
  std::vector<HeapEntry> heap;
  std::vector<int8_t> state;  // 0 unseen, 1 reached, 2 settled or blocked
};

// Bucketed Dijkstra (Dinitz): with every weight >= w_min > 0, buckets of width
// delta = w_min / 2 hold vertices whose labels cannot improve each other (an
// improvement adds at least w_min, i.e. two buckets even after rounding), so
// buckets are settled in order and the vertices of one bucket in any order.
// A vertex may be reached again from a later-settled vertex of an earlier
// bucket with a smaller label: it is then relabelled and re-queued (stale
// entries are skipped). Returns false (and changes nothing) when the bucket count
// would exceed a few per vertex; the caller then uses the heap.
inline bool grid_buckets(const int32_t* offset, int32_t source, int32_t target, int32_t np, double w_min,
                         double upper, GridScratch& g) {
  if (!(w_min > 0.0)) return false;
  const double inv_delta = 2.0 / w_min;
  const double nb = upper * inv_delta + 2.0;
  if (!(nb < 8.0 * np)) return false;
  const int64_t nbuckets = static_cast<int64_t>(nb) + 1;
  g.bucket_head.assign(nbuckets, -1);
  g.entry_next.resize(8 * int64_t(np) + 1);
  g.entry_vertex.resize(8 * int64_t(np) + 1);
  double* dist = g.dist.data();
  int32_t* hops = g.hops.data();
  int8_t* state = g.state.data();
  const double* weight = g.weight.data();
  int32_t* head = g.bucket_head.data();
  int32_t* next = g.entry_next.data();
  int32_t* vertex = g.entry_vertex.data();
  int32_t entries = 0;
  auto bucket_of = [&](double d) { return static_cast<int64_t>(d * inv_delta); };
  auto enqueue = [&](int32_t v) {
    const int64_t b = bucket_of(dist[v]);
    if (b >= nbuckets) return;  // beyond the bound on the target's distance: never needed
    vertex[entries] = v;
    next[entries] = head[b];
    head[b] = entries++;
  };
  dist[source] = weight[source];
  hops[source] = 1;
  state[source] = 1;
  enqueue(source);
  // Blocked border cells are never relaxed, but the branch-free loop reads their weight.
  for (int32_t p = 0; p < np; ++p) {
    if (state[p] == 2) g.weight[p] = 0.0;
  }
  for (int64_t b = 0; b < nbuckets; ++b) {
    for (int32_t e = head[b]; e >= 0;) {
      const int32_t v = vertex[e];
      e = next[e];
      if (state[v] == 2 || bucket_of(dist[v]) != b) continue;  // settled, or a stale entry
      state[v] = 2;
      if (v == target) return true;
      const double dv = dist[v];
      const int32_t hv = hops[v] + 1;
      // Branch-free relaxation (the outcomes are data-dependent coin flips): an
      // improved neighbour is relabelled and appended to its bucket; otherwise
      // the same values are written back. At most 8 entries per settled vertex:
      // the arrays hold 8 np + 1.
      for (int d = 0; d < 8; ++d) {
        const int32_t u = v + offset[d];
        const int8_t su = state[u];
        const double cand = dv + weight[u];
        const double du = dist[u];
        const int32_t hu = hops[u];
        const bool better = (cand < du) | ((cand == du) & (hv < hu));
        const bool improve = (su == 0) | ((su == 1) & better);
        dist[u] = improve ? cand : du;
        hops[u] = improve ? hv : hu;
        state[u] = improve ? int8_t(1) : su;
        const int64_t raw = bucket_of(improve ? cand : 0.0);
        const bool queued = improve & (raw < nbuckets);
        const int64_t b = queued ? raw : 0;
        vertex[entries] = u;
        next[entries] = head[b];
        head[b] = queued ? entries : head[b];
        entries += queued ? 1 : 0;
      }
    }
  }
  return true;
}

// Binary-heap Dijkstra (any weights >= 0, zeros included).
inline void grid_heap(const int32_t* offset, int32_t source, int32_t target, GridScratch& g) {
  double* dist = g.dist.data();
  int32_t* hops = g.hops.data();
  int8_t* state = g.state.data();
  const double* weight = g.weight.data();
  LabelHeap heap{g.heap.data()};
  dist[source] = weight[source];
  hops[source] = 1;
  state[source] = 1;
  heap.push({dist[source], 1, source});
  while (heap.size > 0) {
    const int32_t v = heap.pop().v;
    state[v] = 2;
    if (v == target) return;
    const double dv = dist[v];
    const int32_t hv = hops[v] + 1;
    for (int d = 0; d < 8; ++d) {
      const int32_t u = v + offset[d];
      if (state[u] != 0) continue;  // settled, blocked, or already reached (its label is final)
      dist[u] = dv + weight[u];
      hops[u] = hv;
      state[u] = 1;
      heap.push({dist[u], hv, u});
    }
  }
}

template <class T>
void grid_row(const T* w, T* out, int32_t H, int32_t Wd, GridScratch& g) {
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
// fall back to Dijkstra (grid_row), which bounds the worst case (a maze).
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

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DC_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DC_SIMD_CLONES
#endif

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
      grid_row(ws + (first + l) * nv, orow, h, wd, s.fallback);
    }
  }
}

}  // namespace

void noise_cpu(std::uintptr_t seed, std::uintptr_t out, int64_t numel, int kind, double k, double tau, int64_t s,
               int dtype, int threads) {
  if (numel == 0) return;
  const uint64_t key = static_cast<uint64_t>(*as_ptr<const int64_t>(seed));
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* o = as_ptr<T>(out);
    const int64_t group = noise_group_size<T>(kind);
    const int64_t groups = (numel + group - 1) / group;
    const int64_t cost = kind == kSumOfGamma ? 40 * s : 8;
    parallel_rows(groups, threads, cost, [&](int64_t begin, int64_t end) {
      T values[4];
      for (int64_t q = begin; q < end; ++q) {
        noise_group<T>(kind, key, static_cast<uint64_t>(q), k, tau, static_cast<int32_t>(s), values);
        const int64_t first = q * group;
        const int64_t count = numel - first < group ? numel - first : group;
        for (int64_t l = 0; l < count; ++l) o[first + l] = values[l];
      }
    });
  });
}

void argmax_onehot_cpu(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int dtype, int threads) {
  if (rows == 0 || n == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* xs = as_ptr<const T>(x);
    T* os = as_ptr<T>(out);
    parallel_rows(rows, threads, n, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* xr = xs + r * n;
        T* orow = os + r * n;
        std::fill(orow, orow + n, T(0));
        if (!all_finite(xr, n)) {
          fill_nan(orow, n);
          continue;
        }
        int64_t best = 0;
        for (int64_t i = 1; i < n; ++i) {
          if (xr[i] > xr[best]) best = i;
        }
        orow[best] = T(1);
      }
    });
  });
}

// Top-k of one row. Small k: one pass that keeps the k first elements of the
// stable descending order in a sorted buffer (most elements fail the test
// against the current k-th and cost one comparison). Large k: nth_element.
template <class T>
void topk_row(const T* x, T* out, int64_t n, int64_t k, std::vector<int32_t>& index, std::vector<T>& best) {
  std::fill(out, out + n, T(0));
  if (!all_finite(x, n)) {
    fill_nan(out, n);
    return;
  }
  if (k == 0) return;
  if (k * 16 <= n) {
    int64_t count = 0;
    for (int32_t i = 0; i < n; ++i) {
      const T v = x[i];
      if (count == k && !(v > best[k - 1])) continue;  // ties lose to earlier indices
      int64_t pos = count < k ? count++ : k - 1;
      while (pos > 0 && v > best[pos - 1]) {
        best[pos] = best[pos - 1];
        index[pos] = index[pos - 1];
        --pos;
      }
      best[pos] = v;
      index[pos] = i;
    }
  } else {
    for (int32_t i = 0; i < n; ++i) index[i] = i;
    auto first = [&](int32_t a, int32_t b) { return before(x[a], a, x[b], b); };
    if (k < n) std::nth_element(index.begin(), index.begin() + (k - 1), index.begin() + n, first);
  }
  for (int64_t i = 0; i < k; ++i) out[index[i]] = T(1);
}

void topk_mask_cpu(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int64_t k, int dtype,
                   int threads) {
  if (rows == 0 || n == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* xs = as_ptr<const T>(x);
    T* os = as_ptr<T>(out);
    parallel_rows(rows, threads, 2 * n, [&](int64_t begin, int64_t end) {
      std::vector<int32_t> index(n);
      std::vector<T> best(n);
      for (int64_t r = begin; r < end; ++r) topk_row(xs + r * n, os + r * n, n, k, index, best);
    });
  });
}

void ranks_cpu(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t n, int dtype, int threads) {
  if (rows == 0 || n == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* xs = as_ptr<const T>(x);
    T* os = as_ptr<T>(out);
    parallel_rows(rows, threads, 8 * n, [&](int64_t begin, int64_t end) {
      ArgsortScratch<T> scratch;
      std::vector<T> sorted(n);
      std::vector<int32_t> perm(n);
      for (int64_t r = begin; r < end; ++r) {
        const T* xr = xs + r * n;
        T* orow = os + r * n;
        if (!all_finite(xr, n)) {
          fill_nan(orow, n);
          continue;
        }
        // Stable descending order of -x = stable ascending order of x.
        argsort_descending_row(xr, T(-1), static_cast<int32_t>(n), sorted.data(), perm.data(), scratch);
        for (int32_t p = 0; p < n; ++p) orow[perm[p]] = T(p + 1);
      }
    });
  });
}

void grid_shortest_path_cpu(std::uintptr_t w, std::uintptr_t out, int64_t rows, int64_t h, int64_t wd, int dtype,
                            int threads) {
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

void linear_assignment_cpu(std::uintptr_t cost, std::uintptr_t out, int64_t rows, int64_t n, int64_t m,
                           bool maximize, int dtype, int threads) {
  if (rows == 0 || n == 0 || m == 0) return;
  const bool transpose = n > m;
  const int32_t nr = static_cast<int32_t>(transpose ? m : n), nc = static_cast<int32_t>(transpose ? n : m);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* cs = as_ptr<const T>(cost);
    T* os = as_ptr<T>(out);
    parallel_rows(rows, threads, n * m * std::min(n, m), [&](int64_t begin, int64_t end) {
      std::vector<double> c(int64_t(nr) * nc), u(nr + 1), v(nc + 1), minv(nc + 1);
      std::vector<int32_t> p(nc + 1), way(nc + 1), col(nr);
      std::vector<int8_t> used(nc + 1);
      const AssignmentState state{u.data(), v.data(), minv.data(), p.data(), way.data(), used.data()};
      const double sign = maximize ? -1.0 : 1.0;
      for (int64_t r = begin; r < end; ++r) {
        const T* cr = cs + r * n * m;
        T* orow = os + r * n * m;
        std::fill(orow, orow + n * m, T(0));
        if (!all_finite(cr, n * m)) {
          fill_nan(orow, n * m);
          continue;
        }
        bool huge = false;
        for (int64_t e = 0; e < n * m; ++e) huge |= assignment_huge(double(cr[e]));
        const double factor = huge ? sign * kAssignmentScale : sign;
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j < m; ++j) {
            const double value = factor * double(cr[i * m + j]);
            if (transpose) {
              c[j * n + i] = value;
            } else {
              c[i * m + j] = value;
            }
          }
        }
        solve_assignment(c.data(), nr, nc, state, col.data());
        for (int32_t i = 0; i < nr; ++i) {
          if (transpose) {
            orow[int64_t(col[i]) * m + i] = T(1);
          } else {
            orow[int64_t(i) * m + col[i]] = T(1);
          }
        }
      }
    });
  });
}

}  // namespace perturb
}  // namespace diffcomb
