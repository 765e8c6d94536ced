// CPU kernels of the perturb family: the batch is split over OpenMP threads
// (common/parallel.h); each row runs perturb.h's math.
#include <algorithm>
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

template <class T>
bool all_finite(const T* x, int64_t n) {
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) ok &= is_finite(x[i]);
  return ok;
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
    parallel_rows(rows, threads, 40 * nv, [&](int64_t begin, int64_t end) {
      GridScratch scratch;
      for (int64_t r = begin; r < end; ++r) {
        grid_row(ws + r * nv, os + r * nv, static_cast<int32_t>(h), static_cast<int32_t>(wd), scratch);
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
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j < m; ++j) {
            const double value = sign * double(cr[i * m + j]);
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
