// Batched CPU kernels of soft-DTW on the anti-diagonal layout of softdtw.h.
//
// Each pair's costs are copied (cost matrix) or computed (series) into the
// diagonal layout; each diagonal is then one vectorized loop (common/vmath.h
// exp/log, compiled for x86-64-v4 (AVX-512), v3 (AVX2) and the baseline, the
// best picked at load time). Pairs run in parallel over the batch; a batch
// smaller than the thread count instead runs one pair at a time on all
// threads, cut into tiles processed along tile anti-diagonals.
#include <algorithm>
#include <cstring>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "../common/common.h"
#include "../common/parallel.h"
#include "../common/vmath.h"
#include "api.h"
#include "softdtw.h"

namespace diffcomb {
namespace softdtw {
namespace {

template <class T>
T* as_ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

struct VecMath {
  static inline double exp(double x) { return vmath::exp(x); }
  static inline double log(double x) { return vmath::log_positive(x); }
};

// ---------------------------------------------------------------------------
// Row loops: rows [i0, i1] of diagonal k, one vector loop each. Forced
// inline into the per-instruction-set entry points below: a row loop left
// out of line is compiled once, for the baseline instruction set (about 3x
// slower backward when the cell functions grew and GCC stopped inlining it).
#if defined(__GNUC__)
#define DC_ROWS_INLINE inline __attribute__((always_inline))
#else
#define DC_ROWS_INLINE inline
#endif

template <bool Hard>
DC_ROWS_INLINE void forward_rows(double* A, double* B, const int64_t* start, int64_t k, int64_t i0, int64_t i1,
                                 double gamma, double inv_gamma) {
  const double* r1 = A + start[k - 1];
  const double* r2 = A + start[k - 2];
  double* r = A + start[k];
  double* b = B + start[k];
#pragma omp simd
  for (int64_t i = i0; i <= i1; ++i) {
    double code;
    r[i] = forward_value<VecMath, Hard>(r1[i], r2[i - 1], r1[i - 1], b[i], gamma, inv_gamma, &code);
    b[i] = code;
  }
}

template <bool Hard>
DC_ROWS_INLINE void tangent_rows(double* A, double* B, double* D, double* Z, const int64_t* start, int64_t k,
                                 int64_t i0, int64_t i1, double gamma, double inv_gamma) {
  const double* r1 = A + start[k - 1];
  const double* r2 = A + start[k - 2];
  const double* d1 = D + start[k - 1];
  const double* d2 = D + start[k - 2];
  double* r = A + start[k];
  double* b = B + start[k];
  double* d = D + start[k];
  double* z = Z + start[k];
#pragma omp simd
  for (int64_t i = i0; i <= i1; ++i) {
    const double l = r1[i], g = r2[i - 1], u = r1[i - 1];
    double code;
    r[i] = forward_value<VecMath, Hard>(l, g, u, b[i], gamma, inv_gamma, &code);
    b[i] = code;
    const double mu = tangent_mu<VecMath, Hard>(code, l, g, u, d1[i], d2[i - 1], d1[i - 1], inv_gamma);
    d[i] = z[i] + mu;
    z[i] = mu;
  }
}

template <bool Hard>
DC_ROWS_INLINE void backward_rows(double* A, const double* B, const int64_t* start, int64_t k, int64_t i0, int64_t i1,
                                  double inv_gamma) {
  const double* e1 = A + start[k + 1];
  const double* b1 = B + start[k + 1];
  const double* e2 = A + start[k + 2];
  const double* b2 = B + start[k + 2];
  const double* r0 = A + start[k - 1];  // R of the successors' diagonal predecessors (softdtw.h)
  double* a = A + start[k];
#pragma omp simd
  for (int64_t i = i0; i <= i1; ++i) {
    const double r = a[i];
    a[i] = share<VecMath, Hard>(e1[i], b1[i], r0[i - 1], r, inv_gamma, kLeft) +
           share<VecMath, Hard>(e1[i + 1], b1[i + 1], r0[i], r, inv_gamma, kUp) +
           share<VecMath, Hard>(e2[i + 1], b2[i + 1], r, r, inv_gamma, kDiag);
  }
}

template <bool Hard>
DC_ROWS_INLINE void second_backward_rows(double* A, const double* B, double* D, const double* Z, const int64_t* start,
                                         int64_t k, int64_t i0, int64_t i1, double inv_gamma) {
  const double* e1 = A + start[k + 1];
  const double* b1 = B + start[k + 1];
  const double* d1 = D + start[k + 1];
  const double* z1 = Z + start[k + 1];
  const double* e2 = A + start[k + 2];
  const double* b2 = B + start[k + 2];
  const double* d2 = D + start[k + 2];
  const double* z2 = Z + start[k + 2];
  const double* r0 = A + start[k - 1];  // R of the successors' diagonal predecessors (softdtw.h)
  double* a = A + start[k];
  double* d = D + start[k];
#pragma omp simd
  for (int64_t i = i0; i <= i1; ++i) {
    const double r = a[i], dr = d[i];
    double e = 0.0, de = 0.0;
    second_share<VecMath, Hard>(e1[i], d1[i], z1[i], b1[i], r0[i - 1], r, dr, inv_gamma, kLeft, &e, &de);
    second_share<VecMath, Hard>(e1[i + 1], d1[i + 1], z1[i + 1], b1[i + 1], r0[i], r, dr, inv_gamma, kUp, &e, &de);
    second_share<VecMath, Hard>(e2[i + 1], d2[i + 1], z2[i + 1], b2[i + 1], r, r, dr, inv_gamma, kDiag, &e, &de);
    a[i] = e;
    d[i] = de;
  }
}

// The entry points the sweeps call: one function per (pass, mode), each
// compiled for several instruction sets (GCC function multiversioning).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DC_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DC_SIMD_CLONES
#endif

struct Arrays {
  double* A;
  double* B;
  double* D;  // second order only
  double* Z;  // second order only
  const int64_t* start;
  double gamma, inv_gamma;
};

#define DC_DEFINE_ROWS(NAME, HARD)                                                                               \
  DC_SIMD_CLONES void forward_##NAME(const Arrays& a, int64_t k, int64_t i0, int64_t i1) {                       \
    forward_rows<HARD>(a.A, a.B, a.start, k, i0, i1, a.gamma, a.inv_gamma);                                      \
  }                                                                                                              \
  DC_SIMD_CLONES void tangent_##NAME(const Arrays& a, int64_t k, int64_t i0, int64_t i1) {                       \
    tangent_rows<HARD>(a.A, a.B, a.D, a.Z, a.start, k, i0, i1, a.gamma, a.inv_gamma);                            \
  }                                                                                                              \
  DC_SIMD_CLONES void backward_##NAME(const Arrays& a, int64_t k, int64_t i0, int64_t i1) {                      \
    backward_rows<HARD>(a.A, a.B, a.start, k, i0, i1, a.inv_gamma);                                              \
  }                                                                                                              \
  DC_SIMD_CLONES void second_backward_##NAME(const Arrays& a, int64_t k, int64_t i0, int64_t i1) {               \
    second_backward_rows<HARD>(a.A, a.B, a.D, a.Z, a.start, k, i0, i1, a.inv_gamma);                             \
  }

