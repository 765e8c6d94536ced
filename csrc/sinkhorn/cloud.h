// Sinkhorn between point clouds without the cost matrix: the cost of a pair,
// C_ij = |x_i - y_j|^2 (squared Euclidean) or |x_i - y_j| (Euclidean), is
// computed inside the sweeps from the points, so a problem needs O(n + m)
// memory beyond its inputs. The forward is forward.h's algorithm over a
// point-cloud sweeper (no plan is stored: plan_rows gets P = nullptr); this
// header adds the backward of the cost, the envelope gradient (SPEC 4.2)
//   dx_i = gcost sum_j P_ij d C(x_i, y_j) / d x_i,  dy_j alike,
//   da_i, db_j: the envelope weight gradients (backward.h),
// over a sweeper that provides, besides the common loops (sweep.h),
//
//   s.prepare()                 its set-up (the CPU transposes the points)
//   s.nonfinite()               its count of non-finite coordinates
//   s.set_inv_eps(x)            1/eps of the sweeps
//   s.gradients(wa, wb, gc, dx, dy)
//                               dx_i = gc sum_j P_ij dC_ij/dx_i for its rows and
//                               dy_j = gc sum_i P_ij dC_ij/dy_j for its columns,
//                               P_ij = exp(wa_i + wb_j - C_ij / eps)
#pragma once

#include <cstdint>

#include "backward.h"
#include "forward.h"

namespace diffcomb {
namespace sinkhorn {

enum Metric : int { kSqEuclidean = 0, kEuclidean = 1, kMetricCount = 2 };

// The derivative factor of a pair's cost in its difference x - y:
// dC/dx = factor (x - y): 2 (squared Euclidean), 1 / |x - y| (Euclidean; 0
// where the points coincide, the subgradient of least norm).
template <int M, class T>
DC_HOST_DEVICE DC_INLINE T cost_factor(T cost) {
  if (M == kSqEuclidean) return T(2);
  return cost > T(0) ? T(1) / cost : T(0);
}

// The entry points' arguments (api.h): the forward is a ForwardBatch with no
// cost matrix and no plan, plus the points.
struct CloudForwardBatch {
  ForwardBatch base;
  std::uintptr_t x, y;
  int64_t d;
  int metric;
};

struct CloudGradBatch {
  std::uintptr_t x, y, a, b, f, g, gcost, dx, dy, da, db, params;
  int64_t n, m, d;
  int metric;
};

template <class T, class W>
struct CloudGradProblem {
  const T *x, *y, *a, *b, *f, *g;
  double gcost;
  T *dx, *dy, *da, *db;
  int64_t n, m, d;
  Options opt;
  Scale scale;
  W *wa, *wb;  // work (n), (m)
};

template <class T, class W>
DC_HOST_DEVICE CloudGradProblem<T, W> cloud_grad_problem_at(const CloudGradBatch& A, int64_t bi) {
  const int64_t n = A.n, m = A.m, d = A.d;
  CloudGradProblem<T, W> p{};
  p.x = reinterpret_cast<const T*>(A.x) + bi * n * d;
  p.y = reinterpret_cast<const T*>(A.y) + bi * m * d;
  p.a = reinterpret_cast<const T*>(A.a) + bi * n;
  p.b = reinterpret_cast<const T*>(A.b) + bi * m;
  p.f = reinterpret_cast<const T*>(A.f) + bi * n;
  p.g = reinterpret_cast<const T*>(A.g) + bi * m;
  p.gcost = double(reinterpret_cast<const T*>(A.gcost)[bi]);
  p.dx = reinterpret_cast<T*>(A.dx) + bi * n * d;
  p.dy = reinterpret_cast<T*>(A.dy) + bi * m * d;
  p.da = reinterpret_cast<T*>(A.da) + bi * n;
  p.db = reinterpret_cast<T*>(A.db) + bi * m;
  p.n = n;
  p.m = m;
  p.d = d;
  p.opt = options_at(reinterpret_cast<const double*>(A.params), bi, 1.0);
  p.scale = make_scale(p.opt.eps);
  return p;
}

// The envelope gradient of one problem's cost, run by every worker.
DC_SWEEP_TEMPLATE
template <class S, class T, class W>
DC_HOST_DEVICE void cloud_gradient_problem(S& s, const CloudGradProblem<T, W>& p) {
  const int64_t d = p.d;
  const double eps = p.scale.eps, inv_eps = p.scale.inv_eps, gc = p.gcost;
  T bad = T(0);
  s.rows([&](int64_t i) { bad += (p.a[i] - p.a[i]) + (p.f[i] - p.f[i]); });
  s.cols([&](int64_t j) { bad += (p.b[j] - p.b[j]) + (p.g[j] - p.g[j]); });
  if (s.sum(bad == T(0) && s.nonfinite() == 0 && gc - gc == 0.0 ? 0.0 : 1.0) != 0.0) {
    const T nan = quiet_nan<T>();
    s.rows([&](int64_t i) {
      p.da[i] = nan;
      for (int64_t k = 0; k < d; ++k) p.dx[i * d + k] = nan;
    });
    s.cols([&](int64_t j) {
      p.db[j] = nan;
      for (int64_t k = 0; k < d; ++k) p.dy[j * d + k] = nan;
    });
    return;
  }
  const Options& o = p.opt;
  const bool balanced = is_balanced(o);
  double mass_a = 1.0, mass_b = 1.0;
  if (!balanced) masses(s, p.a, p.b, &mass_a, &mass_b);
  s.set_inv_eps(inv_eps);
  s.rows([&](int64_t i) { p.wa[i] = W(log_weight(double(p.a[i])) + double(p.f[i]) * inv_eps); });
  s.cols([&](int64_t j) { p.wb[j] = W(log_weight(double(p.b[j])) + double(p.g[j]) * inv_eps); });
  s.prepare();
  s.sync();
  s.gradients(p.wa, p.wb, gc, p.dx, p.dy);
  s.rows([&](int64_t i) {
    p.da[i] = T(gc * envelope_weight_gradient(balanced, double(p.f[i]), eps, o.rho_a, mass_b));
  });
  s.cols([&](int64_t j) {
    p.db[j] = T(gc * envelope_weight_gradient(balanced, double(p.g[j]), eps, o.rho_b, mass_a));
  });
}

}  // namespace sinkhorn
}  // namespace diffcomb
