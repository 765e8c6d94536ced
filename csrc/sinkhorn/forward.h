// The forward of log-domain Sinkhorn (SPEC 4.1), once for both devices: the
// finite check, the iteration driver with its convergence test, and the plan
// read-out, for one problem over a sweeper (sweep.h). Besides the common
// loops the sweeper provides three sweeps over lines of C:
//
//   s.row_lse(wb, emit)   for each of its rows i, LSE_j(wb_j - C_ij / eps) as
//                         (max, sum of exp(term - max)): emit(i, max, sum),
//                         once per row; the results are seen by rows()
//   s.col_lse(wa, emit)   the same over the columns, wa_i - C_ij / eps
//   s.plan_rows(wa, wb, g, P, value)
//                         writes its rows P_ij = exp(wa_i + wb_j - C_ij / eps)
//                         and returns this worker's sum over its rows of
//                         value(i, sum_j P_ij, sum_j P_ij g_j)
//   s.prepare()           its own set-up before the first sweep (the CPU
//                         transposes C so that column sweeps read rows)
#pragma once

#include <cstdint>

#include "sweep.h"

namespace diffcomb {
namespace sinkhorn {

// The forward entry point's arguments (api.h): addresses of (B, ...) arrays.
struct ForwardBatch {
  std::uintptr_t C, a, b, P, f, g, cost, n_iter, err, f_hist, g_hist;
  int64_t n, m, max_iter, check_every;
  double eps, tol;
};

// One problem: its slices of the batch, and the work arrays of the driver
// (the device's scratch). W is the type of the scaled potentials that the
// sweeps read (the CPU: the dtype, so that float32 sweeps run in float; the
// GPU: double).
template <class T, class W>
struct ForwardProblem {
  const T *C, *a, *b;
  T *P, *f, *g;         // outputs (n, m), (n), (m)
  T* cost;              // this problem's scalars
  int64_t* n_iter;
  double* err;
  T *fh, *gh;           // iterates (max_iter, n), (max_iter + 1, m), or nullptr
  int64_t n, m, max_iter, check_every;
  double tol;
  Scale scale;
  double *f_cur, *f_new, *g_cur;  // work (n), (n), (m)
  double *loga, *logb;            // work (n), (m): the log weights, once per call
  W *wa, *wb;                     // work: log a + f / eps (n), log b + g / eps (m)
};

template <class T, class W>
DC_HOST_DEVICE ForwardProblem<T, W> forward_problem_at(const ForwardBatch& A, int64_t bi) {
  const int64_t n = A.n, m = A.m;
  ForwardProblem<T, W> p{};
  p.C = reinterpret_cast<const T*>(A.C) + bi * n * m;
  p.a = reinterpret_cast<const T*>(A.a) + bi * n;
  p.b = reinterpret_cast<const T*>(A.b) + bi * m;
  p.P = reinterpret_cast<T*>(A.P) + bi * n * m;
  p.f = reinterpret_cast<T*>(A.f) + bi * n;
  p.g = reinterpret_cast<T*>(A.g) + bi * m;
  p.cost = reinterpret_cast<T*>(A.cost) + bi;
  p.n_iter = reinterpret_cast<int64_t*>(A.n_iter) + bi;
  p.err = reinterpret_cast<double*>(A.err) + bi;
  p.fh = A.f_hist ? reinterpret_cast<T*>(A.f_hist) + bi * A.max_iter * n : nullptr;
  p.gh = A.g_hist ? reinterpret_cast<T*>(A.g_hist) + bi * (A.max_iter + 1) * m : nullptr;
  p.n = n;
  p.m = m;
  p.max_iter = A.max_iter;
  p.check_every = A.check_every;
  p.tol = A.tol;
  p.scale = make_scale(A.eps);
  return p;
}

// The whole forward of one problem, run by every worker of the sweeper.
DC_SWEEP_TEMPLATE
template <class S, class T, class W>
DC_HOST_DEVICE void forward_problem(S& s, const ForwardProblem<T, W>& p) {
  const int64_t n = p.n, m = p.m;
  const double eps = p.scale.eps, inv_eps = p.scale.inv_eps;

  // Non-finite inputs: the whole problem is NaN (SPEC 0). x - x is NaN for NaN and inf.
  T bad = T(0);
  s.rows([&](int64_t i) { bad += p.a[i] - p.a[i]; });
  s.cols([&](int64_t j) { bad += p.b[j] - p.b[j]; });
  s.entries([&](int64_t, int64_t, int64_t k) { bad += p.C[k] - p.C[k]; });
  if (s.sum(bad == T(0) ? 0.0 : 1.0) != 0.0) {
    const T nan = quiet_nan<T>();
    s.entries([&](int64_t, int64_t, int64_t k) { p.P[k] = nan; });
    s.rows([&](int64_t i) { p.f[i] = nan; });
    s.cols([&](int64_t j) { p.g[j] = nan; });
    if (s.leader()) {
      *p.cost = nan;
      *p.n_iter = 0;
      *p.err = NAN;
    }
    return;
  }
  s.rows([&](int64_t i) {
    p.f_cur[i] = 0.0;
    p.loga[i] = log_weight(double(p.a[i]));
  });
  s.cols([&](int64_t j) {
    p.g_cur[j] = 0.0;
    p.logb[j] = log_weight(double(p.b[j]));
    p.wb[j] = W(p.logb[j]);
    if (p.gh) p.gh[j] = T(0);
  });
  s.prepare();
  s.sync();

  const int64_t last = iteration_limit(n, m, p.max_iter);
  const bool check = p.tol > 0;
  int64_t iters = 0;
  double err = NAN;
  for (int64_t t = 1;; ++t) {
    if (t > last && !check) {
      iters = last;
      break;
    }
    // f-update from g^{t-1}.
    s.row_lse(p.wb, [&](int64_t i, double mx, double sum) { p.f_new[i] = potential(mx, sum, eps); });
    // The marginal error of iteration t - 1 comes with this update (sinkhorn.h, row_error).
    if (t >= 2 && check && is_check(t - 1, last, p.check_every)) {
      double e = 0.0;
      s.rows([&](int64_t i) { e += row_error(double(p.a[i]), p.f_cur[i], p.f_new[i], inv_eps); });
      err = s.sum(e);
      if (err <= p.tol) {
        iters = t - 1;
        break;
      }
    }
    if (t > last) {
      iters = last;
      break;
    }
    s.rows([&](int64_t i) {
      p.f_cur[i] = p.f_new[i];
      p.wa[i] = W(p.loga[i] + p.f_cur[i] * inv_eps);
      if (p.fh) p.fh[(t - 1) * n + i] = T(p.f_cur[i]);
    });
    s.sync();
    // g-update from f^t.
    s.col_lse(p.wa, [&](int64_t j, double mx, double sum) {
      const double gj = potential(mx, sum, eps);
      p.g_cur[j] = gj;
      p.wb[j] = W(p.logb[j] + gj * inv_eps);
      if (p.gh) p.gh[t * m + j] = T(gj);
    });
    s.sync();
  }
  // Read-out: P, and the primal value <P, C> + eps KL(P | a b^T) = sum_ij P_ij (f_i + g_j).
  s.cols([&](int64_t j) { p.g[j] = T(p.g_cur[j]); });
  s.rows([&](int64_t i) {
    p.f[i] = T(p.f_cur[i]);
    p.wa[i] = W(p.loga[i] + p.f_cur[i] * inv_eps);
  });
  s.sync();
  const double mine = s.plan_rows(p.wa, p.wb, p.g, p.P, [&](int64_t i, double r, double gsum) {
    return (r > 0 ? p.f_cur[i] * r : 0.0) + gsum;
  });
  const double value = s.sum(mine);
  if (s.leader()) {
    *p.cost = T(value);
    *p.n_iter = iters;
    *p.err = err;
  }
}

}  // namespace sinkhorn
}  // namespace diffcomb
