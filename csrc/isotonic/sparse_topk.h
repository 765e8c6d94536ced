// Sparse soft top-k with p-norm regularization (Sander, Puigcerver, Djolonga,
// Peyre, Blondel, ICML 2023): the block solves that plug into the PAV of
// isotonic.h. CPU (cpu.cpp) and CUDA (cuda.cu) run them through the same
// solve_row / solve_row_chunked / launch_solve as the other projections.
//
// Problem (one row, z = x / eps, w = (1,...,1,0,...,0) with k ones):
//   y = argmax_{y in P(w)} <y, z> - (1/p) sum_i |y_i|^p,   1 < p <= 2.
// With r = 1/(p-1), psi(u) = sign(u) |u|^r is the derivative of the conjugate
// (1/q)|u|^q, q = p/(p-1). Sorting z descending (s = z[perm]) reduces it to
// the non-increasing v minimizing sum_i (1/q)|s_i - v_i|^q + w_i v_i, then
// y[perm[i]] = psi(s_i - v_i). v is constant on blocks; a block's value g is
// the root of
//   F_B(g) = sum_{i in B} psi(s_i - g) - W_B = 0,   W_B = sum_{i in B} w_i,
// unique because psi is strictly increasing (F_B decreases in g). A leaf's value is s_i - w_i for
// every p (psi(w) = w for w in {0, 1}), so PAV's leaves and the p = 2 case are
// those of the L2 projection (Projection<T, L2, true> with c = w).
//
// p = 2 and p = 4/3 run isotonic.h's PAV with a block statistic (its template
// parameter) whose value is an exact root found in O(1):
//   QuadraticStats  p = 2 (r = 1): MeanStats; the value is a mean. Identical
//                   arithmetic to soft_topk.
//   CubicStats      p = 4/3 (r = 3): psi(u) = u^3, so F_B is a cubic in g whose
//                   coefficients are the block's central moments (count, mean,
//                   M2, M3, pooled with the Chan/Pebay formulas): O(1) per
//                   evaluation. Its single real root is found by Halley steps
//                   (bracketed_root) from the larger pooled block's root,
//                   usually one or two. A pooling's root lies between the two
//                   pooled blocks' values (F is monotone): the bracket.
// Any other p has no finite block summary: a PAV pooling would re-solve F_B
// over all of its block's elements, O(n m) per row for a mixed block of m
// entries. Because w takes two values, the solution has one mixed block,
// which solve_row_threshold finds directly (below): O(log n + m) per
// evaluation of one monotone equation. Every root is found to machine
// precision, relative to an anchor inside the row or block (the first element
// for CubicStats, the mean for MeanStats, s[k-1] for the threshold), so
// s - g is formed without cancelling two large numbers.
//
// The mask of the top-k problem has one "mixed" block around position k;
// blocks left of it are singletons (or ties) at 1, right of it at 0 (exact
// zeros: the sparsity). A block whose mass W_B is 0 or |B| ("pure": every
// element exactly 0 or 1) has a zero Jacobian.
//
// Backward (per block B, a_i = psi'(s_i - g_B), A_B = sum_{B} a_i):
//   dy_i/ds_j = a_i [i = j] - a_i a_j / A_B     (symmetric),
// so dL/dx = (1/eps) * (u - pi * sum_B u) scattered through perm, with
// u = a * g (g the upstream gradient) and pi = a / A_B: the rank-mode block VJP
// of isotonic.h (vjp_row<T, Vjp::Rank>) applied to u. emit writes a (in input
// order, for u = a * g) and pi (sorted order, the VJP's weights); pure blocks
// write a = pi = 0.
#pragma once

#include <cfloat>
#include <cstdint>
#include <stdexcept>

#include "../common/common.h"
#include "dispatch.h"
#include "isotonic.h"

