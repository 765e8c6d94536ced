// Batched CPU kernels of soft-DTW, the cell math from softdtw.h.
//
// value_and_alignment_cpu (gamma > 0, the training path) runs the
// anti-diagonal engine: each problem's costs are copied into the diagonal
// layout, and each diagonal is one vectorized loop (common/vmath.h exp/log,
// compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time).
// Pairs run in parallel over the batch; a batch smaller than the thread count
// instead runs one pair at a time on all threads, cut into tiles processed
// along tile anti-diagonals.
//
// forward_cpu / backward_cpu / second_order_cpu keep the row-by-row DP with
// stored transition weights: the hard DTW (gamma = 0, whose tie-breaks need
// the weights), and the sharp variant and the alignment's Hessian-vector
// product, which need the weights of every cell twice.
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

template <class T>
Problem<T> make_problem(std::uintptr_t C, std::uintptr_t P, std::uintptr_t lengths_x, std::uintptr_t lengths_y,
                        int64_t b, int64_t m, int64_t n, double gamma, int64_t band) {
  const int64_t mb = lengths_x ? as_ptr<const int64_t>(lengths_x)[b] : m;
  const int64_t nb = lengths_y ? as_ptr<const int64_t>(lengths_y)[b] : n;
  return Problem<T>{as_ptr<const T>(C) + b * m * n, n, as_ptr<T>(P) + b * m * n * 3, 3 * n, mb, nb, gamma, band};
}


// ---------------------------------------------------------------------------
// Anti-diagonal engine.

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DC_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DC_SIMD_CLONES
#endif

struct VecMath {
  static inline double exp(double x) { return vmath::exp(x); }
  static inline double log(double x) { return vmath::log_positive(x); }
};

// Rows [i0, i1] of diagonal k, forward (softdtw.h, forward_cell).
DC_SIMD_CLONES void forward_rows(double* A, double* B, const int64_t* start, int64_t k, int64_t i0, int64_t i1,
                                 double gamma, double inv_gamma) {
  const double* r1 = A + start[k - 1];
  const double* r2 = A + start[k - 2];
  double* r = A + start[k];
  double* cv = B + start[k];
#pragma omp simd
  for (int64_t i = i0; i <= i1; ++i) {
    const double v = soft_min_value<VecMath>(r1[i], r2[i - 1], r1[i - 1], gamma, inv_gamma);
    r[i] = cv[i] + v;
    cv[i] = v;
  }
}

// Rows [i0, i1] of diagonal k, backward (softdtw.h, backward_cell).
DC_SIMD_CLONES void backward_rows(double* A, const double* B, const int64_t* start, int64_t k, int64_t i0,
                                  int64_t i1, double inv_gamma) {
  const double* e1 = A + start[k + 1];
  const double* v1 = B + start[k + 1];
  const double* e2 = A + start[k + 2];
  const double* v2 = B + start[k + 2];
  double* a = A + start[k];
#pragma omp simd
  for (int64_t i = i0; i <= i1; ++i) {
    const double r = a[i];
    a[i] = pull<VecMath>(e1[i], v1[i], r, inv_gamma) + pull<VecMath>(e1[i + 1], v1[i + 1], r, inv_gamma) +
           pull<VecMath>(e2[i + 1], v2[i + 1], r, inv_gamma);
  }
}

// Per-thread scratch of the engine.
struct Scratch {
  std::vector<double> A, B;
  std::vector<int64_t> start;
  std::vector<double> gx, gy;  // series gradients
};

// Lays out the pair's diagonals: pads +inf, R[0][0] = 0; the cells of B
// are left for a loader.
inline void prepare(const Diagonals& g, Scratch& s) {
  s.start.resize(g.last() + 2);
  const int64_t size = g.layout(s.start.data());
  s.A.resize(size);
  s.B.resize(size);
  for (int64_t k = 0; k <= g.last() + 1; ++k) {
    const int64_t lo = g.lo(k), hi = g.hi(k), at = s.start[k];
    s.A[at + lo - 1] = s.A[at + hi + 1] = INFINITY;
    s.B[at + lo - 1] = s.B[at + hi + 1] = INFINITY;
  }
  s.A[s.start[0]] = 0.0;
}

