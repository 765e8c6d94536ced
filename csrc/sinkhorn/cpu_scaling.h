// Kernel-domain (scaling) Sinkhorn for small dense problems on one CPU thread
// (cpu.cpp): the iterations of forward.h's log-domain driver, with the same
// updates, convergence checks, recorded iterates and read-out, but with the
// Gibbs kernel formed once instead of 2 n m exponentials per iteration
// (Sinkhorn-Knopp). With c0 = min C,
//     K_ij = exp(-(C_ij - c0) / eps),   q = K v,   u = a / q,   r = K^T u,   v = b / r
// (v = b at the start: g = 0) are the log-domain updates exponentiated:
//     f_i = c0 - eps log q_i,   g_j = -eps log r_j,
//     u_i = a_i exp((f_i - c0) / eps),   v_j = b_j exp(g_j / eps),   P_ij = u_i K_ij v_j,
// and the row marginal error of the state (f_old, g) is
//     sum_i a_i |q_new_i / q_old_i - 1|   (sinkhorn.h, row_error: exp((f_old - f_new) / eps)).
// Everything runs in double (float32 problems included), so the results are
// those of the log domain to the rounding of the dtype.
//
// When it is safe (Schmitzer 2019 on the stability of scaling iterations).
// K's entries lie in [exp(-s), 1] with s = (max C - min C) / eps; s <=
// kScalingRange = 100 keeps them (e^-100 ~ 2^-144) far inside double's normal
// range. The iterates are monitored: every q_i and r_j must stay in
// [2^-600, 2^600] (a sum of positive terms whose largest is at least 2^-600
// has its full relative precision; u = a / q and v = b / r then stay finite
// for any float32 weight, 2^128 * 2^600 < 2^1023, and n of their products with K
// cannot overflow). From v = b, Sinkhorn's potentials stay within about 2 s of
// the cost range (osc f, osc g <= max C - min C after each update), so the
// monitor only trips on extreme weights (masses far from 1, a weight of 1e300),
// where the problem is solved again in the log domain from the start (the
// caller), as are problems with s > kScalingRange or non-finite inputs. The
// choice depends on the problem's own data only: a result does not depend on
// the batch or the thread count.
//
// Where the two can differ: against the float64 log domain, every output and
// err agree to rounding (tests/test_sinkhorn_scaling.py), n_iter exactly. The
// float32 log domain rounds each exponent log b_j + (g_j - C_ij) / eps to
// float, an error that slowly converging problems amplify (measured: f and g
// off by 2e-6 after 700 iterations at s = 90, where the kernel domain is within
// 3e-8 of float64); its err at a check differs by as much, so where err lies
// that close to tol the two stop one check apart. Included by cpu.cpp only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../common/vmath.h"
#include "cpu_vec.h"
#include "forward.h"

