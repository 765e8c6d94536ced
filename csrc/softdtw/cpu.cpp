// Batched CPU driver of soft-DTW on the anti-diagonal layout (layout.h) with
// the cell steps of softdtw.h.
//
// Each pair's costs are copied (cost matrix) or computed (series) into the
// diagonal layout; each diagonal is then one vectorized loop of a step
// (cpu_rows.h: common/vmath.h exp/log, compiled for x86-64-v4 (AVX-512), v3
// (AVX2) and the baseline, the best picked at load time). Pairs run in
// parallel over the batch; a batch smaller than the thread count instead runs
// one pair at a time on all threads, cut into the tiles of layout.h (as the
// CUDA driver does), processed along tile anti-diagonals. Batches of small
// series without per-pair lengths go to cpu_lanes.cpp (lanes.h), which
// sweeps groups of pairs interleaved with the same steps.
#include <algorithm>
#include <cstring>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "../common/common.h"
#include "../common/parallel.h"
#include "api.h"
#include "checks.h"
#include "cpu_rows.h"
#include "lanes.h"
#include "layout.h"
#include "softdtw.h"

namespace diffcomb {
namespace softdtw {
namespace {

// ---------------------------------------------------------------------------
// One pair.

// Per-thread scratch.
struct Scratch {
  std::vector<double> A, B, D, Z;
  std::vector<int64_t> start;
  std::vector<double> gx, gy;  // series gradients
};

// Lays out the pair's diagonals in the scratch, with their pads and the
// origin (layout.h); the cells of B (and Z) are left for a loader.
inline Arrays prepare(const Diagonals& g, bool second_order, Scratch& s) {
  s.start.resize(g.last() + 2);
  const int64_t size = g.layout(s.start.data());
  s.A.resize(size);
  s.B.resize(size);
  if (second_order) {
    s.D.resize(size);
    s.Z.resize(size);
  }
  const Arrays a{s.A.data(), s.B.data(), second_order ? s.D.data() : nullptr, second_order ? s.Z.data() : nullptr,
                 s.start.data()};
  for (int64_t k = 0; k <= g.last() + 1; ++k) set_pads(a, g, k);
  set_origin(a);
  return a;
}

// Copies the used cells of a matrix M (row stride ld) into `out`; false when
// one is not finite.
template <class T>
bool load_matrix(const Diagonals& g, const T* M, int64_t ld, const int64_t* start, double* out) {
  double poison = 0.0;  // becomes NaN when a value is NaN or +/-inf
  for (int64_t k = 2; k <= g.last(); ++k) {
    double* b = out + start[k];
    const T* c = M + (k - 1);  // M[i - 1][k - i - 1] = c[(i - 1) * (ld - 1) - 1]
    const int64_t i0 = g.lo(k), i1 = g.hi(k);
#pragma omp simd reduction(+ : poison)
    for (int64_t i = i0; i <= i1; ++i) {
      const double x = double(c[(i - 1) * (ld - 1) - 1]);
      b[i] = x;
      poison += x * 0.0;
    }
  }
  return poison == 0.0;
}

// Costs of a pair of series into B, from the differences (no N x M matrix);
// false when a cost is not finite.
template <class T>
bool load_series(const Diagonals& g, const SeriesPair<T>& pair_in, const Arrays& a) {
  // A local copy: the stores to b cannot alias its fields, so they stay in registers and the loop
  // vectorizes (through the reference they were reloaded after every store, a scalar loop).
  const SeriesPair<T> pair = pair_in;
  double poison = 0.0;
  for (int64_t k = 2; k <= g.last(); ++k) {
    double* b = a.B + a.start[k];
    const int64_t i0 = g.lo(k), i1 = g.hi(k);
#pragma omp simd reduction(+ : poison)
    for (int64_t i = i0; i <= i1; ++i) {
      const double c = pair.template cost<VecMath>(i, k - i);
      b[i] = c;
      poison += c * 0.0;
    }
  }
  return poison == 0.0;
}

// The used cells of `in` (diagonal layout) into matrix M (row stride ld);
// cells outside the band stay as the caller left them.
template <class T>
void store_matrix(const Diagonals& g, const int64_t* start, const double* in, T* M, int64_t ld) {
  for (int64_t k = 2; k <= g.last(); ++k) {
    const double* a = in + start[k];
    T* e = M + (k - 1);
    const int64_t i0 = g.lo(k), i1 = g.hi(k);
    for (int64_t i = i0; i <= i1; ++i) e[(i - 1) * (ld - 1) - 1] = T(a[i]);
  }
}

template <class T>
void fill_used(const Diagonals& g, T* M, int64_t ld, T value) {
  for (int64_t i = 0; i < g.mb; ++i) std::fill_n(M + i * ld, g.nb, value);
}

// Gradients of the value with respect to the series from E in A (softdtw.h,
// SeriesPair), accumulated in double along the diagonals.
template <class T>
void store_series_gradients(const Diagonals& g, const Arrays& a, const SeriesPair<T>& pair_in, Scratch& s, T* gx,
                            T* gy) {
  const SeriesPair<T> pair = pair_in;  // a local copy, as in load_series
  const int64_t D = pair.D;
  s.gx.assign(g.mb * D, 0.0);
  s.gy.assign(g.nb * D, 0.0);
  double* ax = s.gx.data();
  double* ay = s.gy.data();
  for (int64_t k = 2; k <= g.last(); ++k) {
    const double* e = a.A + a.start[k];
    const int64_t i0 = g.lo(k), i1 = g.hi(k);
    for (int64_t i = i0; i <= i1; ++i) {
      const int64_t j = k - i;
      const double w = pair.template weight<VecMath>(e[i], i, j);
      double* gxi = ax + (i - 1) * D;
      double* gyj = ay + (j - 1) * D;
      for (int64_t d = 0; d < D; ++d) {
        const double t = w * pair.difference(i, j, d);
        gxi[d] += t;
        gyj[d] -= t;
      }
    }
  }
  if (gx) std::copy(s.gx.begin(), s.gx.end(), gx);
  if (gy) std::copy(s.gy.begin(), s.gy.end(), gy);
}

// Threads that share one pair's sweeps (1: the calling thread alone).
inline int team_for(const Diagonals& g, int team) { return g.mb * g.nb >= (int64_t(1) << 16) ? team : 1; }

enum class Pass { kValue, kAlignment, kSecondOrder };

// The sweeps on a loaded pair. Afterwards A holds E (kAlignment,
// kSecondOrder) and D holds H Z (kSecondOrder), unless R[mb][nb] is not
// finite: finite costs whose sums overflow double (|C| near 1e308), where
// the weights cannot be formed from R; the backward is skipped and the
// callers report NaN derivatives. team > 1: the pair's tiles (layout.h) run
// along tile anti-diagonals (one barrier per tile diagonal), each tile
// diagonal by diagonal as in the serial sweep: every cell gets the same
// formula as with team = 1 (a SIMD loop's scalar remainder falls elsewhere,
// which can change a result by an ulp).
inline Ends sweep(const Diagonals& g, const Arrays& a, Smoothing s, Pass pass, int team) {
  const bool hard = s.gamma == 0.0;
  const bool second = pass == Pass::kSecondOrder;
  const RowsFn fwd = second ? (hard ? tangent_hard : tangent_soft) : (hard ? forward_hard : forward_soft);
  const RowsFn bwd = second ? (hard ? second_backward_hard : second_backward_soft)
                            : (hard ? backward_hard : backward_soft);
  const bool backward = pass != Pass::kValue;
  Ends ends{0.0, 0.0};
  team = team_for(g, team);
  if (team <= 1) {
    for (int64_t k = 2; k <= g.last(); ++k) fwd(a, s, k, g.lo(k), g.hi(k));
    ends = finish_forward(a, g);
    if (backward && is_finite(ends.value)) {
      for (int64_t k = g.last() - 1; k >= 2; --k) bwd(a, s, k, g.lo(k), g.hi(k));
    }
    return ends;
  }
  // About four tiles per thread along the shorter side, a multiple of 8 rows.
  const Tiles tiles = Tiles::of(g.mb, g.nb, std::max<int64_t>(64, (std::min(g.mb, g.nb) / (4 * team) + 7) / 8 * 8));
  auto tile = [&](int64_t ti, int64_t tj, bool forward) {
    const Tile t = Tile::at(g, tiles.side, ti, tj);
    if (forward) {
      for (int64_t k = t.first(); k <= t.last(); ++k) {
        if (t.lo(g, k) <= t.hi(g, k)) fwd(a, s, k, t.lo(g, k), t.hi(g, k));
      }
    } else {
      for (int64_t k = t.last_backward(g); k >= t.first(); --k) {
        if (t.lo(g, k) <= t.hi(g, k)) bwd(a, s, k, t.lo(g, k), t.hi(g, k));
      }
    }
  };
#if defined(_OPENMP)
#pragma omp parallel num_threads(team)
#endif
  {
    for (int64_t t = 0; t < tiles.count(); ++t) {
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
      for (int64_t ti = tiles.first(t); ti <= tiles.last(t); ++ti) tile(ti, t - ti, true);
    }
#if defined(_OPENMP)
#pragma omp single
#endif
    ends = finish_forward(a, g);  // the single's barrier publishes ends to every thread
    if (backward && is_finite(ends.value)) {
      for (int64_t t = tiles.count() - 1; t >= 0; --t) {
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t ti = tiles.first(t); ti <= tiles.last(t); ++ti) tile(ti, t - ti, false);
      }
    }
  }
  return ends;
}

// One pair from its cost matrix: the value, and E (row stride lde) when E !=
// null (cells the band or the lengths leave out are the caller's).
template <class T>
double solve_matrix(const Diagonals& g, const T* C, int64_t ldc, T* E, int64_t lde, Smoothing s, int team,
                    Scratch& w) {
  if (!g.feasible()) return INFINITY;
  const Arrays a = prepare(g, false, w);
  const double value =
      load_matrix(g, C, ldc, a.start, a.B) ? sweep(g, a, s, E ? Pass::kAlignment : Pass::kValue, team).value : NAN;
  if (E && is_finite(value)) {
    store_matrix(g, a.start, a.A, E, lde);
  } else if (E) {
    fill_used(g, E, lde, quiet_nan<T>());  // a non-finite cost, or R overflowed (see sweep)
  }
  return value;
}

// One pair of series: the value, and the gradients gx (m, D), gy (n, D) when
// not null (rows past the lengths are the caller's).
template <class T>
double solve_series(const Diagonals& g, const SeriesPair<T>& pair, T* gx, T* gy, Smoothing s, int team,
                    Scratch& w) {
  const bool grads = gx || gy;
  if (!g.feasible()) return INFINITY;
  const Arrays a = prepare(g, false, w);
  const double value =
      load_series(g, pair, a) ? sweep(g, a, s, grads ? Pass::kAlignment : Pass::kValue, team).value : NAN;
  if (grads && is_finite(value)) {
    store_series_gradients(g, a, pair, w, gx, gy);
  } else if (grads) {  // a non-finite cost, or R overflowed (see sweep)
    if (gx) std::fill_n(gx, g.mb * pair.D, quiet_nan<T>());
    if (gy) std::fill_n(gy, g.nb * pair.D, quiet_nan<T>());
  }
  return value;
}

// One pair, second order for the direction Z: returns <E, Z>; E and HZ
// (row stride ld) receive E and H Z.
template <class T>
double solve_second_order(const Diagonals& g, const T* C, const T* Zm, int64_t ld, T* E, T* HZ, Smoothing s,
                          int team, Scratch& w) {
  if (!g.feasible()) return INFINITY;
  const Arrays a = prepare(g, true, w);
  Ends ends{NAN, NAN};
  if (load_matrix(g, C, ld, a.start, a.B)) {
    load_matrix(g, Zm, ld, a.start, a.Z);  // a non-finite direction makes NaN tangents, nothing else
    ends = sweep(g, a, s, Pass::kSecondOrder, team);
  }
  if (!is_finite(ends.value)) {  // a non-finite cost, or R overflowed (see sweep)
    fill_used(g, E, ld, quiet_nan<T>());
    fill_used(g, HZ, ld, quiet_nan<T>());
    return NAN;
  }
  store_matrix(g, a.start, a.A, E, ld);
  store_matrix(g, a.start, a.D, HZ, ld);
  return ends.tangent;
}

// Runs pair(b, team, scratch) for every pair: over the batch, or, for a
// batch smaller than the thread count, one pair at a time on all threads
// (tiles, see sweep).
template <class Pair>
void for_each_pair(int64_t batch, int64_t cells, int threads, Pair&& pair) {
  const int team = std::max(threads, 1);
  if (batch < team && cells >= (int64_t(1) << 16)) {
    Scratch s;
    for (int64_t b = 0; b < batch; ++b) pair(b, team, s);
    return;
  }
  parallel_rows(batch, threads, 40 * cells, [&](int64_t begin, int64_t end) {
    Scratch s;
    for (int64_t b = begin; b < end; ++b) pair(b, 1, s);
  });
}

}  // namespace

void value_and_alignment_cpu(std::uintptr_t C, std::uintptr_t value, std::uintptr_t E, std::uintptr_t lengths_x,
                             std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, double gamma,
                             int64_t band, int dtype, int threads) {
  check_value_and_alignment(C, value, batch, m, n, dtype);
  const Problem p{as_ptr<const int64_t>(lengths_x), as_ptr<const int64_t>(lengths_y), m, n, band};
  const Smoothing s = Smoothing::of(gamma);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    for_each_pair(batch, m * n, threads, [&](int64_t b, int team, Scratch& w) {
      T* e = E ? as_ptr<T>(E) + b * m * n : nullptr;
      as_ptr<T>(value)[b] =
          T(solve_matrix(p.pair(b), as_ptr<const T>(C) + b * m * n, n, e, n, s, team, w));
    });
  });
}