// Loads a cost matrix C (row stride ldc) into B; false when a used cost is
// not finite.
template <class T>
bool load_matrix(const Diagonals& g, const T* C, int64_t ldc, Scratch& s) {
  double poison = 0.0;  // becomes NaN when a cost is NaN or +/-inf
  for (int64_t k = 2; k <= g.last(); ++k) {
    double* b = s.B.data() + s.start[k];
    const T* c = C + (k - 1);  // C[i - 1][k - i - 1] = c[(i - 1) * (ldc - 1) - 1]
    const int64_t i0 = g.lo(k), i1 = g.hi(k);
#pragma omp simd reduction(+ : poison)
    for (int64_t i = i0; i <= i1; ++i) {
      const double x = double(c[(i - 1) * (ldc - 1) - 1]);
      b[i] = x;
      poison += x * 0.0;
    }
  }
  return poison == 0.0;
}

// Cost of one pair of steps (SPEC 3.1) from h = |x - y|^2 / 2, and the
// factor f with d cost / d x = f (x - y).
DC_INLINE double cost_of(double h, int kind) {
  if (kind == kCostSqEuclidean) return 2.0 * h;
  if (kind == kCostHalfSqEuclidean) return h;
  return h + vmath::log_positive(2.0 - vmath::exp(-h));
}
DC_INLINE double cost_factor(double h, int kind) {
  if (kind == kCostSqEuclidean) return 2.0;
  if (kind == kCostHalfSqEuclidean) return 1.0;
  const double e = vmath::exp(-h);
  return 1.0 + e / (2.0 - e);
}

// Loads the costs between series x (m, D) and y (n, D) into B, computed on
// the fly from the differences (no N x M matrix); false when a cost is not
// finite.
template <class T>
bool load_series(const Diagonals& g, const T* x, const T* y, int64_t D, int kind, Scratch& s) {
  double poison = 0.0;
  for (int64_t k = 2; k <= g.last(); ++k) {
    double* b = s.B.data() + s.start[k];
    const int64_t i0 = g.lo(k), i1 = g.hi(k);
#pragma omp simd reduction(+ : poison)
    for (int64_t i = i0; i <= i1; ++i) {
      const T* xi = x + (i - 1) * D;
      const T* yj = y + (k - i - 1) * D;
      double h = 0.0;
      for (int64_t d = 0; d < D; ++d) {
        const double diff = double(xi[d]) - double(yj[d]);
        h += diff * diff;
      }
      const double c = cost_of(0.5 * h, kind);
      b[i] = c;
      poison += c * 0.0;
    }
  }
  return poison == 0.0;
}

