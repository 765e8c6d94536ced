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
//                         (P = nullptr: the plan is not stored, as for
//                         point clouds)
//   s.prepare()           its own set-up before the first sweep (the CPU
//                         transposes C so that column sweeps read rows)
//   s.nonfinite()         this worker's count of non-finite cost inputs (its
//                         share of C, or of the points of a point cloud)
//   s.set_inv_eps(x)      the 1/eps of the following sweeps (epsilon scaling)
//
// The extended entry points add per problem options (sinkhorn.h, Options:
// epsilon scaling, unbalanced marginals) and warm starts f_init / g_init.
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
  std::uintptr_t f_init = 0, g_init = 0, params = 0;  // extended entry points (0: none)
  double scaling = 1.0;                              // epsilon scaling factor q
};

// A batch of the extended entry points: warm starts and per problem options (sinkhorn.h).
DC_HOST_DEVICE DC_INLINE ForwardBatch extended(ForwardBatch A, std::uintptr_t f_init, std::uintptr_t g_init,
                                               std::uintptr_t params, double scaling) {
  A.f_init = f_init;
  A.g_init = g_init;
  A.params = params;
  A.scaling = scaling;
  return A;
}

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
  Scale scale;          // the target eps
  Options opt;          // epsilon scaling and unbalanced marginals
  double scaling;       // q
  const T *f0, *g0;     // warm start, or nullptr
  double *f_cur, *f_new, *g_cur;  // work (n), (n), (m)
  double *loga, *logb;            // work (n), (m): the log weights, once per call
  W *wa, *wb;                     // work: log a + f / eps (n), log b + g / eps (m)
};

