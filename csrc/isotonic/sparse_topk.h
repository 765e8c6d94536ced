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
// Three block statistics (the template parameter of the PAV):
//   QuadraticStats  p = 2 (r = 1): MeanStats; the value is a mean. Identical
//                   arithmetic to soft_topk.
//   CubicStats      p = 4/3 (r = 3): psi(u) = u^3, so F_B is a cubic in g whose
//                   coefficients are the block's central moments (count, mean,
//                   M2, M3, pooled with the Chan/Pebay formulas): O(1) per
//                   evaluation. Its single real root is found by Halley steps
//                   (bracketed_root) from the larger pooled block's root,
//                   usually one or two.
//   PowerStats<T>   any other p: F_B has no finite summary, so a block keeps
//                   its range of the row and a pooling solves F_B over all its
//                   elements by safeguarded Newton (bracketed_root): O(|B|) per
//                   evaluation, a few evaluations per pooling, so O(n m) for a
//                   partly selected block of m entries.
// A pooling's root lies between the two pooled blocks' values (F is monotone),
// which brackets every solve; solves stop at machine precision.
// Every statistic keeps its root relative to an anchor inside the block (the
// first element for CubicStats and PowerStats, the mean for MeanStats), so
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
// ulp of x, when Halley's step is so small that its own error (about
// |step|^3 |F''/F'|^2) is below an ulp (the step is then taken without a new
// evaluation), or when the bracket is two adjacent doubles: the root to
// machine precision. eval(x) returns the RootPoint at x.
template <class Eval>
DC_HOST_DEVICE DC_INLINE RootPoint bracketed_root(const Eval& eval, double lo, double hi, RootPoint p) {
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
      if (p.d2f != 0.0) {
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
                                          d_left < d_right ? d_right : d_left, eval(nl >= nr ? d_left : d_right));
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

// Any p: the block is the range [begin, end) of the row's sorted values s; the
// root is kept as x = s[begin] - g, so s_i - g = (s_i - s[begin]) + x, and
// F(x) = sum_B psi((s_i - s[begin]) + x) - W costs O(|B|).
template <class T>
struct PowerStats {
  const T* s;
  int32_t begin;
  int32_t end;
  double r;
  double mass;
  double x;       // the root, s[begin] - g
  double slope_;  // F'(x) = sum_B psi'(s_i - g)
  double val;

  DC_HOST_DEVICE DC_INLINE static PowerStats leaf(const T* s, int32_t i, double w, double r) {
    double deriv;
    power_psi(w, r, deriv);  // psi(w) = w: x = w
    return {s, i, i + 1, r, w, w, deriv, double(s[i]) - w};
  }
  DC_HOST_DEVICE DC_INLINE double value() const { return val; }

  // The terms of F for the elements [lo, hi) at x, added to p.
  DC_HOST_DEVICE DC_INLINE void add_terms(int32_t lo, int32_t hi, double anchor, double at, RootPoint& p) const {
    for (int32_t i = lo; i < hi; ++i) {
      double di;
      const double v = power_psi((double(s[i]) - anchor) + at, r, di);
      p.f += v;
      p.df += di;
      p.scale += fabs(v);
    }
  }

  DC_HOST_DEVICE DC_INLINE PowerStats pooled(const PowerStats& right) const {
    const double anchor = double(s[begin]);
    const double mass_t = mass + right.mass;
    const double x_left = x;
    const double x_right = (anchor - double(s[right.begin])) + right.x;
    const auto eval = [&](double at) {
      RootPoint p{at, -mass_t, 0.0, 0.0, mass_t};
      add_terms(begin, right.end, anchor, at, p);
      return p;
    };
    // Start at the larger block's root, where its part of F is 0 and its slope
    // is known: only the smaller block is evaluated there.
    RootPoint start;
    if (end - begin >= right.end - right.begin) {
      start = RootPoint{x_left, -right.mass, slope_, 0.0, mass_t};
      add_terms(right.begin, right.end, anchor, x_left, start);
    } else {
      start = RootPoint{x_right, -mass, right.slope_, 0.0, mass_t};
      add_terms(begin, end, anchor, x_right, start);
    }
    const RootPoint root = bracketed_root(eval, x_left < x_right ? x_left : x_right,
                                          x_left < x_right ? x_right : x_left, start);
    return {s, begin, right.end, r, mass_t, root.x, root.df, anchor - root.x};
  }
  template <class U>
  DC_HOST_DEVICE DC_INLINE double residual(const U*, double si) const { return (si - double(s[begin])) + x; }
  DC_HOST_DEVICE DC_INLINE double slope() const { return slope_; }
  DC_HOST_DEVICE DC_INLINE bool pure() const { return mass == 0.0 || mass == double(end - begin); }
  DC_HOST_DEVICE DC_INLINE static double psi(double u, double r, double& deriv) { return power_psi(u, r, deriv); }
};

// One row of the sparse top-k (a Problem of isotonic.h's PAV). s: the row's
// z sorted descending; perm: its input indices. Outputs: out[perm[i]] = y_i,
// deriv[perm[i]] = a_i (input order; nullptr skips it), weights[i] = a_i / A_B.
template <class T, class S>
struct SparseTopk {
  using Stats = S;
  const T* s;
  const int32_t* perm;
  T* out;
  T* deriv;
  T* weights;
  int32_t k;
  double r;

  DC_HOST_DEVICE DC_INLINE bool finite(int32_t i) const { return is_finite(s[i]); }
  DC_HOST_DEVICE DC_INLINE Stats leaf(int32_t i) const { return Stats::leaf(s, i, i < k ? 1.0 : 0.0, r); }

  DC_HOST_DEVICE DC_INLINE void emit(int32_t i, const Stats& block) const {
    double a;
    const double y = Stats::psi(block.residual(s, double(s[i])), r, a);
    out[perm[i]] = T(y);
    double pi = 0.0;
    if (block.pure()) {
      a = 0.0;
    } else {
      const double total = block.slope();
      pi = total > 0.0 ? a / total : 0.0;
    }
    if (deriv != nullptr) deriv[perm[i]] = T(a);
    weights[i] = T(pi);
  }

  DC_HOST_DEVICE DC_INLINE void fail(int32_t i) const {
    out[perm[i]] = quiet_nan<T>();
    if (deriv != nullptr) deriv[perm[i]] = quiet_nan<T>();
    weights[i] = quiet_nan<T>();
  }
};

template <class T, class S>
struct SparseTopkBatch {
  using Problem = SparseTopk<T, S>;
  const T* s;
  const int32_t* perm;
  T* out;
  T* deriv;
  T* weights;
  int64_t n;
  int32_t k;
  double r;
  DC_HOST_DEVICE DC_INLINE Problem row(int64_t row_index) const {
    const int64_t off = row_index * n;
    return Problem{s + off, perm + off, out + off, deriv == nullptr ? nullptr : deriv + off, weights + off, k, r};
  }
};

// Largest block statistic of the three (CUDA work arrays).
constexpr int64_t kTopkStatsBytes =
    sizeof(CubicStats) > sizeof(PowerStats<double>) ? sizeof(CubicStats) : sizeof(PowerStats<double>);

// f(batch) with batch a SparseTopkBatch<T, Stats> for the dtype and method
// codes; r is psi's exponent 1 / (p - 1) (methods 0 and 1 use 1 and 3).
template <class F>
void with_sparse_topk_batch(std::uintptr_t s, std::uintptr_t perm, std::uintptr_t out, std::uintptr_t deriv,
                            std::uintptr_t weights, int64_t n, int64_t k, double r, int method, int dtype, F&& f) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const auto make = [&](auto stats_tag, double exponent) {
      using S = decltype(stats_tag);
      f(SparseTopkBatch<T, S>{as_ptr<const T>(s), as_ptr<const int32_t>(perm), as_ptr<T>(out),
                              deriv == 0 ? nullptr : as_ptr<T>(deriv), as_ptr<T>(weights), n,
                              static_cast<int32_t>(k), exponent});
    };
    switch (method) {
      case kTopkQuadratic: make(QuadraticStats{}, 1.0); break;
      case kTopkCubic: make(CubicStats{}, 3.0); break;
      case kTopkPower: make(PowerStats<T>{}, r); break;
      default: throw std::invalid_argument("diffcomb native: unknown sparse top-k method");
    }
  });
}

}  // namespace isotonic
}  // namespace diffcomb