DC_DEFINE_ROWS(soft, false)
DC_DEFINE_ROWS(hard, true)
#undef DC_DEFINE_ROWS

using RowsFn = void (*)(const Arrays&, int64_t, int64_t, int64_t);

// ---------------------------------------------------------------------------
// One pair.

// Per-thread scratch.
struct Scratch {
  std::vector<double> A, B, D, Z;
  std::vector<int64_t> start;
  std::vector<double> gx, gy;  // series gradients
};

// Lays out the pair's diagonals: pads +inf in A and B, 0 in D and Z,
// R[0][0] = 0; the cells of B (and Z) are left for a loader.
inline void prepare(const Diagonals& g, bool second_order, Scratch& s) {
  s.start.resize(g.last() + 2);
  const int64_t size = g.layout(s.start.data());
  s.A.resize(size);
  s.B.resize(size);
  if (second_order) {
    s.D.resize(size);
    s.Z.resize(size);
  }
  for (int64_t k = 0; k <= g.last() + 1; ++k) {
    const int64_t pads[2] = {s.start[k] + g.lo(k) - 1, s.start[k] + g.hi(k) + 1};
    for (int64_t p : pads) {
      s.A[p] = s.B[p] = INFINITY;
      if (second_order) s.D[p] = s.Z[p] = 0.0;
    }
  }
  s.A[s.start[0]] = 0.0;
  if (second_order) s.D[s.start[0]] = s.Z[s.start[0]] = 0.0;
}