namespace diffcomb {
namespace isotonic {

// Block-solve codes shared with diffcomb/topk.py.
enum TopkMethod : int { kTopkQuadratic = 0, kTopkCubic = 1, kTopkPower = 2 };

// psi(u) = sign(u) |u|^r and its derivative r |u|^(r-1), r >= 1. Small
// integer r (p = 1 + 1/r: 1.5, 1.25, ...) multiplies instead of calling pow.
DC_HOST_DEVICE DC_INLINE double power_psi(double u, double r, double& deriv) {
  const double au = fabs(u);
  double q;  // |u|^(r-1); 1 for r = 1, also at u = 0 (as pow(0, 0))
  const int ri = static_cast<int>(r);
  if (double(ri) == r && ri <= 8) {
    q = 1.0;
    for (int j = 1; j < ri; ++j) q *= au;
  } else {
    q = pow(au, r - 1.0);
  }
  deriv = r * q;
  return copysign(q * au, u);
}

// A point of a block equation F (increasing in x): F(x), F'(x), F''(x) (0
// when not known), and the sum of the magnitudes of F's terms (F's rounding
// noise is a few ulps of it).
struct RootPoint {
  double x;
  double f;
  double df;
  double d2f;
  double scale;
};

// The root of an increasing F in [lo, hi] (F(lo) <= 0 <= F(hi)), from the
// evaluated point p. Steps are Newton's, or Halley's when F'' is known
// (cubic convergence); a step that leaves the bracket or is not at least half
// the previous one is replaced by bisection, and every evaluation shrinks the
// bracket. Stops when F(x) is at its rounding noise, when the step is below an
// ulp of x, when (smooth F only) Halley's step is so small that its own error
// (about |step|^3 |F''/F'|^2) is below an ulp (the step is then taken without
// a new evaluation), or when the bracket is two adjacent doubles: the root to
// machine precision. eval(x) returns the RootPoint at x. A piecewise F (kinks
// inside the bracket) passes smooth = false: a kink inside a step would void
// Halley's error estimate.
template <class Eval>
DC_HOST_DEVICE DC_INLINE RootPoint bracketed_root(const Eval& eval, double lo, double hi, RootPoint p, bool smooth) {
  double last_step = hi - lo;
  for (int iter = 0; iter < 200; ++iter) {
    if (fabs(p.f) <= 4.0 * DBL_EPSILON * p.scale) break;
    if (p.f < 0.0) {
      lo = p.x;
    } else {
      hi = p.x;
    }
    // Newton: f / f'; Halley: f f' / (f'^2 - f f'' / 2), used while its denominator stays
    // above half of f'^2 (one division either way).
    const double df2 = p.df * p.df;
    const double halley = df2 - 0.5 * p.f * p.d2f;
    const double step = p.d2f != 0.0 && halley > 0.5 * df2 ? p.f * p.df / halley : p.f / p.df;
    double next = p.x - step;
    if (next > lo && next < hi && fabs(step) <= 0.5 * last_step) {
      if (fabs(step) <= DBL_EPSILON * fabs(p.x)) break;
      if (smooth && p.d2f != 0.0) {
        if (fabs(step * step * step) * p.d2f * p.d2f <= DBL_EPSILON * fabs(next) * df2) {
          p.x = next;
          return p;
        }
      }
      last_step = fabs(step);
    } else {
      next = 0.5 * (lo + hi);
      last_step = 0.5 * (hi - lo);
      if (!(next > lo && next < hi)) break;
    }
    p = eval(next);
  }
  return p;
}

// p = 2: the L2 projection's statistics.
struct QuadraticStats {
  MeanStats m;
  template <class T>
  DC_HOST_DEVICE DC_INLINE static QuadraticStats leaf(const T* s, int32_t i, double w, double) {
    return {MeanStats::projection_leaf(double(s[i]), w)};
  }
  DC_HOST_DEVICE DC_INLINE double value() const { return m.value(); }
  DC_HOST_DEVICE DC_INLINE QuadraticStats pooled(const QuadraticStats& right) const { return {m.pooled(right.m)}; }
  template <class T>
  DC_HOST_DEVICE DC_INLINE double residual(const T*, double s) const { return m.projection_residual(s); }
  DC_HOST_DEVICE DC_INLINE double slope() const { return m.weight; }
  DC_HOST_DEVICE DC_INLINE bool pure() const { return m.sum_w == 0.0 || m.sum_w == m.weight; }
  DC_HOST_DEVICE DC_INLINE static double psi(double u, double, double& deriv) {
    deriv = 1.0;
    return u;
  }
};

// p = 4/3: psi(u) = u^3. With c_i = s_i - mean (central) and d = mean - g,
// F(d) = sum (c_i + d)^3 - W = n d^3 + 3 M2 d + M3 - W (sum c_i = 0): a cubic
// in d, increasing (M2 >= 0), with one real root, evaluated in O(1) from the
// moments; pooling merges the moments (Chan/Pebay) and solves the cubic by
// bracketed_root from the larger block's root.
struct CubicStats {
  double anchor;  // the block's first (largest) s; the moments are of t = s - anchor
  double n;
  double mean;
  double m2;  // sum (t - mean)^2
  double m3;  // sum (t - mean)^3
  double mass;
  double d;  // root: g = anchor + mean - d
  double val;

