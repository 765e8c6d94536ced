// The two backward passes of Sinkhorn, once for both devices, over a
// sweeper (sweep.h): implicit differentiation by preconditioned conjugate
// gradient (SPEC 4.3 b, math in sinkhorn.h) and the unrolled adjoint of the
// recorded iterations (SPEC 4.3 a). Their sweeps over lines of P or C:
//
//   implicit:
//   s.plan_line_sums(rhs, wt)  rhs = [Q 1; Q^T 1] with Q = G o P, and the plan's
//                              marginals wt = [P 1; P^T 1] (N = n + m each)
//   s.plan_matvec(x, out)      out = [P x_v; P^T x_u] for x = [x_u; x_v]
//   unrolled (E_ij = scaled_exp(fe_i, ge_j, C_ij), sinkhorn.h):
//   s.readout(q)               with the final potentials in fe, ge: for every
//                              entry readout_entry(G_ij, a_i, b_j, E_ij); fbar_i,
//                              da_i get the row sums of its q / eps and row terms,
//                              gbar_j, db_j the column sums; cbar_ij its cbar
//   s.adjoint()                one iteration in reverse (sinkhorn.h): with
//                              E' from (fe, ge) and E from (fe, ge_prev),
//                              s1_i = sum_j E'_ij gbar_j, fb_i = fbar_i - a_i s1_i,
//                              da_i -= eps s1_i, fbar_i = fb_i,
//                              cbar_ij += a_i E'_ij gbar_j + b_j E_ij fb_i,
//                              gnew_j -= b_j sum_i E_ij fb_i, db_j -= eps sum_i E_ij fb_i
// Each sweep ends with the barrier its partition needs before rows(),
// cols() and lines() read what it wrote.
//
// Unbalanced problems (sinkhorn.h, Options): the f-update is lambda_a times
// the balanced one, so its linearization has the diagonal r / lambda_a in H
// (H is then definite), the unrolled adjoint scales by lambda_a and uses the
// balanced potential f / lambda_a in the f-update's kernel (g alike), and the
// weight read-outs divide by the weights themselves (P depends on log a_i
// directly; the row equations do not).
#pragma once

#include <cstdint>

#include "sweep.h"