// Copies the used cells of a matrix M (row stride ld) into `out`; false when
// one is not finite.
template <class T>
bool load_matrix(const Diagonals& g, const T* M, int64_t ld, const std::vector<int64_t>& start, double* out) {
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

// Costs between series x (m, D) and y (n, D) into B, from the differences
// (no N x M matrix); false when a cost is not finite.
template <class T>
bool load_series(const Diagonals& g, const T* x, const T* y, int64_t D, int kind, Scratch& s) {
  double poison = 0.0;
  for (int64_t k = 2; k <= g.last(); ++k) {
    double* b = s.B.data() + s.start[k];
    const int64_t i0 = g.lo(k), i1 = g.hi(k);
#pragma omp simd reduction(+ : poison)
    for (int64_t i = i0; i <= i1; ++i) {
      const double c = step_cost<VecMath>(half_sq(x + (i - 1) * D, y + (k - i - 1) * D, D), kind);
      b[i] = c;
      poison += c * 0.0;
    }
  }
  return poison == 0.0;
}

// The used cells of `in` (diagonal layout) into matrix M (row stride ld);
// cells outside the band stay as the caller left them.
template <class T>
void store_matrix(const Diagonals& g, const std::vector<int64_t>& start, const double* in, T* M, int64_t ld) {
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

// Gradients of the value with respect to the series from E in A (SPEC 3.3):
// gx_i = sum_j E_ij f_ij (x_i - y_j), gy_j = -sum_i E_ij f_ij (x_i - y_j).
template <class T>
void store_series_gradients(const Diagonals& g, Scratch& s, const T* x, const T* y, int64_t D, int kind, T* gx,
                            T* gy) {
  s.gx.assign(g.mb * D, 0.0);
  s.gy.assign(g.nb * D, 0.0);
  double* ax = s.gx.data();
  double* ay = s.gy.data();
  for (int64_t k = 2; k <= g.last(); ++k) {
    const double* a = s.A.data() + s.start[k];
    const int64_t i0 = g.lo(k), i1 = g.hi(k);
    for (int64_t i = i0; i <= i1; ++i) {
      double w = a[i];
      const T* xi = x + (i - 1) * D;
      const T* yj = y + (k - i - 1) * D;
      w *= step_cost_factor<VecMath>(kind == kCostLogAugmented ? half_sq(xi, yj, D) : 0.0, kind);
      double* gxi = ax + (i - 1) * D;
      double* gyj = ay + (k - i - 1) * D;
      for (int64_t d = 0; d < D; ++d) {
        const double t = w * (double(xi[d]) - double(yj[d]));
        gxi[d] += t;
        gyj[d] -= t;
      }
    }
  }
  if (gx) {
    for (int64_t q = 0; q < g.mb * D; ++q) gx[q] = T(ax[q]);
  }
  if (gy) {
    for (int64_t q = 0; q < g.nb * D; ++q) gy[q] = T(ay[q]);
  }
}

// Threads that share one pair's sweeps (1: the calling thread alone).
inline int team_for(const Diagonals& g, int team) { return g.mb * g.nb >= (int64_t(1) << 16) ? team : 1; }

// The cells of diagonal k inside the tile of rows [i0, i1] x columns
// [j0, j1], as a row range [*b, *e] (empty when *b > *e).
inline void tile_rows(const Diagonals& g, int64_t k, int64_t i0, int64_t i1, int64_t j0, int64_t j1, int64_t* b,
                      int64_t* e) {
  *b = std::max({g.lo(k), i0, k - j1});
  *e = std::min({g.hi(k), i1, k - j0});
}

enum class Pass { kValue, kAlignment, kSecondOrder };

struct SweepResult {
  double value;    // R[mb][nb]
  double tangent;  // dR[mb][nb] (second order)
};

// The sweeps on a loaded pair. Afterwards A holds E (kAlignment,
// kSecondOrder) and D holds H Z (kSecondOrder), unless R[mb][nb] is not
// finite: finite costs whose sums overflow double (|C| near 1e308), where
// the weights cannot be formed from R; the backward is skipped and the
// callers report NaN derivatives. team > 1: the pair is cut
// into square tiles processed along tile anti-diagonals (the tiles of one
// tile diagonal are independent; one barrier per tile diagonal), each tile
// diagonal by diagonal as in the serial sweep: every cell gets the same
// formula as with team = 1 (a SIMD loop's scalar remainder falls elsewhere,
// which can change a result by an ulp).
inline SweepResult sweep(const Diagonals& g, double gamma, Pass pass, int team, Scratch& s) {
  const bool hard = gamma == 0.0;
  const bool second = pass == Pass::kSecondOrder;
  const Arrays arrays{s.A.data(), s.B.data(), second ? s.D.data() : nullptr, second ? s.Z.data() : nullptr,
                      s.start.data(), gamma, hard ? 0.0 : 1.0 / gamma};
  const RowsFn fwd = second ? (hard ? tangent_hard : tangent_soft) : (hard ? forward_hard : forward_soft);
  const RowsFn bwd = second ? (hard ? second_backward_hard : second_backward_soft)
                            : (hard ? backward_hard : backward_soft);
  const bool backward = pass != Pass::kValue;
  const int64_t K = g.last();
  const int64_t end = s.start[K] + g.mb;
  SweepResult result{0.0, 0.0};
  auto finish_forward = [&] {
    result.value = s.A[end];
    s.A[end] = 1.0;  // E[mb][nb]
    if (second) {
      result.tangent = s.D[end];
      s.D[end] = 0.0;  // dE[mb][nb]
    }
  };
  team = team_for(g, team);
  if (team <= 1) {
    for (int64_t k = 2; k <= K; ++k) fwd(arrays, k, g.lo(k), g.hi(k));
    finish_forward();
    if (backward && is_finite(result.value)) {
      for (int64_t k = K - 1; k >= 2; --k) bwd(arrays, k, g.lo(k), g.hi(k));
    }
    return result;
  }
  // About four tiles per thread along the shorter side, a multiple of 8 rows.
  const int64_t side = std::max<int64_t>(64, (std::min(g.mb, g.nb) / (4 * team) + 7) / 8 * 8);
  const int64_t tm = (g.mb + side - 1) / side, tn = (g.nb + side - 1) / side;
  auto tile = [&](int64_t ti, int64_t tj, bool forward) {
    const int64_t i0 = ti * side + 1, i1 = std::min(g.mb, (ti + 1) * side);
    const int64_t j0 = tj * side + 1, j1 = std::min(g.nb, (tj + 1) * side);
    int64_t b, e;
    if (forward) {
      for (int64_t k = i0 + j0; k <= i1 + j1; ++k) {
        tile_rows(g, k, i0, i1, j0, j1, &b, &e);
        if (b <= e) fwd(arrays, k, b, e);
      }
    } else {
      for (int64_t k = std::min(i1 + j1, K - 1); k >= i0 + j0; --k) {
        tile_rows(g, k, i0, i1, j0, j1, &b, &e);
        if (b <= e) bwd(arrays, k, b, e);
      }
    }
  };
#if defined(_OPENMP)
#pragma omp parallel num_threads(team)
#endif
  {
    for (int64_t t = 0; t <= tm + tn - 2; ++t) {
      const int64_t first = std::max<int64_t>(0, t - (tn - 1)), last = std::min(t, tm - 1);
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
      for (int64_t ti = first; ti <= last; ++ti) tile(ti, t - ti, true);
    }
#if defined(_OPENMP)
#pragma omp single
#endif
    finish_forward();  // the single's barrier publishes result to every thread
    if (backward && is_finite(result.value)) {
      for (int64_t t = tm + tn - 2; t >= 0; --t) {
        const int64_t first = std::max<int64_t>(0, t - (tn - 1)), last = std::min(t, tm - 1);
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t ti = first; ti <= last; ++ti) tile(ti, t - ti, false);
      }
    }
  }
  return result;
}

// One pair from its cost matrix: the value, and E (row stride lde; zeroed by
// the caller where the band or the lengths leave cells out) when E != null.
template <class T>
double solve_matrix(const Diagonals& g, const T* C, int64_t ldc, T* E, int64_t lde, double gamma, int team,
                    Scratch& s) {
  if (!g.feasible()) return INFINITY;
  prepare(g, false, s);
  if (!load_matrix(g, C, ldc, s.start, s.B.data())) {
    if (E) fill_used(g, E, lde, quiet_nan<T>());
    return NAN;
  }
  const double value = sweep(g, gamma, E ? Pass::kAlignment : Pass::kValue, team, s).value;
  if (E && is_finite(value)) {
    store_matrix(g, s.start, s.A.data(), E, lde);
  } else if (E) {
    fill_used(g, E, lde, quiet_nan<T>());  // R overflowed (see sweep)
  }
  return value;
}

// One pair of series: the value, and the gradients gx (m, D), gy (n, D) when
// not null (rows past the lengths zeroed by the caller).
template <class T>
double solve_series(const Diagonals& g, const T* x, const T* y, int64_t D, int kind, T* gx, T* gy, double gamma,
                    int team, Scratch& s) {
  const bool grads = gx || gy;
  if (!g.feasible()) return INFINITY;
  prepare(g, false, s);
  if (!load_series(g, x, y, D, kind, s)) {
    if (gx) std::fill_n(gx, g.mb * D, quiet_nan<T>());
    if (gy) std::fill_n(gy, g.nb * D, quiet_nan<T>());
    return NAN;
  }
  const double value = sweep(g, gamma, grads ? Pass::kAlignment : Pass::kValue, team, s).value;
  if (grads && is_finite(value)) {
    store_series_gradients(g, s, x, y, D, kind, gx, gy);
  } else if (grads) {  // R overflowed (see sweep)
    if (gx) std::fill_n(gx, g.mb * D, quiet_nan<T>());
    if (gy) std::fill_n(gy, g.nb * D, quiet_nan<T>());
  }
  return value;
}

// One pair, second order for the direction Z: returns <E, Z>; E and HZ
// (row stride n, zeroed by the caller) receive E and H Z.
template <class T>
double solve_second_order(const Diagonals& g, const T* C, const T* Zm, int64_t ld, T* E, T* HZ, double gamma,
                          int team, Scratch& s) {
  if (!g.feasible()) return INFINITY;
  prepare(g, true, s);
  if (!load_matrix(g, C, ld, s.start, s.B.data())) {
    fill_used(g, E, ld, quiet_nan<T>());
    fill_used(g, HZ, ld, quiet_nan<T>());
    return NAN;
  }
  load_matrix(g, Zm, ld, s.start, s.Z.data());
  const SweepResult result = sweep(g, gamma, Pass::kSecondOrder, team, s);
  if (!is_finite(result.value)) {  // R overflowed (see sweep)
    fill_used(g, E, ld, quiet_nan<T>());
    fill_used(g, HZ, ld, quiet_nan<T>());
    return NAN;
  }
  store_matrix(g, s.start, s.A.data(), E, ld);
  store_matrix(g, s.start, s.D.data(), HZ, ld);
  return result.tangent;
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

int64_t length_of(std::uintptr_t lengths, int64_t b, int64_t full) {
  return used_length(as_ptr<const int64_t>(lengths), b, full);
}

}  // namespace

void value_and_alignment_cpu(std::uintptr_t C, std::uintptr_t value, std::uintptr_t E, std::uintptr_t lengths_x,
                             std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, double gamma,
                             int64_t band, int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const bool partial = band >= 0 || lengths_x || lengths_y;
    for_each_pair(batch, m * n, threads, [&](int64_t b, int team, Scratch& s) {
      const Diagonals g = Diagonals::of(length_of(lengths_x, b, m), length_of(lengths_y, b, n), band);
      T* e = E ? as_ptr<T>(E) + b * m * n : nullptr;
      if (e && partial) std::fill_n(e, m * n, T(0));
      as_ptr<T>(value)[b] = T(solve_matrix(g, as_ptr<const T>(C) + b * m * n, n, e, n, gamma, team, s));
    });
  });
}

