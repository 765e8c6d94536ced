// Small soft-DTW problems on series: groups of pairs interleaved along the
// diagonals (layout.h, Arrays::lanes).
//
// The per-pair sweeps of cpu.cpp vectorize along one anti-diagonal, which
// for a short pair (16 x 16: diagonals of 1 to 16 cells, 8 on average) is
// mostly vector prologues, scalar remainders and a call per diagonal and
// pair. Here up to kMaxLanes pairs of one m x n geometry (no per-pair
// lengths; one band) share one layout in which cell i of diagonal k of pair
// l is at (start[k] + i) * lanes + l: a diagonal of the whole group is one
// contiguous run, swept by the same vector loops (cpu_rows.h) and cell steps
// (softdtw.h) as a single pair, lanes times longer.
//
// Every cell gets the formulas of cpu.cpp's sweeps on the same values, and
// the gradients are summed in the same order, so a pair's value and
// gradients match series_cpu's per-pair path to rounding (an ulp where a
// compiler contracts a product into an FMA in one loop and not the other).
// Groups run on the calling thread below a work threshold (parallel_rows).
#include <algorithm>
#include <vector>

#include "../common/common.h"
#include "../common/parallel.h"
#include "cpu_rows.h"
#include "lanes.h"
#include "layout.h"
#include "softdtw.h"