// E (row stride lde) of the used block from A after the backward; cells
// outside the band stay as the caller left them.
template <class T>
void store_alignment(const Diagonals& g, const Scratch& s, T* E, int64_t lde) {
  for (int64_t k = 2; k <= g.last(); ++k) {
    const double* a = s.A.data() + s.start[k];
    T* e = E + (k - 1);
    const int64_t i0 = g.lo(k), i1 = g.hi(k);
    for (int64_t i = i0; i <= i1; ++i) e[(i - 1) * (lde - 1) - 1] = T(a[i]);
  }
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
      if (w == 0.0) continue;
      const T* xi = x + (i - 1) * D;
      const T* yj = y + (k - i - 1) * D;
      if (kind == kCostLogAugmented) {
        double h = 0.0;
        for (int64_t d = 0; d < D; ++d) {
          const double diff = double(xi[d]) - double(yj[d]);
          h += diff * diff;
        }
        w *= cost_factor(0.5 * h, kind);
      } else {
        w *= cost_factor(0.0, kind);
      }
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

// The sweeps on a loaded pair: returns R[mb][nb]; with `backward`, A then
// holds E. team > 1: the pair is cut into square tiles processed along tile
// anti-diagonals (tiles of one tile diagonal are independent; one barrier
// per tile diagonal), each tile diagonal by diagonal as in the serial sweep:
// every cell gets the same formula as with team = 1 (a SIMD loop's scalar
// remainder falls elsewhere, which can change a result by an ulp).
inline double sweep(const Diagonals& g, double gamma, bool backward, int team, Scratch& s) {
  const double inv_gamma = 1.0 / gamma;
  double* A = s.A.data();
  double* B = s.B.data();
  const int64_t* start = s.start.data();
  const int64_t K = g.last();
  team = team_for(g, team);
  if (team <= 1) {
    for (int64_t k = 2; k <= K; ++k) forward_rows(A, B, start, k, g.lo(k), g.hi(k), gamma, inv_gamma);
    const double value = A[start[K] + g.mb];
    if (backward) {
      A[start[K] + g.mb] = 1.0;  // E[mb][nb]
      for (int64_t k = K - 1; k >= 2; --k) backward_rows(A, B, start, k, g.lo(k), g.hi(k), inv_gamma);
    }
    return value;
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
        if (b <= e) forward_rows(A, B, start, k, b, e, gamma, inv_gamma);
      }
    } else {
      for (int64_t k = std::min(i1 + j1, K - 1); k >= i0 + j0; --k) {
        tile_rows(g, k, i0, i1, j0, j1, &b, &e);
        if (b <= e) backward_rows(A, B, start, k, b, e, inv_gamma);
      }
    }
  };
  double value = 0.0;
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
    {
      value = A[start[K] + g.mb];
      A[start[K] + g.mb] = 1.0;  // E[mb][nb]
    }
    if (backward) {
      for (int64_t t = tm + tn - 2; t >= 0; --t) {
        const int64_t first = std::max<int64_t>(0, t - (tn - 1)), last = std::min(t, tm - 1);
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t ti = first; ti <= last; ++ti) tile(ti, t - ti, false);
      }
    }
  }
  return value;
}

// One pair from its cost matrix: the value, and E (row stride lde; zeroed by
// the caller where the band or the lengths leave cells out) when E != null.
template <class T>
double solve_matrix(const Diagonals& g, const T* C, int64_t ldc, T* E, int64_t lde, double gamma, int team,
                    Scratch& s) {
  if (!g.feasible()) return INFINITY;
  prepare(g, s);
  if (!load_matrix(g, C, ldc, s)) {
    if (E) {
      for (int64_t i = 0; i < g.mb; ++i) std::fill_n(E + i * lde, g.nb, quiet_nan<T>());
    }
    return NAN;
  }
  const double value = sweep(g, gamma, E != nullptr, team, s);
  if (E) store_alignment(g, s, E, lde);
  return value;
}

// One pair of series: the value, and the gradients gx (m, D), gy (n, D) when
// not null (rows past the lengths zeroed by the caller).
template <class T>
double solve_series(const Diagonals& g, const T* x, const T* y, int64_t D, int kind, T* gx, T* gy, double gamma,
                    int team, Scratch& s) {
  const bool grads = gx || gy;
  if (!g.feasible()) return INFINITY;
  prepare(g, s);
  if (!load_series(g, x, y, D, kind, s)) {
    if (gx) std::fill_n(gx, g.mb * D, quiet_nan<T>());
    if (gy) std::fill_n(gy, g.nb * D, quiet_nan<T>());
    return NAN;
  }
  const double value = sweep(g, gamma, grads, team, s);
  if (grads) store_series_gradients(g, s, x, y, D, kind, gx, gy);
  return value;
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
  return lengths ? as_ptr<const int64_t>(lengths)[b] : full;
}

}  // namespace