namespace diffcomb {
namespace sinkhorn {

// ---------------------------------------------------------------------------
// Implicit backward.

// Preconditioned conjugate gradient on H x = rhs from x = 0 (SPEC 4.3 b),
// H = [[diag(wt_u), P], [P^T, diag(wt_v)]] with wt = [P 1; P^T 1] the plan's
// own marginals (also the preconditioner; a zero marginal keeps its variable
// at 0), P applied by s.plan_matvec. rhs2 = |rhs|^2 (finite); cg: 4 N
// doubles of scratch (r, z, d, hd). To relative residual cg_tol, at most
// cg_max_iter steps.
DC_SWEEP_TEMPLATE
template <class S>
DC_HOST_DEVICE void conjugate_gradient(S& s, int64_t N, const double* rhs, const double* wt, double rhs2, double* x,
                                       double* cg, double cg_tol, int64_t cg_max_iter) {
  double* r = cg;
  double* z = r + N;
  double* d = z + N;  // the search direction
  double* hd = d + N;
  s.lines(N, [&](int64_t k) {
    x[k] = 0.0;
    r[k] = rhs[k];
    z[k] = precondition(r[k], wt[k]);
    d[k] = z[k];
  });
  double rz = line_sum(s, N, [&](int64_t k) { return r[k] * z[k]; });
  const double stop = cg_tol * cg_tol * rhs2;
  s.sync();
  for (int64_t it = 0; it < cg_max_iter && rhs2 > 0; ++it) {
    if (line_sum(s, N, [&](int64_t k) { return r[k] * r[k]; }) <= stop) break;
    s.plan_matvec(d, hd);
    const double dhd = line_sum(s, N, [&](int64_t k) {
      hd[k] += wt[k] * d[k];
      return d[k] * hd[k];
    });
    if (!(dhd > 0)) break;
    const double alpha = rz / dhd;
    const double rz_new = line_sum(s, N, [&](int64_t k) {
      x[k] += alpha * d[k];
      r[k] -= alpha * hd[k];
      z[k] = precondition(r[k], wt[k]);
      return r[k] * z[k];
    });
    const double beta = rz_new / rz;
    rz = rz_new;
    s.lines(N, [&](int64_t k) { d[k] = z[k] + beta * d[k]; });
    s.sync();
  }
  s.sync();
}

// The entry point's arguments (api.h).
struct ImplicitBatch {
  std::uintptr_t C, a, b, P, f, g, G, gcost, dC, da, db;
  int64_t n, m;
  double eps, cg_tol;
  int64_t cg_max_iter;
  std::uintptr_t params = 0;  // extended entry point (sinkhorn.h, Options)
};

template <class T>
struct ImplicitProblem {
  const T *C, *a, *b, *P, *f, *g;
  const T* G;  // nullptr: no plan gradient (envelope only)
  double gcost;
  T* dC;  // nullptr: not written
  T *da, *db;
  int64_t n, m, cg_max_iter;
  double cg_tol;
  Scale scale;
  Options opt;
  double* work;  // 7 (n + m): rhs, x, r, z, p, hp, wt
};

template <class T>
DC_HOST_DEVICE ImplicitProblem<T> implicit_problem_at(const ImplicitBatch& A, int64_t bi) {
  const int64_t n = A.n, m = A.m;
  ImplicitProblem<T> p{};
  p.C = reinterpret_cast<const T*>(A.C) + bi * n * m;
  p.a = reinterpret_cast<const T*>(A.a) + bi * n;
  p.b = reinterpret_cast<const T*>(A.b) + bi * m;
  p.P = reinterpret_cast<const T*>(A.P) + bi * n * m;
  p.f = reinterpret_cast<const T*>(A.f) + bi * n;
  p.g = reinterpret_cast<const T*>(A.g) + bi * m;
  p.G = A.G ? reinterpret_cast<const T*>(A.G) + bi * n * m : nullptr;
  p.gcost = A.gcost ? double(reinterpret_cast<const T*>(A.gcost)[bi]) : 0.0;
  p.dC = A.dC ? reinterpret_cast<T*>(A.dC) + bi * n * m : nullptr;
  p.da = reinterpret_cast<T*>(A.da) + bi * n;
  p.db = reinterpret_cast<T*>(A.db) + bi * m;
  p.n = n;
  p.m = m;
  p.cg_max_iter = A.cg_max_iter;
  p.cg_tol = A.cg_tol;
  p.opt = options_at(reinterpret_cast<const double*>(A.params), bi, A.eps);
  p.scale = make_scale(p.opt.eps);
  return p;
}

// The masses (sum a, sum b) of an unbalanced problem (the envelope gradient of its cost).
DC_SWEEP_TEMPLATE
template <class S, class T>
DC_HOST_DEVICE void masses(S& s, const T* a, const T* b, double* mass_a, double* mass_b) {
  double ma = 0.0, mb = 0.0;
  s.rows([&](int64_t i) { ma += double(a[i]); });
  s.cols([&](int64_t j) { mb += double(b[j]); });
  *mass_a = s.sum(ma);
  *mass_b = s.sum(mb);
}

// The envelope gradient of the cost in a weight with potential h: balanced
// (both marginals constraints) as cost_weight_gradient, else the unbalanced
// cost's derivative (sinkhorn.h) with the side's rho and the other side's mass.
DC_HOST_DEVICE DC_INLINE double envelope_weight_gradient(bool balanced, double h, double eps, double rho,
                                                         double other_mass) {
  return balanced ? cost_weight_gradient(h, eps) : unbalanced_weight_gradient(h, eps, rho, other_mass);
}

DC_SWEEP_TEMPLATE
template <class S, class T>
DC_HOST_DEVICE void implicit_problem(S& s, const ImplicitProblem<T>& p) {
  const int64_t n = p.n, m = p.m, N = n + m;
  const double eps = p.scale.eps, inv_eps = p.scale.inv_eps, gc = p.gcost;
  const Options& o = p.opt;
  const bool balanced = is_balanced(o);
  double mass_a = 1.0, mass_b = 1.0;
  if (!balanced) masses(s, p.a, p.b, &mass_a, &mass_b);
  if (!p.G) {  // envelope only (SPEC 4.2)
    if (p.dC) s.entries([&](int64_t, int64_t, int64_t k) { p.dC[k] = T(gc * double(p.P[k])); });
    s.rows([&](int64_t i) {
      p.da[i] = T(gc * envelope_weight_gradient(balanced, double(p.f[i]), eps, o.rho_a, mass_b));
    });
    s.cols([&](int64_t j) {
      p.db[j] = T(gc * envelope_weight_gradient(balanced, double(p.g[j]), eps, o.rho_b, mass_a));
    });
    return;
  }
  double* rhs = p.work;
  double* x = rhs + N;
  double* cg = x + N;      // r, z, d, hd: 4 N
  double* hd = cg + 3 * N;
  double* wt = cg + 4 * N;  // the plan's marginals: H's diagonal and the preconditioner
  s.plan_line_sums(rhs, wt);
  // Unbalanced: H's diagonal r / lambda_a, c / lambda_b (the weight read-outs then divide by a, b).
  const double lam_a = damping(o.rho_a, eps), lam_b = damping(o.rho_b, eps);
  if (!balanced) {
    s.rows([&](int64_t i) { wt[i] = lam_a < 1.0 ? wt[i] / lam_a : wt[i]; });
    s.cols([&](int64_t j) { wt[n + j] = lam_b < 1.0 ? wt[n + j] / lam_b : wt[n + j]; });
    s.sync();
  }
  const double rhs2 = line_sum(s, N, [&](int64_t k) { return rhs[k] * rhs[k]; });
  if (!(rhs2 < INFINITY)) {  // non-finite problem or upstream gradient
    fill_nan_gradients(s, p.dC, p.da, p.db);
    return;
  }
  conjugate_gradient(s, N, rhs, wt, rhs2, x, cg, p.cg_tol, p.cg_max_iter);
  const double* u = x;
  const double* v = x + n;
  const double* pv = hd;       // P v
  const double* ptu = hd + n;  // P^T u
  s.plan_matvec(x, hd);
  if (p.dC)
    s.entries([&](int64_t i, int64_t j, int64_t k) {
      p.dC[k] = T(implicit_cost_gradient(double(p.P[k]), u[i], v[j], double(p.G[k]), inv_eps, gc));
    });
  if (balanced) {
    s.rows([&](int64_t i) {
      p.da[i] = T(line_weight_gradient(rhs[i] - pv[i], wt[i], p.C + i * m, p.G + i * m, p.b, p.g, v, m, 1,
                                       double(p.f[i]), p.scale, gc));
    });
    s.cols([&](int64_t j) {
      p.db[j] = T(line_weight_gradient(rhs[n + j] - ptu[j], wt[n + j], p.C + j, p.G + j, p.a, p.f, u, n, m,
                                       double(p.g[j]), p.scale, gc));
    });
    return;
  }
  // Unbalanced: (Q 1 - P v)_i / a_i for a relaxed row (r_i / a_i = e^{-f_i / rho_a} times the
  // conditional plan's limit at a_i = 0); a constrained side divides by its own marginal.
  s.rows([&](int64_t i) {
    const double h = double(p.f[i]);
    const double marginal = lam_a < 1.0 ? double(p.a[i]) : wt[i];
    const double limit = marginal > 0 ? 0.0 : zero_marginal_gradient(p.C + i * m, p.G + i * m, p.b, p.g, v, m, 1,
                                                                     inv_eps) * exp(-h * inverse(o.rho_a));
    p.da[i] = T(implicit_weight_gradient(rhs[i] - pv[i], marginal, limit) +
                gc * unbalanced_weight_gradient(h, eps, o.rho_a, mass_b));
  });
  s.cols([&](int64_t j) {
    const double h = double(p.g[j]);
    const double marginal = lam_b < 1.0 ? double(p.b[j]) : wt[n + j];
    const double limit = marginal > 0 ? 0.0 : zero_marginal_gradient(p.C + j, p.G + j, p.a, p.f, u, n, m,
                                                                     inv_eps) * exp(-h * inverse(o.rho_b));
    p.db[j] = T(implicit_weight_gradient(rhs[n + j] - ptu[j], marginal, limit) +
                gc * unbalanced_weight_gradient(h, eps, o.rho_b, mass_a));
  });
}

// ---------------------------------------------------------------------------
// The implicit system alone (the derivatives of the implicit backward, for
// forward mode and second derivatives): x = H^-1 rhs for a given right-hand
// side rhs and the plan's marginals wt (each (B, n + m), float64), the same
// conjugate gradient; a non-finite rhs gives NaN.

struct SolveBatch {
  std::uintptr_t P, rhs, wt, x;
  int64_t n, m;
  double cg_tol;
  int64_t cg_max_iter;
};

// Problem bi of a solve: the plan, for the sweeper's plan_matvec.
template <class T>
DC_HOST_DEVICE ImplicitProblem<T> solve_problem_at(const SolveBatch& A, int64_t bi) {
  ImplicitProblem<T> p{};
  p.P = reinterpret_cast<const T*>(A.P) + bi * A.n * A.m;
  p.n = A.n;
  p.m = A.m;
  p.cg_tol = A.cg_tol;
  p.cg_max_iter = A.cg_max_iter;
  return p;
}

DC_SWEEP_TEMPLATE
template <class S, class T>
DC_HOST_DEVICE void solve_problem(S& s, const ImplicitProblem<T>& p, const SolveBatch& A, int64_t bi, double* cg) {
  const int64_t N = p.n + p.m;
  const double* rhs = reinterpret_cast<const double*>(A.rhs) + bi * N;
  const double* wt = reinterpret_cast<const double*>(A.wt) + bi * N;
  double* x = reinterpret_cast<double*>(A.x) + bi * N;
  const double rhs2 = line_sum(s, N, [&](int64_t k) { return rhs[k] * rhs[k]; });
  if (!(rhs2 < INFINITY)) {
    s.lines(N, [&](int64_t k) { x[k] = quiet_nan<double>(); });
    return;
  }
  conjugate_gradient(s, N, rhs, wt, rhs2, x, cg, p.cg_tol, p.cg_max_iter);
}

// ---------------------------------------------------------------------------
// Unrolled backward.

struct UnrolledBatch {
  std::uintptr_t C, a, b, f_hist, g_hist, n_iter, G, gcost, dC, da, db;
  int64_t n, m, max_iter;
  double eps;
  std::uintptr_t params = 0;  // extended entry point (sinkhorn.h, Options; no epsilon scaling)
};

// W: the type of the scaled potentials fe, ge (as in forward.h).
template <class T, class W>
struct UnrolledProblem {
  const T *C, *a, *b, *fh, *gh;
  const T* G;  // nullptr: no plan gradient
  int64_t iters;
  double gcost;
  T* dC;  // nullptr: not written
  T *da, *db;
  int64_t n, m;
  Scale scale;
  Options opt;
  double lam_a, lam_b;                   // the damping of the updates (1: balanced)
  T* cbar;                               // Cbar: dC, the device's scratch, or nullptr (not kept)
  double *fbar, *gbar, *gnew, *sa, *sb;  // work (n), (m), (m), (n), (m): sa, sb accumulate da, db
  W *fe, *ge, *ge_prev;                  // work (n), (m), (m)
  W* fe2;                                // work (n): f / (lambda_a eps), the f-update's balanced potential
};

template <class T, class W>
DC_HOST_DEVICE UnrolledProblem<T, W> unrolled_problem_at(const UnrolledBatch& A, int64_t bi) {
  const int64_t n = A.n, m = A.m;
  UnrolledProblem<T, W> p{};
  p.C = reinterpret_cast<const T*>(A.C) + bi * n * m;
  p.a = reinterpret_cast<const T*>(A.a) + bi * n;
  p.b = reinterpret_cast<const T*>(A.b) + bi * m;
  p.fh = reinterpret_cast<const T*>(A.f_hist) + bi * A.max_iter * n;
  p.gh = reinterpret_cast<const T*>(A.g_hist) + bi * (A.max_iter + 1) * m;
  p.G = A.G ? reinterpret_cast<const T*>(A.G) + bi * n * m : nullptr;
  p.iters = replayed_iterations(reinterpret_cast<const int64_t*>(A.n_iter)[bi], A.max_iter);
  p.gcost = A.gcost ? double(reinterpret_cast<const T*>(A.gcost)[bi]) : 0.0;
  p.dC = A.dC ? reinterpret_cast<T*>(A.dC) + bi * n * m : nullptr;
  p.da = reinterpret_cast<T*>(A.da) + bi * n;
  p.db = reinterpret_cast<T*>(A.db) + bi * m;
  p.n = n;
  p.m = m;
  p.opt = options_at(reinterpret_cast<const double*>(A.params), bi, A.eps);
  p.scale = make_scale(p.opt.eps);
  p.lam_a = damping(p.opt.rho_a, p.opt.eps);
  p.lam_b = damping(p.opt.rho_b, p.opt.eps);
  return p;
}

// fe = f / eps and ge = g / eps for the potentials f (n) and g (m).
DC_SWEEP_TEMPLATE
template <class S, class T, class W>
DC_HOST_DEVICE void scale_potentials(S& s, const T* f, const T* g, W* fe, W* ge, double inv_eps) {
  if (f) s.rows([&](int64_t i) { fe[i] = W(double(f[i]) * inv_eps); });
  s.cols([&](int64_t j) { ge[j] = W(double(g[j]) * inv_eps); });
}

DC_SWEEP_TEMPLATE
template <class S, class T, class W>
DC_HOST_DEVICE void unrolled_problem(S& s, const UnrolledProblem<T, W>& p) {
  const int64_t n = p.n, m = p.m, last = p.iters;
  const double eps = p.scale.eps, inv_eps = p.scale.inv_eps, gc = p.gcost;
  if (last < 1) {  // non-finite problem
    fill_nan_gradients(s, p.dC, p.da, p.db);
    return;
  }
  const Options& o = p.opt;
  const bool balanced = is_balanced(o);
  double mass_a = 1.0, mass_b = 1.0;
  if (!balanced) masses(s, p.a, p.b, &mass_a, &mass_b);
  const T* f_final = p.fh + (last - 1) * n;
  const T* g_final = p.gh + last * m;
  scale_potentials(s, f_final, g_final, p.fe, p.ge, inv_eps);
  s.rows([&](int64_t i) { p.fbar[i] = p.sa[i] = 0.0; });
  s.cols([&](int64_t j) { p.gbar[j] = p.sb[j] = 0.0; });
  s.sync();
  s.readout();
  s.rows([&](int64_t i) {
    p.sa[i] += gc * envelope_weight_gradient(balanced, double(f_final[i]), eps, o.rho_a, mass_b);
  });
  s.cols([&](int64_t j) {
    p.sb[j] += gc * envelope_weight_gradient(balanced, double(g_final[j]), eps, o.rho_b, mass_a);
  });
  s.sync();
  // Iteration t in reverse: g^t = lam_b g_bal^t, so the g-update's kernel uses g^t / lam_b and its
  // adjoint lam_b gbar; f^t = lam_a f_bal^t alike (fe2, and the sweeper's lam_a fbar).
  for (int64_t t = p.G ? last : 0; t >= 1; --t) {
    scale_potentials(s, p.fh + (t - 1) * n, p.gh + t * m, p.fe, p.ge, inv_eps);
    scale_potentials(s, static_cast<const T*>(nullptr), p.gh + (t - 1) * m, p.fe, p.ge_prev, inv_eps);
    s.rows([&](int64_t i) { p.fe2[i] = W(double(p.fe[i]) / p.lam_a); });
    s.cols([&](int64_t j) {
      p.ge[j] = W(double(p.ge[j]) / p.lam_b);
      p.gbar[j] *= p.lam_b;
      p.gnew[j] = 0.0;
    });
    s.sync();
    s.adjoint();
    s.cols([&](int64_t j) { p.gbar[j] = p.gnew[j]; });
    s.rows([&](int64_t i) { p.fbar[i] = 0.0; });
    s.sync();
  }
  s.rows([&](int64_t i) { p.da[i] = T(p.sa[i]); });
  s.cols([&](int64_t j) { p.db[j] = T(p.sb[j]); });
}

}  // namespace sinkhorn
}  // namespace diffcomb