namespace diffcomb {
namespace sinkhorn {
namespace {

constexpr double kScalingRange = 100.0;   // the largest (max C - min C) / eps served
constexpr double kScalingLow = 0x1p-600;  // the range q and r must stay in
constexpr double kScalingHigh = 0x1p600;

// min and max of c[0..len); false when an entry is not finite (x - x is NaN for NaN and inf).
template <class T>
DC_SWEEP bool cost_range_impl(const T* __restrict c, int64_t len, double* lo_out, double* hi_out) {
  using X = Vec<T>;
  using V = typename X::V;
  constexpr int L = X::kWidth;
  V lo = V{} + c[0], hi = lo, bad = V{};
  int64_t k = 0;
  for (; k + L <= len; k += L) {
    const V x = load<V>(c + k);
    lo = x < lo ? x : lo;
    hi = x > hi ? x : hi;
    bad += x - x;
  }
  T l = c[0], h = c[0], b = T(0);
  for (int i = 0; i < L; ++i) {
    l = lo[i] < l ? lo[i] : l;
    h = hi[i] > h ? hi[i] : h;
    b += bad[i];
  }
  for (; k < len; ++k) {
    l = c[k] < l ? c[k] : l;
    h = c[k] > h ? c[k] : h;
    b += c[k] - c[k];
  }
  *lo_out = double(l);
  *hi_out = double(h);
  return b == T(0);
}

DC_VECTOR_CLONES bool cost_range(const float* c, int64_t len, double* lo, double* hi) {
  return cost_range_impl(c, len, lo, hi);
}
DC_VECTOR_CLONES bool cost_range(const double* c, int64_t len, double* lo, double* hi) {
  return cost_range_impl(c, len, lo, hi);
}

// K[k] = exp((c0 - c[k]) / eps), k < len (arguments in [-kScalingRange, 0]).
template <class T>
DC_SWEEP void gibbs_impl(const T* __restrict c, int64_t len, double c0, double inv_eps, double* __restrict K) {
#pragma omp simd
  for (int64_t k = 0; k < len; ++k) K[k] = vmath::exp((c0 - double(c[k])) * inv_eps);
}

DC_VECTOR_CLONES void gibbs(const float* c, int64_t len, double c0, double inv_eps, double* K) {
  gibbs_impl(c, len, c0, inv_eps, K);
}
DC_VECTOR_CLONES void gibbs(const double* c, int64_t len, double c0, double inv_eps, double* K) {
  gibbs_impl(c, len, c0, inv_eps, K);
}

// out = sum_k x_k M[k, :] over the rows k < rows of M (rows, len): each out_i summed in k order.
DC_VECTOR_CLONES void combine_rows(const double* __restrict M, const double* __restrict x, int64_t rows,
                                   int64_t len, double* __restrict out) {
  std::fill(out, out + len, 0.0);
  for (int64_t k = 0; k < rows; ++k) {
    const double xk = x[k];
    const double* row = M + k * len;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) out[i] += xk * row[i];
  }
}

// out_i = shift - eps log x_i (x positive and normal): potentials from q or r.
template <class T>
DC_SWEEP void potentials_impl(const double* __restrict x, int64_t len, double shift, double eps, T* __restrict out) {
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) out[i] = T(shift - eps * vmath::log_positive(x[i]));
}

DC_VECTOR_CLONES void potentials(const double* x, int64_t len, double shift, double eps, float* out) {
  potentials_impl(x, len, shift, eps, out);
}
DC_VECTOR_CLONES void potentials(const double* x, int64_t len, double shift, double eps, double* out) {
  potentials_impl(x, len, shift, eps, out);
}

// Plan row p_j = u K_j v_j (stored as T); returns sum_j p_j, and sum_j p_j g_j in *gsum
// (8-lane accumulators, so the sums do not depend on the instruction set).
template <class T>
DC_SWEEP double scaled_row_impl(const double* __restrict K, const double* __restrict v, const double* __restrict g,
                                double u, int64_t len, T* __restrict p, double* gsum) {
  using X = Vec<double>;
  using V = typename X::V;
  constexpr int L = X::kWidth;
  V acc = V{}, gacc = V{};
  int64_t j = 0;
  for (; j + L <= len; j += L) {
    const V x = u * load<V>(K + j) * load<V>(v + j);
    for (int k = 0; k < L; ++k) p[j + k] = T(x[k]);
    acc += x;
    gacc += x * load<V>(g + j);
  }
  double s = lane_sum<double>(acc, L), sg = lane_sum<double>(gacc, L);
  for (; j < len; ++j) {
    const double x = u * K[j] * v[j];
    p[j] = T(x);
    s += x;
    sg += x * g[j];
  }
  *gsum = sg;
  return s;
}

DC_VECTOR_CLONES double scaled_row(const double* K, const double* v, const double* g, double u, int64_t len,
                                   float* p, double* gsum) {
  return scaled_row_impl(K, v, g, u, len, p, gsum);
}
DC_VECTOR_CLONES double scaled_row(const double* K, const double* v, const double* g, double u, int64_t len,
                                   double* p, double* gsum) {
  return scaled_row_impl(K, v, g, u, len, p, gsum);
}

// The kernel domain's work arrays for one thread (sized on first use).
struct ScalingWork {
  std::vector<double> buf;
  double *K, *KT, *q, *q_new, *u, *r, *v, *w, *f, *g;
  void size(int64_t n, int64_t m) {
    buf.resize(static_cast<size_t>(2 * n * m + 5 * n + 4 * m));
    K = buf.data();
    KT = K + n * m;
    q = KT + n * m;
    q_new = q + n;
    u = q_new + n;
    f = u + n;
    w = f + n;  // the weights a (n), then b (m), as double
    r = w + n + m;
    v = r + m;
    g = v + m;
  }
};

// Whether every x_i, i < len, is in [kScalingLow, kScalingHigh] (false for NaN).
DC_MATH_INLINE bool in_scaling_range(const double* x, int64_t len) {
  bool ok = true;
  for (int64_t i = 0; i < len; ++i) ok &= x[i] >= kScalingLow && x[i] <= kScalingHigh;
  return ok;
}

// x_i = w_i / d_i where w_i > 0, else 0 (a zero weight drops out, as log 0 = -inf does).
DC_MATH_INLINE void scale_weights(const double* w, const double* d, int64_t len, double* x) {
  for (int64_t i = 0; i < len; ++i) x[i] = w[i] > 0 ? w[i] / d[i] : 0.0;
}

// Problem p of the plain entry point (no options, no warm start) in the kernel domain. False when it
// is not served (non-finite inputs, s > kScalingRange, or the monitor tripped): then nothing but
// history rows was written, and those are reset to 0, for the log-domain driver to solve it.
template <class T>
bool scaling_problem(const ForwardProblem<T, T>& p, ScalingWork& w) {
  const int64_t n = p.n, m = p.m;
  const double eps = p.scale.eps, inv_eps = p.scale.inv_eps;
  double lo, hi;
  if (!cost_range(p.C, n * m, &lo, &hi) || !((hi - lo) * inv_eps <= kScalingRange)) return false;
  w.size(n, m);
  double bad = 0.0;
  for (int64_t i = 0; i < n; ++i) bad += (w.w[i] = double(p.a[i])) - w.w[i];
  for (int64_t j = 0; j < m; ++j) bad += (w.w[n + j] = double(p.b[j])) - w.w[n + j];
  if (bad != 0.0) return false;
  const double c0 = lo;
  const double *wa = w.w, *wb = w.w + n;
  gibbs(p.C, n * m, c0, inv_eps, w.K);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) w.KT[j * n + i] = w.K[i * m + j];
  for (int64_t j = 0; j < m; ++j) w.v[j] = wb[j] > 0 ? wb[j] : 0.0;  // g = 0
  if (p.gh) std::fill(p.gh, p.gh + m, T(0));