template <class T, class W>
DC_HOST_DEVICE ForwardProblem<T, W> forward_problem_at(const ForwardBatch& A, int64_t bi) {
  const int64_t n = A.n, m = A.m;
  ForwardProblem<T, W> p{};
  p.C = A.C ? reinterpret_cast<const T*>(A.C) + bi * n * m : nullptr;
  p.a = reinterpret_cast<const T*>(A.a) + bi * n;
  p.b = reinterpret_cast<const T*>(A.b) + bi * m;
  p.P = A.P ? reinterpret_cast<T*>(A.P) + bi * n * m : nullptr;
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
  p.opt = options_at(reinterpret_cast<const double*>(A.params), bi, A.eps);
  p.scale = make_scale(p.opt.eps);
  p.scaling = A.scaling;
  p.f0 = A.f_init ? reinterpret_cast<const T*>(A.f_init) + bi * n : nullptr;
  p.g0 = A.g_init ? reinterpret_cast<const T*>(A.g_init) + bi * m : nullptr;
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
  if (p.f0) s.rows([&](int64_t i) { bad += p.f0[i] - p.f0[i]; });
  if (p.g0) s.cols([&](int64_t j) { bad += p.g0[j] - p.g0[j]; });
  if (s.sum(bad == T(0) && s.nonfinite() == 0 ? 0.0 : 1.0) != 0.0) {
    const T nan = quiet_nan<T>();
    if (p.P) s.entries([&](int64_t, int64_t, int64_t k) { p.P[k] = nan; });
    s.rows([&](int64_t i) { p.f[i] = nan; });
    s.cols([&](int64_t j) { p.g[j] = nan; });
    if (s.leader()) {
      *p.cost = nan;
      *p.n_iter = 0;
      *p.err = NAN;
    }
    return;
  }
  // Warm start: g0, else the g-update of f0, else 0 (the first update is f's, from g).
  const Options& o = p.opt;
  const double eps1 = annealed_eps(o, p.scaling, 1);
  s.set_inv_eps(1.0 / eps1);
  s.rows([&](int64_t i) {
    p.f_cur[i] = p.f0 ? double(p.f0[i]) : 0.0;
    p.loga[i] = log_weight(double(p.a[i]));
    p.wa[i] = W(p.loga[i] + p.f_cur[i] / eps1);
  });
  s.cols([&](int64_t j) {
    p.g_cur[j] = p.g0 ? double(p.g0[j]) : 0.0;
    p.logb[j] = log_weight(double(p.b[j]));
    p.wb[j] = W(p.logb[j] + p.g_cur[j] / eps1);
  });
  s.prepare();
  s.sync();
  if (p.f0 && !p.g0) {
    const double lam = damping(o.rho_b, eps1);
    s.col_lse(p.wa, [&](int64_t j, double mx, double sum) {
      p.g_cur[j] = lam * potential(mx, sum, eps1);
      p.wb[j] = W(p.logb[j] + p.g_cur[j] / eps1);
    });
    s.sync();
  }
  if (p.gh) s.cols([&](int64_t j) { p.gh[j] = T(p.g_cur[j]); });

  // n = 1 or m = 1 is solved by one balanced iteration (not by an unbalanced or annealed one).
  const bool plain = is_balanced(o) && annealed_eps(o, p.scaling, 1) == eps;
  const int64_t last = plain ? iteration_limit(n, m, p.max_iter) : p.max_iter;
  const StopRule stop{last, p.check_every, p.tol};
  const bool symmetric = o.symmetric && n == m;
  const double inv_rho_a = inverse(o.rho_a);
  double lam_a = damping(o.rho_a, eps), lam_b = damping(o.rho_b, eps);
  double eps_t = eps1, inv_t = 1.0 / eps1;
  int64_t iters = 0;
  double err = NAN;
  for (int64_t t = 1;; ++t) {
    if (stop.counted(t)) {
      iters = last;
      break;
    }
    const double eps_prev = eps_t;
    eps_t = annealed_eps(o, p.scaling, t);
    if (eps_t != eps_prev) {  // epsilon scaling: g's scaled weights at the new eps
      inv_t = 1.0 / eps_t;
      s.set_inv_eps(inv_t);
      s.cols([&](int64_t j) { p.wb[j] = W(p.logb[j] + p.g_cur[j] * inv_t); });
      s.sync();
    }
    lam_a = damping(o.rho_a, eps_t);
    lam_b = damping(o.rho_b, eps_t);
    // f-update from g^{t-1} (f_new: the balanced update; f = lam_a f_new).
    s.row_lse(p.wb, [&](int64_t i, double mx, double sum) { p.f_new[i] = potential(mx, sum, eps_t); });
    // The marginal error of iteration t - 1 comes with this update (sinkhorn.h, row_error); it is
    // only tested at the target eps.
    const bool tested = stop.tests(t) && eps_t == eps;
    if (tested) {
      double e = 0.0;
      s.rows([&](int64_t i) { e += row_error_ext(double(p.a[i]), p.f_cur[i], p.f_new[i], inv_eps, inv_rho_a); });
      err = s.sum(e);
    }
    if (stop.stops(t, tested, err, &iters)) break;
    if (symmetric) {  // g = f: the symmetrized update, no column sweep (rows and columns coincide)
      s.rows([&](int64_t i) {
        p.f_cur[i] = 0.5 * (p.f_cur[i] + lam_a * p.f_new[i]);
        p.g_cur[i] = p.f_cur[i];
        p.wa[i] = W(p.loga[i] + p.f_cur[i] * inv_t);
        p.wb[i] = p.wa[i];
        if (p.fh) p.fh[(t - 1) * n + i] = T(p.f_cur[i]);
        if (p.gh) p.gh[t * m + i] = T(p.f_cur[i]);
      });
      s.sync();
      continue;
    }
    s.rows([&](int64_t i) {
      p.f_cur[i] = lam_a * p.f_new[i];
      p.wa[i] = W(p.loga[i] + p.f_cur[i] * inv_t);
      if (p.fh) p.fh[(t - 1) * n + i] = T(p.f_cur[i]);
    });
    s.sync();
    // g-update from f^t.
    s.col_lse(p.wa, [&](int64_t j, double mx, double sum) {
      const double gj = lam_b * potential(mx, sum, eps_t);
      p.g_cur[j] = gj;
      p.wb[j] = W(p.logb[j] + gj * inv_t);
      if (p.gh) p.gh[t * m + j] = T(gj);
    });
    s.sync();
  }
  // Read-out: P, and the primal value <P, C> + eps KL(P | a b^T) = sum_ij P_ij (f_i + g_j)
  // (unbalanced: with the generalized KL, - eps sum P + eps mass_a mass_b, and the marginal
  // penalties rho KL(P 1 | a) + rho KL(P^T 1 | b)). The read-out is at the target eps (an
  // iteration limit reached while annealing reads out at eps all the same).
  if (inv_t != inv_eps) {
    s.set_inv_eps(inv_eps);
    s.cols([&](int64_t j) { p.wb[j] = W(p.logb[j] + p.g_cur[j] * inv_eps); });
  }
  s.cols([&](int64_t j) { p.g[j] = T(p.g_cur[j]); });
  s.rows([&](int64_t i) {
    p.f[i] = T(p.f_cur[i]);
    p.wa[i] = W(p.loga[i] + p.f_cur[i] * inv_eps);
  });
  s.sync();
  const bool balanced = is_balanced(o);
  double mine = s.plan_rows(p.wa, p.wb, p.g, p.P, [&](int64_t i, double r, double gsum) {
    const double v = (r > 0 ? p.f_cur[i] * r : 0.0) + gsum;
    return balanced ? v : v - eps * r + marginal_kl(r, double(p.a[i]), o.rho_a);
  });
  if (!balanced) {
    double ma = 0.0, mb = 0.0;
    s.rows([&](int64_t i) { ma += double(p.a[i]); });
    s.cols([&](int64_t j) {
      mb += double(p.b[j]);
      mine += marginal_penalty(double(p.b[j]), p.g_cur[j], o.rho_b);
    });
    const double masses = s.sum(ma) * s.sum(mb);
    mine += s.leader() ? eps * masses : 0.0;
  }
  const double value = s.sum(mine);
  if (s.leader()) {
    *p.cost = T(value);
    *p.n_iter = iters;
    *p.err = err;
  }
}

}  // namespace sinkhorn
}  // namespace diffcomb