  template <class T>
  DC_HOST_DEVICE DC_INLINE static CubicStats leaf(const T* s, int32_t i, double w, double) {
    const double si = double(s[i]);
    return {si, 1.0, 0.0, 0.0, 0.0, w, w, si - w};  // n d^3 = w: d = w for w in {0, 1}
  }
  DC_HOST_DEVICE DC_INLINE double value() const { return val; }

  DC_HOST_DEVICE DC_INLINE CubicStats pooled(const CubicStats& right) const {
    const double nl = n, nr = right.n, nt = nl + nr, inv = 1.0 / nt;
    const double mean_r = (right.anchor - anchor) + right.mean;  // right's mean, in this block's t
    const double delta = mean_r - mean;
    const double mt = mean + delta * (nr * inv);
    const double m2t = m2 + right.m2 + delta * delta * (nl * nr * inv);
    const double m3t = m3 + right.m3 + delta * delta * delta * (nl * nr * (nl - nr) * inv * inv) +
                       3.0 * delta * (nl * right.m2 - nr * m2) * inv;
    const double masst = mass + right.mass;
    // The two blocks' roots in the pooled block's d = (anchor + mt) - g.
    const double d_left = (mt - mean) + d;
    const double d_right = (mt - mean_r) + right.d;
    const auto eval = [&](double x) {
      const double c = m3t - masst;
      return RootPoint{x, ((nt * x) * x + 3.0 * m2t) * x + c, 3.0 * (nt * x * x + m2t), 6.0 * nt * x,
                       fabs(x) * (nt * x * x + 3.0 * m2t) + fabs(m3t) + masst};
    };
    const RootPoint root = bracketed_root(eval, d_left < d_right ? d_left : d_right,
                                          d_left < d_right ? d_right : d_left, eval(nl >= nr ? d_left : d_right), true);
    return {anchor, nt, mt, m2t, m3t, masst, root.x, (anchor + mt) - root.x};
  }
  template <class T>
  DC_HOST_DEVICE DC_INLINE double residual(const T*, double s) const {
    return ((s - anchor) - mean) + d;
  }
  DC_HOST_DEVICE DC_INLINE double slope() const { return 3.0 * (m2 + n * d * d); }
  DC_HOST_DEVICE DC_INLINE bool pure() const { return mass == 0.0 || mass == n; }
  DC_HOST_DEVICE DC_INLINE static double psi(double u, double, double& deriv) {
    deriv = 3.0 * u * u;
    return u * u * u;
  }
};

// The arrays of one row of the sparse top-k (or, at offset 0, of a whole batch). s: the row's z
// sorted descending; perm: its input indices. Outputs: out[perm[i]] = y_i, deriv[perm[i]] = a_i
// (input order), weights[i] = a_i / A_B (sorted order). Both solves (the PAV of SparseTopk and the
// threshold solve) read and write a row through it.
template <class T>
struct SparseTopkRow {
  const T* s;
  const int32_t* perm;
  T* out;
  T* deriv;
  T* weights;

  DC_HOST_DEVICE DC_INLINE SparseTopkRow at(int64_t off) const {
    return {s + off, perm + off, out + off, deriv + off, weights + off};
  }
  DC_HOST_DEVICE DC_INLINE bool finite(int32_t i) const { return is_finite(s[i]); }
  DC_HOST_DEVICE DC_INLINE void set(int32_t i, T y, T a, T pi) const {
    out[perm[i]] = y;
    deriv[perm[i]] = a;
    weights[i] = pi;
  }
  DC_HOST_DEVICE DC_INLINE void fail(int32_t i) const { set(i, quiet_nan<T>(), quiet_nan<T>(), quiet_nan<T>()); }
};

// One row of the sparse top-k as a Problem of isotonic.h's PAV, with block statistics S.
template <class T, class S>
struct SparseTopk {
  using Stats = S;
  SparseTopkRow<T> io;
  int32_t k;
  double r;