  const int64_t last = iteration_limit(n, m, p.max_iter);
  const StopRule stop{last, p.check_every, p.tol};
  int64_t iters = 0, t = 1;
  double err = NAN;
  bool ok = true;
  for (;; ++t) {
    if (stop.counted(t)) {
      iters = last;
      break;
    }
    combine_rows(w.KT, w.v, m, n, w.q_new);  // the f-update from g^{t-1}: q = K v
    if (!(ok = in_scaling_range(w.q_new, n))) break;
    const bool tested = stop.tests(t);
    if (tested) {
      err = 0.0;
      for (int64_t i = 0; i < n; ++i) err += wa[i] > 0 ? std::fabs(wa[i] * (w.q_new[i] / w.q[i] - 1.0)) : 0.0;
    }
    if (stop.stops(t, tested, err, &iters)) break;
    std::swap(w.q, w.q_new);
    scale_weights(wa, w.q, n, w.u);
    if (p.fh) potentials(w.q, n, c0, eps, p.fh + (t - 1) * n);
    combine_rows(w.K, w.u, n, m, w.r);  // the g-update from f^t: r = K^T u
    if (!(ok = in_scaling_range(w.r, m))) break;
    scale_weights(wb, w.r, m, w.v);
    if (p.gh) potentials(w.r, m, 0.0, eps, p.gh + t * m);
  }
  if (!ok) {  // t - 1 iterations recorded (and part of iteration t)
    if (p.fh) std::fill(p.fh, p.fh + std::min(t, p.max_iter) * n, T(0));
    if (p.gh) std::fill(p.gh, p.gh + (std::min(t, p.max_iter) + 1) * m, T(0));
    return false;
  }
  // Read-out at (f^iters, g^iters): P, and sum_ij P_ij (f_i + g_j) (forward.h).
  potentials(w.q, n, c0, eps, w.f);
  potentials(w.r, m, 0.0, eps, w.g);
  double value = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    double gsum;
    const double rs = scaled_row(w.K + i * m, w.v, w.g, w.u[i], m, p.P + i * m, &gsum);
    value += (rs > 0 ? w.f[i] * rs : 0.0) + gsum;
    p.f[i] = T(w.f[i]);
  }
  for (int64_t j = 0; j < m; ++j) p.g[j] = T(w.g[j]);
  *p.cost = T(value);
  *p.n_iter = iters;
  *p.err = err;
  return true;
}

}  // namespace
}  // namespace sinkhorn
}  // namespace diffcomb