void value_and_alignment_cpu(std::uintptr_t C, std::uintptr_t value, std::uintptr_t E, std::uintptr_t lengths_x,
                             std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, double gamma,
                             int64_t band, int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const bool partial = band >= 0 || lengths_x || lengths_y;
    for_each_pair(batch, m * n, threads, [&](int64_t b, int team, Scratch& s) {
      const Diagonals g{length_of(lengths_x, b, m), length_of(lengths_y, b, n), band};
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
      const Diagonals g{length_of(lengths_x, b, m), length_of(lengths_y, b, n), band};
      T* gxb = gx ? as_ptr<T>(gx) + b * m * D : nullptr;
      T* gyb = gy ? as_ptr<T>(gy) + b * n * D : nullptr;
      if (gxb) std::fill_n(gxb, m * D, T(0));
      if (gyb) std::fill_n(gyb, n * D, T(0));
      as_ptr<T>(value)[b] = T(solve_series(g, as_ptr<const T>(x) + b * m * D, as_ptr<const T>(y) + b * n * D, D,
                                           cost, gxb, gyb, gamma, team, s));
    });
  });
}

void forward_cpu(std::uintptr_t C, std::uintptr_t P, std::uintptr_t value, std::uintptr_t lengths_x,
                 std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, double gamma, int64_t band,
                 int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(batch, threads, 20 * m * n, [&](int64_t begin, int64_t end) {
      std::vector<double> rows(2 * (n + 1));
      for (int64_t b = begin; b < end; ++b) {
        const Problem<T> problem = make_problem<T>(C, P, lengths_x, lengths_y, b, m, n, gamma, band);
        std::fill_n(problem.P, m * n * 3, T(0));
        as_ptr<T>(value)[b] = T(problem.forward(rows.data(), rows.data() + n + 1));
      }
    });
  });
}

void backward_cpu(std::uintptr_t P, std::uintptr_t value, std::uintptr_t grad, std::uintptr_t E,
                  std::uintptr_t lengths_x, std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n,
                  int64_t band, int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(batch, threads, 4 * m * n, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const Problem<T> problem = make_problem<T>(0, P, lengths_x, lengths_y, b, m, n, 0.0, band);
        T* e = as_ptr<T>(E) + b * m * n;
        std::fill_n(e, m * n, T(0));
        problem.backward(double(as_ptr<const T>(value)[b]), double(as_ptr<const T>(grad)[b]), e, n);
      }
    });
  });
}

void second_order_cpu(std::uintptr_t P, std::uintptr_t value, std::uintptr_t Z, std::uintptr_t jvp,
                      std::uintptr_t E, std::uintptr_t HZ, std::uintptr_t lengths_x, std::uintptr_t lengths_y,
                      int64_t batch, int64_t m, int64_t n, double gamma, int64_t band, int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(batch, threads, 8 * m * n, [&](int64_t begin, int64_t end) {
      std::vector<double> dR((m + 1) * (n + 1)), e(m * n), hz(m * n);
      for (int64_t b = begin; b < end; ++b) {
        const Problem<T> problem = make_problem<T>(0, P, lengths_x, lengths_y, b, m, n, gamma, band);
        const double d = problem.second_order(double(as_ptr<const T>(value)[b]), as_ptr<const T>(Z) + b * m * n,
                                              n, dR.data(), e.data(), hz.data());
        as_ptr<T>(jvp)[b] = T(d);
        T* e_out = as_ptr<T>(E) + b * m * n;
        T* hz_out = as_ptr<T>(HZ) + b * m * n;
        std::fill_n(e_out, m * n, T(0));
        std::fill_n(hz_out, m * n, T(0));
        for (int64_t i = 0; i < problem.mb; ++i) {
          for (int64_t j = 0; j < problem.nb; ++j) {
            e_out[i * n + j] = T(e[i * problem.nb + j]);
            hz_out[i * n + j] = T(hz[i * problem.nb + j]);
          }
        }
      }
    });
  });
}

}  // namespace softdtw
}  // namespace diffcomb