  DC_HOST_DEVICE DC_INLINE bool finite(int32_t i) const { return io.finite(i); }
  DC_HOST_DEVICE DC_INLINE void fail(int32_t i) const { io.fail(i); }
  DC_HOST_DEVICE DC_INLINE Stats leaf(int32_t i) const { return Stats::leaf(io.s, i, i < k ? 1.0 : 0.0, r); }

  DC_HOST_DEVICE DC_INLINE void emit(int32_t i, const Stats& block) const {
    double a;
    const double y = Stats::psi(block.residual(io.s, double(io.s[i])), r, a);
    double pi = 0.0;
    if (block.pure()) {
      a = 0.0;
    } else {
      const double total = block.slope();
      pi = total > 0.0 ? a / total : 0.0;
    }
    io.set(i, T(y), T(a), T(pi));
  }
};

// Any other p: the threshold solve. The permutahedron of w is the capped
// simplex {y in [0,1]^n : sum y = k}, and its KKT conditions give
//   y_i = clip(psi(s_i - tau), 0, 1),   G(tau) = sum_i y_i - k = 0,
// i.e. the PAV solution has (besides ties) singleton blocks at 1, one mixed
// block, singleton blocks at 0; the mixed block's value is tau. With
// c = s[k-1] and tau = c - t, G is increasing in t, G(0) <= -1 and G(1) >= 0,
// so t lies in (0, 1]. An evaluation of G at t finds the entries at 1 and the
// end of the mixed block by binary search (z_i = (s_i - c) + t decreases in i)
// and sums psi over the mixed block: O(log n + m), m = its size, against
// O(|B|) per pooling (O(n m) per row) for a PAV whose block value has no
// finite summary. bracketed_root then solves G to machine precision. The
// output is written in the PAV's saved form (starts, weights, deriv), so the
// backward is the same block VJP. CPU and CUDA (one thread per row) call it.
template <class T>
struct ThresholdRow {
  const T* s;
  int32_t n;
  int32_t k;
  double r;
  double c;