void series_cpu(std::uintptr_t x, std::uintptr_t y, std::uintptr_t value, std::uintptr_t gx, std::uintptr_t gy,
                std::uintptr_t lengths_x, std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, int64_t D,
                int cost, double gamma, int64_t band, int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    for_each_pair(batch, m * n, threads, [&](int64_t b, int team, Scratch& s) {
      const Diagonals g = Diagonals::of(length_of(lengths_x, b, m), length_of(lengths_y, b, n), band);
      T* gxb = gx ? as_ptr<T>(gx) + b * m * D : nullptr;
      T* gyb = gy ? as_ptr<T>(gy) + b * n * D : nullptr;
      if (gxb) std::fill_n(gxb, m * D, T(0));
      if (gyb) std::fill_n(gyb, n * D, T(0));
      as_ptr<T>(value)[b] = T(solve_series(g, as_ptr<const T>(x) + b * m * D, as_ptr<const T>(y) + b * n * D, D,
                                           cost, gxb, gyb, gamma, team, s));
    });
  });
}

void second_order_cpu(std::uintptr_t C, std::uintptr_t Z, std::uintptr_t jvp, std::uintptr_t E, std::uintptr_t HZ,
                      std::uintptr_t lengths_x, std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n,
                      double gamma, int64_t band, int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    for_each_pair(batch, m * n, threads, [&](int64_t b, int team, Scratch& s) {
      const Diagonals g = Diagonals::of(length_of(lengths_x, b, m), length_of(lengths_y, b, n), band);
      T* e = as_ptr<T>(E) + b * m * n;
      T* hz = as_ptr<T>(HZ) + b * m * n;
      std::fill_n(e, m * n, T(0));
      std::fill_n(hz, m * n, T(0));
      as_ptr<T>(jvp)[b] = T(solve_second_order(g, as_ptr<const T>(C) + b * m * n, as_ptr<const T>(Z) + b * m * n, n,
                                               e, hz, gamma, team, s));
    });
  });
}

}  // namespace softdtw
}  // namespace diffcomb