void series_cpu(std::uintptr_t x, std::uintptr_t y, std::uintptr_t value, std::uintptr_t gx, std::uintptr_t gy,
                std::uintptr_t lengths_x, std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, int64_t D,
                int cost, double gamma, int64_t band, int dtype, int threads) {
  check_series(x, y, value, batch, m, n, D, cost, dtype);
  if (lanes_serve(batch, m, n, lengths_x != 0 || lengths_y != 0)) {
    series_lanes(x, y, value, gx, gy, batch, m, n, D, cost, gamma, band, dtype, threads);
    return;
  }
  const Problem p{as_ptr<const int64_t>(lengths_x), as_ptr<const int64_t>(lengths_y), m, n, band};
  const Smoothing s = Smoothing::of(gamma);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    for_each_pair(batch, m * n, threads, [&](int64_t b, int team, Scratch& w) {
      const SeriesPair<T> pair{as_ptr<const T>(x) + b * m * D, as_ptr<const T>(y) + b * n * D, D, cost};
      T* gxb = gx ? as_ptr<T>(gx) + b * m * D : nullptr;
      T* gyb = gy ? as_ptr<T>(gy) + b * n * D : nullptr;
      as_ptr<T>(value)[b] = T(solve_series(p.pair(b), pair, gxb, gyb, s, team, w));
    });
  });
}

void second_order_cpu(std::uintptr_t C, std::uintptr_t Z, std::uintptr_t jvp, std::uintptr_t E, std::uintptr_t HZ,
                      std::uintptr_t lengths_x, std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n,
                      double gamma, int64_t band, int dtype, int threads) {
  check_second_order(C, Z, jvp, E, HZ, batch, m, n, dtype);
  const Problem p{as_ptr<const int64_t>(lengths_x), as_ptr<const int64_t>(lengths_y), m, n, band};
  const Smoothing s = Smoothing::of(gamma);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    for_each_pair(batch, m * n, threads, [&](int64_t b, int team, Scratch& w) {
      const int64_t at = b * m * n;
      as_ptr<T>(jvp)[b] = T(solve_second_order(p.pair(b), as_ptr<const T>(C) + at, as_ptr<const T>(Z) + at,
                                                    n, as_ptr<T>(E) + at, as_ptr<T>(HZ) + at,
                                                    s, team, w));
    });
  });
}

}  // namespace softdtw
}  // namespace diffcomb