namespace diffcomb {
namespace softdtw {
namespace {

// Pairs per group: a 16 x 16 diagonal of a full group is 16 vectors of 8 doubles.
constexpr int64_t kMaxLanes = 8;

// One group's arrays (layout.h) and its steps in double, kept per thread between calls (at most
// kLaneCells cells per pair). The steps are stored feature-major, those of y reversed within each
// step: X[(d * m + i - 1) * w + l] = x_l[i][d] and Y[(d * n + j - 1) * w + w - 1 - l] = y_l[j][d]
// (w lanes, pair l). Along diagonal k, cell i of pair l has the steps' index t = i * w + l
// (softdtw.h), its x at X[d * m * w - w + t] and its y at Y[d * n * w + k * w - 1 - t]: both
// contiguous in t, so every loop below is one vector loop along a diagonal of the group. GX, GY
// (the gradients) are laid out as X, Y; run holds per-cell values of one diagonal (index t).
struct Group {
  std::vector<double> A, B, X, Y, GX, GY, run;
  std::vector<int64_t> start;
};

Group& group_scratch() {
  thread_local Group group;
  return group;
}

// The steps of feature d on diagonal k, indexed by t (see Group).
struct Steps {
  const double* x;
  const double* y;
  DC_STEP_INLINE static Steps of(const double* X, const double* Y, int64_t m, int64_t n, int64_t w, int64_t k,
                                 int64_t d) {
    return {X + d * m * w - w, Y + d * n * w + k * w - 1};
  }
  DC_STEP_INLINE double difference(int64_t t) const { return x[t] - y[-t]; }
};

// h[t] = |x_i - y_j|^2 / 2 (softdtw.h half_sq) of the cells t0 <= t <= t1 of diagonal k.
DC_STEP_INLINE void half_sq_run(const Group& q, const Diagonals& g, int64_t D, int64_t w, int64_t k, int64_t t0,
                                int64_t t1, double* h) {
#pragma omp simd
  for (int64_t t = t0; t <= t1; ++t) h[t] = 0.0;
  for (int64_t d = 0; d < D; ++d) {
    const Steps steps = Steps::of(q.X.data(), q.Y.data(), g.mb, g.nb, w, k, d);
#pragma omp simd
    for (int64_t t = t0; t <= t1; ++t) {
      const double diff = steps.difference(t);
      h[t] += diff * diff;
    }
  }
#pragma omp simd
  for (int64_t t = t0; t <= t1; ++t) h[t] *= 0.5;
}

// The costs of the used cells into B (cpu.cpp load_series); poison becomes NaN when a cost
// is not finite (the caller finds the pair).
template <int Kind>
DC_STEP_INLINE bool load_costs(const Diagonals& g, const Arrays& a, const Group& q, int64_t D) {
  const int64_t w = a.lanes;
  double poison = 0.0;
  for (int64_t k = 2; k <= g.last(); ++k) {
    double* b = a.B + a.start[k] * w;
    const int64_t t0 = g.lo(k) * w, t1 = g.hi(k) * w + w - 1;
    half_sq_run(q, g, D, w, k, t0, t1, b);
#pragma omp simd reduction(+ : poison)
    for (int64_t t = t0; t <= t1; ++t) {
      const double c = step_cost<VecMath>(b[t], Kind);
      b[t] = c;
      poison += c * 0.0;
    }
  }
  return poison == 0.0;
}

// The gradients from E in A into GX, GY (cpu.cpp store_series_gradients, softdtw.h SeriesPair::weight:
// the same sums in the same order, for every pair of the group).
template <int Kind>
DC_STEP_INLINE void lane_gradients(const Diagonals& g, const Arrays& a, Group& q, int64_t D) {
  const int64_t w = a.lanes;
  std::fill(q.GX.begin(), q.GX.end(), 0.0);
  std::fill(q.GY.begin(), q.GY.end(), 0.0);
  double* weight = q.run.data();
  for (int64_t k = 2; k <= g.last(); ++k) {
    const double* e = a.A + a.start[k] * w;
    const int64_t t0 = g.lo(k) * w, t1 = g.hi(k) * w + w - 1;
    if (Kind == kCostLogAugmented) half_sq_run(q, g, D, w, k, t0, t1, weight);
#pragma omp simd
    for (int64_t t = t0; t <= t1; ++t) {
      weight[t] = e[t] * step_cost_factor<VecMath>(Kind == kCostLogAugmented ? weight[t] : 0.0, Kind);
    }
    for (int64_t d = 0; d < D; ++d) {
      const Steps steps = Steps::of(q.X.data(), q.Y.data(), g.mb, g.nb, w, k, d);
      double* gx = q.GX.data() + d * g.mb * w - w;
      double* gy = q.GY.data() + d * g.nb * w + k * w - 1;
#pragma omp simd
      for (int64_t t = t0; t <= t1; ++t) {
        const double v = weight[t] * steps.difference(t);
        gx[t] += v;
        gy[-t] -= v;
      }
    }
  }
}

// The cost-dependent loops, compiled per instruction set with every call inlined (the cell
// functions and vmath's exp and log must be, to vectorize across the lanes).
#if defined(__GNUC__)
#define DC_FLATTEN __attribute__((flatten))
#else
#define DC_FLATTEN
#endif

DC_SIMD_CLONES DC_FLATTEN bool load_group(const Diagonals& g, const Arrays& a, const Group& q, int64_t D, int kind) {
  if (kind == kCostSqEuclidean) return load_costs<kCostSqEuclidean>(g, a, q, D);
  if (kind == kCostHalfSqEuclidean) return load_costs<kCostHalfSqEuclidean>(g, a, q, D);
  return load_costs<kCostLogAugmented>(g, a, q, D);
}

DC_SIMD_CLONES DC_FLATTEN void gradients_group(const Diagonals& g, const Arrays& a, Group& q, int64_t D, int kind) {
  if (kind == kCostSqEuclidean) {
    lane_gradients<kCostSqEuclidean>(g, a, q, D);
  } else if (kind == kCostHalfSqEuclidean) {
    lane_gradients<kCostHalfSqEuclidean>(g, a, q, D);
  } else {
    lane_gradients<kCostLogAugmented>(g, a, q, D);
  }
}

// A series s (steps, D) into lane `lane` of the feature-major layout of Group.
template <class T>
void interleave(const T* s, int64_t steps, int64_t D, int64_t w, int64_t lane, double* out) {
  for (int64_t i = 0; i < steps; ++i) {
    for (int64_t d = 0; d < D; ++d) out[(d * steps + i) * w + lane] = double(s[i * D + d]);
  }
}

// The inverse of interleave, into the gradient g (steps, D); NaN unless ok.
template <class T>
void deinterleave(const double* in, int64_t steps, int64_t D, int64_t w, int64_t lane, bool ok, T* g) {
  for (int64_t i = 0; i < steps; ++i) {
    for (int64_t d = 0; d < D; ++d) g[i * D + d] = ok ? T(in[(d * steps + i) * w + lane]) : quiet_nan<T>();
  }
}

// After load_costs found a non-finite cost: bad[l] for the pairs that have one.
void poisoned_lanes(const Diagonals& g, const Arrays& a, bool* bad) {
  for (int64_t k = 2; k <= g.last(); ++k) {
    for (int64_t t = g.lo(k) * a.lanes; t <= g.hi(k) * a.lanes + a.lanes - 1; ++t) {
      if (!is_finite(a.B[a.start[k] * a.lanes + t])) bad[t % a.lanes] = true;
    }
  }
}

// Pairs [b0, b0 + lanes) of the batch: values and, when gx or gy is not null, gradients (as
// cpu.cpp solve_series: NaN for a pair with a non-finite cost; NaN gradients where the value
// is not finite).
template <class T>
void solve_group(const Diagonals& g, const T* x, const T* y, T* value, T* gx, T* gy, int64_t b0, int64_t lanes,
                 int64_t D, int kind, Smoothing s) {
  Group& q = group_scratch();
  const int64_t m = g.mb, n = g.nb, w = lanes;
  q.start.resize(g.last() + 2);
  const int64_t size = g.layout(q.start.data());
  q.A.resize(size * w);
  q.B.resize(size * w);
  q.X.resize(m * D * w);
  q.Y.resize(n * D * w);
  const Arrays a{q.A.data(), q.B.data(), nullptr, nullptr, q.start.data(), w};
  for (int64_t k = 0; k <= g.last() + 1; ++k) set_pads(a, g, k);
  set_origin(a);
  for (int64_t l = 0; l < w; ++l) {  // the steps in the layout of Group
    interleave(x + (b0 + l) * m * D, m, D, w, l, q.X.data());
    interleave(y + (b0 + l) * n * D, n, D, w, w - 1 - l, q.Y.data());
  }
  bool bad[kMaxLanes] = {};
  if (!load_group(g, a, q, D, kind)) poisoned_lanes(g, a, bad);
  const bool hard = s.gamma == 0.0;
  const RowsFn fwd = hard ? forward_hard_lanes : forward_soft_lanes;
  for (int64_t k = 2; k <= g.last(); ++k) fwd(a, s, k, g.lo(k) * w, g.hi(k) * w + w - 1);
  double ends[kMaxLanes];
  bool finite = false;
  for (int64_t l = 0; l < w; ++l) {
    ends[l] = bad[l] ? NAN : finish_forward(a, g, l).value;
    value[b0 + l] = T(ends[l]);
    finite = finite || is_finite(ends[l]);
  }
  if (!(gx || gy) || !finite) {
    for (int64_t l = 0; l < w && (gx || gy); ++l) {
      if (gx) std::fill_n(gx + (b0 + l) * m * D, m * D, quiet_nan<T>());
      if (gy) std::fill_n(gy + (b0 + l) * n * D, n * D, quiet_nan<T>());
    }
    return;
  }
  const RowsFn bwd = hard ? backward_hard_lanes : backward_soft_lanes;
  for (int64_t k = g.last() - 1; k >= 2; --k) bwd(a, s, k, g.lo(k) * w, g.hi(k) * w + w - 1);
  q.GX.resize(m * D * w);
  q.GY.resize(n * D * w);
  q.run.resize((m + 1) * w);
  gradients_group(g, a, q, D, kind);
  for (int64_t l = 0; l < w; ++l) {
    const bool ok = is_finite(ends[l]);  // else a non-finite cost, or R overflowed (cpu.cpp, sweep)
    if (gx) deinterleave(q.GX.data(), m, D, w, l, ok, gx + (b0 + l) * m * D);
    if (gy) deinterleave(q.GY.data(), n, D, w, w - 1 - l, ok, gy + (b0 + l) * n * D);
  }
}

// Work of one cell of one pair (load, both passes, gradients), kCellCost * (D + 2), in the
// units of parallel_rows' threshold (about ns; measured ~13 ns at D = 2, generous here): a
// call runs on the calling thread below kParallelWork.
constexpr int64_t kCellCost = 5;
constexpr int64_t kParallelWork = int64_t(1) << 15;

}  // namespace

bool lanes_serve(int64_t batch, int64_t m, int64_t n, bool lengths) {
  return !lengths && batch > 1 && m * n <= kLaneCells;
}

void series_lanes(std::uintptr_t x, std::uintptr_t y, std::uintptr_t value, std::uintptr_t gx, std::uintptr_t gy,
                  int64_t batch, int64_t m, int64_t n, int64_t D, int cost, double gamma, int64_t band, int dtype,
                  int threads) {
  const Diagonals g = Diagonals::of(m, n, band);
  const Smoothing s = Smoothing::of(gamma);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (!g.feasible()) {  // no alignment: +inf, no derivative written (api.h)
      std::fill_n(as_ptr<T>(value), batch, T(INFINITY));
      return;
    }
    // Groups of at most kMaxLanes pairs, at least one per thread when the batch is worth threads.
    const int64_t work = kCellCost * batch * m * n * (D + 2);
    int64_t groups = (batch + kMaxLanes - 1) / kMaxLanes;
    if (work >= kParallelWork) groups = std::max<int64_t>(groups, std::min<int64_t>(batch, threads));
    parallel_rows(groups, threads, work / groups, [&](int64_t begin, int64_t end) {
      for (int64_t q = begin; q < end; ++q) {  // groups of equal size (to one pair)
        const int64_t b0 = batch * q / groups, b1 = batch * (q + 1) / groups;
        solve_group(g, as_ptr<const T>(x), as_ptr<const T>(y), as_ptr<T>(value), as_ptr<T>(gx), as_ptr<T>(gy), b0,
                    b1 - b0, D, cost, s);
      }
    });
  });
}

}  // namespace softdtw
}  // namespace diffcomb