  DC_HOST_DEVICE DC_INLINE double z(int32_t i, double t) const { return (double(s[i]) - c) + t; }
  // The first i in [lo, hi) with z(i, t) < bound (or hi): z decreases in i.
  DC_HOST_DEVICE DC_INLINE int32_t first_below(int32_t lo, int32_t hi, double t, double bound, bool strict) const {
    while (lo < hi) {
      const int32_t mid = lo + (hi - lo) / 2;
      const double v = z(mid, t);
      if (strict ? v <= bound : v < bound) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    return lo;
  }
  // [head, end): the entries strictly between 0 and 1 (head entries are >= 1, the rest <= 0).
  DC_HOST_DEVICE DC_INLINE int32_t head(double t) const { return first_below(0, n, t, 1.0, false); }
  DC_HOST_DEVICE DC_INLINE int32_t end(double t, int32_t from) const { return first_below(from, n, t, 0.0, true); }

  DC_HOST_DEVICE DC_INLINE RootPoint eval(double t) const {
    const int32_t h = head(t);
    const int32_t e = end(t, h);
    RootPoint p{t, double(h) - double(k), 0.0, 0.0, 0.0};  // h - k is exact: only the sum rounds
    double d2 = 0.0;  // sum psi''(z) = sum (r - 1) psi'(z) / z over 0 < z < 1: Halley's steps
    for (int32_t i = h; i < e; ++i) {
      double d;
      const double zi = z(i, t);
      const double v = power_psi(zi, r, d);
      p.f += v;
      p.df += d;
      d2 += d / zi;
      p.scale += fabs(v);
    }
    p.d2f = (r - 1.0) * d2;
    return p;
  }
};

template <class T>
DC_HOST_DEVICE DC_INLINE void solve_row_threshold(const SparseTopkRow<T>& io, int32_t n, int32_t k, double r,
                                                  int32_t* starts) {
  if (!finite_or_fail(io, n, starts)) return;
  int32_t h = k, e = k;  // k = 0 or n: every entry 0 or 1
  double t = 0.0;
  ThresholdRow<T> row{io.s, n, k, r, k > 0 ? double(io.s[k - 1]) : 0.0};
  if (k > 0 && k < n) {
    // t = 1 (entry k-1 exactly at 1) is the root in the hard regime (a gap of at least 1 after
    // the k-th entry); an iteration would only approach it.
    const RootPoint top = row.eval(1.0);
    t = top.f == 0.0 ? 1.0 : bracketed_root([&](double x) { return row.eval(x); }, 0.0, 1.0, top, false).x;
    h = row.head(t);
    e = row.end(t, h);
  }
  int32_t nblocks = 0;
  for (int32_t i = 0; i < h; ++i) {  // at 1
    io.set(i, T(1), T(0), T(0));
    starts[nblocks++] = i;
  }
  if (e > h) {  // the mixed block
    double total = 0.0;
    for (int32_t i = h; i < e; ++i) {
      double a;
      const double y = power_psi(row.z(i, t), r, a);
      io.set(i, T(y), T(a), T(0));
      total += a;
    }
    for (int32_t i = h; i < e; ++i) {
      io.weights[i] = total > 0.0 ? T(double(io.deriv[io.perm[i]]) / total) : T(0);
    }
    starts[nblocks++] = h;
  }
  for (int32_t i = e; i < n; ++i) {  // at 0
    io.set(i, T(0), T(0), T(0));
    starts[nblocks++] = i;
  }
  finish_starts(starts, nblocks, n);
}

// Largest PAV block statistic (CUDA work arrays).
constexpr int64_t kTopkStatsBytes =
    sizeof(CubicStats) > sizeof(QuadraticStats) ? sizeof(CubicStats) : sizeof(QuadraticStats);

// The rows of a batch: row(r) is row r's Problem for isotonic.h's PAV with the block statistics S
// (QuadraticStats, CubicStats); with S = void, solve(r, starts) runs the threshold solve on row r.
template <class T, class S>
struct SparseTopkBatch {
  using Problem = SparseTopk<T, S>;
  SparseTopkRow<T> io;
  int64_t n;
  int32_t k;
  double r;
  DC_HOST_DEVICE DC_INLINE Problem row(int64_t row_index) const { return Problem{io.at(row_index * n), k, r}; }
  DC_HOST_DEVICE DC_INLINE void solve(int64_t row_index, int32_t* starts) const {
    solve_row_threshold(io.at(row_index * n), static_cast<int32_t>(n), k, r, starts + row_index * (n + 1));
  }
};

// For the dtype and method codes: pav(batch) with a SparseTopkBatch<T, Stats>
// (methods 0 and 1, psi exponents 1 and 3), or threshold(batch) with a
// SparseTopkBatch<T, void> (method 2, exponent r = 1 / (p - 1)).
template <class Pav, class Threshold>
void with_sparse_topk_batch(std::uintptr_t s, std::uintptr_t perm, std::uintptr_t out, std::uintptr_t deriv,
                            std::uintptr_t weights, int64_t n, int64_t k, double r, int method, int dtype, Pav&& pav,
                            Threshold&& threshold) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const SparseTopkRow<T> io{as_ptr<const T>(s), as_ptr<const int32_t>(perm), as_ptr<T>(out), as_ptr<T>(deriv),
                              as_ptr<T>(weights)};
    const int32_t len_k = static_cast<int32_t>(k);
    switch (method) {
      case kTopkQuadratic: pav(SparseTopkBatch<T, QuadraticStats>{io, n, len_k, 1.0}); break;
      case kTopkCubic: pav(SparseTopkBatch<T, CubicStats>{io, n, len_k, 3.0}); break;
      case kTopkPower: threshold(SparseTopkBatch<T, void>{io, n, len_k, r}); break;
      default: throw std::invalid_argument("diffcomb native: unknown sparse top-k method");
    }
  });
}

}  // namespace isotonic
}  // namespace diffcomb
