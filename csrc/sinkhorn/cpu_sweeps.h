// The CPU's vectorized sweeps over one line (a row of C, C^T or P) of
// log-domain Sinkhorn, for cpu.cpp's sweepers: the log-sum-exp of the
// updates, the plan row, the H matrix-vector row and the two passes of the
// unrolled adjoint. GCC vector types of one AVX-512 register, compiled by
// target clones for AVX-512, AVX2 and the baseline (one clone per
// instruction set; float and double). Included by cpu.cpp only.
#pragma once

#include <algorithm>
#include <limits>

#include "cpu_vec.h"

namespace diffcomb {
namespace sinkhorn {
namespace {

// max_j (w_j - c_j / eps), then sum_j exp(w_j - c_j / eps - max).
template <class T>
DC_SWEEP void lse_sweep_impl(const T* __restrict c, const T* __restrict w, int64_t len, T inv_eps,
                             double* max_out, double* sum_out) {
  using X = Vec<T>;
  using V = typename X::V;
  constexpr int L = X::kWidth;
  const T ninf = -std::numeric_limits<T>::infinity();
  V mx = V{} + ninf;
  int64_t j = 0;
  for (; j + L <= len; j += L) {
    const V v = load<V>(w + j) - load<V>(c + j) * inv_eps;
    mx = v > mx ? v : mx;
  }
  T m = ninf;
  for (int k = 0; k < L; ++k) m = mx[k] > m ? mx[k] : m;
  for (; j < len; ++j) {
    const T v = term(w[j], c[j], inv_eps);
    m = v > m ? v : m;
  }
  double total = 0.0;
  if (m != ninf) {
    for (int64_t j0 = 0; j0 < len; j0 += kBlock) {
      const int64_t j1 = std::min(len, j0 + kBlock);
      V acc = V{};
      int64_t jj = j0;
      for (; jj + L <= j1; jj += L) acc += X::exp(load<V>(w + jj) - load<V>(c + jj) * inv_eps - m);
      T s = T(lane_sum<T>(acc, L));
      for (; jj < j1; ++jj) s += exp_fast(term(w[jj], c[jj], inv_eps) - m);
      total += double(s);
    }
  }
  *max_out = double(m);
  *sum_out = total;
}

DC_VECTOR_CLONES void lse_sweep(const float* c, const float* w, int64_t len, float inv_eps, double* mx,
                                double* sum) {
  lse_sweep_impl(c, w, len, inv_eps, mx, sum);
}
DC_VECTOR_CLONES void lse_sweep(const double* c, const double* w, int64_t len, double inv_eps, double* mx,
                                double* sum) {
  lse_sweep_impl(c, w, len, inv_eps, mx, sum);
}

// p_j = exp(wa + wb_j - c_j / eps); returns sum_j p_j, and sum_j p_j g_j in *gsum.
template <class T>
DC_SWEEP double plan_row_impl(const T* __restrict c, const T* __restrict wb, const T* __restrict g, T wa,
                              int64_t len, T inv_eps, T* __restrict p, double* gsum) {
  using X = Vec<T>;
  using V = typename X::V;
  constexpr int L = X::kWidth;
  double total = 0.0, gtotal = 0.0;
  for (int64_t j0 = 0; j0 < len; j0 += kBlock) {
    const int64_t j1 = std::min(len, j0 + kBlock);
    V acc = V{}, gacc = V{};
    int64_t j = j0;
    for (; j + L <= j1; j += L) {
      const V v = X::exp(wa + load<V>(wb + j) - load<V>(c + j) * inv_eps);
      store(p + j, v);
      acc += v;
      gacc += v * load<V>(g + j);
    }
    T s = T(lane_sum<T>(acc, L)), sg = T(lane_sum<T>(gacc, L));
    for (; j < j1; ++j) {
      const T v = exp_fast(wa + term(wb[j], c[j], inv_eps));
      p[j] = v;
      s += v;
      sg += v * g[j];
    }
    total += double(s);
    gtotal += double(sg);
  }
  *gsum = gtotal;
  return total;
}

DC_VECTOR_CLONES double plan_row(const float* c, const float* wb, const float* g, float wa, int64_t len,
                                 float inv_eps, float* p, double* gsum) {
  return plan_row_impl(c, wb, g, wa, len, inv_eps, p, gsum);
}
DC_VECTOR_CLONES double plan_row(const double* c, const double* wb, const double* g, double wa, int64_t len,
                                 double inv_eps, double* p, double* gsum) {
  return plan_row_impl(c, wb, g, wa, len, inv_eps, p, gsum);
}

// Unrolled backward, one row of one iteration (sinkhorn.h):
// e1_j = exp(fe + ge_t_j - c_j/eps) (g-update), returns s1 = sum_j e1_j gbar_j.
template <class T>
DC_SWEEP double unroll_pass1_impl(const T* __restrict c, const T* __restrict ge, T fe,
                                  const double* __restrict gbar, int64_t len, T inv_eps, T* __restrict e1) {
  using X = Vec<T>;
  using V = typename X::V;
  using D = typename X::D;
  constexpr int L = X::kWidth;
  D acc = D{};
  int64_t j = 0;
  for (; j + L <= len; j += L) {
    const V v = X::exp(fe + load<V>(ge + j) - load<V>(c + j) * inv_eps);
    store(e1 + j, v);
    acc += __builtin_convertvector(v, D) * load<D>(gbar + j);
  }
  double s1 = lane_sum<double>(acc, L);
  for (; j < len; ++j) {
    const T v = exp_fast(fe + term(ge[j], c[j], inv_eps));
    e1[j] = v;
    s1 += double(v) * gbar[j];
  }
  return s1;
}

// With fbar_i known: Cbar_j += a_i e1_j gbar_j + b_j e0_j fbar_i, e0_j = exp(fe + ge_prev_j - c_j/eps);
// gnew_j -= b_j e0_j fbar_i; db_j -= eps e0_j fbar_i.
template <class T>
DC_SWEEP void unroll_pass2_impl(const T* __restrict c, const T* __restrict ge_prev, T fe, const T* __restrict e1,
                                const double* __restrict gbar, const T* __restrict bw, double ai, double fbar,
                                int64_t len, T inv_eps, double eps, T* __restrict cbar, double* __restrict gnew,
                                double* __restrict db) {
  using X = Vec<T>;
  using V = typename X::V;
  using D = typename X::D;
  constexpr int L = X::kWidth;
  const double efbar = eps * fbar;
  int64_t j = 0;
  for (; j + L <= len; j += L) {
    const D e0 = __builtin_convertvector(X::exp(fe + load<V>(ge_prev + j) - load<V>(c + j) * inv_eps), D);
    const D k0 = __builtin_convertvector(load<V>(bw + j), D) * e0 * fbar;
    const D add = ai * __builtin_convertvector(load<V>(e1 + j), D) * load<D>(gbar + j) + k0;
    store(cbar + j, load<V>(cbar + j) + __builtin_convertvector(add, V));
    store(gnew + j, load<D>(gnew + j) - k0);
    store(db + j, load<D>(db + j) - efbar * e0);
  }
  for (; j < len; ++j) {
    const double e0 = double(exp_fast(fe + term(ge_prev[j], c[j], inv_eps)));
    const double k0 = double(bw[j]) * e0 * fbar;
    cbar[j] += T(ai * double(e1[j]) * gbar[j] + k0);
    gnew[j] -= k0;
    db[j] -= efbar * e0;
  }
}

DC_VECTOR_CLONES double unroll_pass1(const float* c, const float* ge, float fe, const double* gbar, int64_t len,
                                     float inv_eps, float* e1) {
  return unroll_pass1_impl(c, ge, fe, gbar, len, inv_eps, e1);
}
DC_VECTOR_CLONES double unroll_pass1(const double* c, const double* ge, double fe, const double* gbar,
                                     int64_t len, double inv_eps, double* e1) {
  return unroll_pass1_impl(c, ge, fe, gbar, len, inv_eps, e1);
}
DC_VECTOR_CLONES void unroll_pass2(const float* c, const float* ge_prev, float fe, const float* e1,
                                   const double* gbar, const float* bw, double ai, double fbar, int64_t len,
                                   float inv_eps, double eps, float* cbar, double* gnew, double* db) {
  unroll_pass2_impl(c, ge_prev, fe, e1, gbar, bw, ai, fbar, len, inv_eps, eps, cbar, gnew, db);
}
DC_VECTOR_CLONES void unroll_pass2(const double* c, const double* ge_prev, double fe, const double* e1,
                                   const double* gbar, const double* bw, double ai, double fbar, int64_t len,
                                   double inv_eps, double eps, double* cbar, double* gnew, double* db) {
  unroll_pass2_impl(c, ge_prev, fe, e1, gbar, bw, ai, fbar, len, inv_eps, eps, cbar, gnew, db);
}

// H-matvec row: returns sum_j p_j y_j and adds p_j x_i to out_j.
template <class T>
DC_SWEEP double matvec_row_impl(const T* __restrict p, const double* __restrict y, double xi, int64_t len,
                                double* __restrict out) {
  using X = Vec<T>;
  using V = typename X::V;
  using D = typename X::D;
  constexpr int L = X::kWidth;
  D acc = D{};
  int64_t j = 0;
  for (; j + L <= len; j += L) {
    const D v = __builtin_convertvector(load<V>(p + j), D);
    acc += v * load<D>(y + j);
    store(out + j, load<D>(out + j) + v * xi);
  }
  double s = lane_sum<double>(acc, L);
  for (; j < len; ++j) {
    const double v = double(p[j]);
    s += v * y[j];
    out[j] += v * xi;
  }
  return s;
}
DC_VECTOR_CLONES double matvec_row(const float* p, const double* y, double xi, int64_t len, double* out) {
  return matvec_row_impl(p, y, xi, len, out);
}
DC_VECTOR_CLONES double matvec_row(const double* p, const double* y, double xi, int64_t len, double* out) {
  return matvec_row_impl(p, y, xi, len, out);
}

}  // namespace
}  // namespace sinkhorn
}  // namespace diffcomb
