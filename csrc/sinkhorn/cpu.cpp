// Batched CPU kernels of log-domain Sinkhorn (math: sinkhorn.h).
//
// Forward: per problem, a transposed copy of C so that both updates sweep
// contiguous rows (f: rows of C, g: rows of C^T). Each log-sum-exp is two
// sweeps over a row that stays in L1 (maximum, then the sum of exp), the
// sweeps vectorized through exp_fast and GCC target clones (AVX-512, AVX2
// and the baseline), float32 summed in float blocks of 256 then in double.
// The convergence test is free: the row sums of P(f, g) follow from the next
// f-update (sinkhorn.h, row_error). Batches of at least `threads` problems
// run one problem per thread; smaller batches split the rows and columns of
// each problem over a team (barriers between the half-iterations, per-thread
// partial sums reduced in a fixed order, so results do not depend on timing).
//
// Backward: implicit (preconditioned CG on H, one sweep over P per step) or
// unrolled (the recorded iterates replayed in reverse, two exps per entry
// per iteration), one problem per thread.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "../common/common.h"
#include "../common/parallel.h"
#include "api.h"
#include "sinkhorn.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define DC_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DC_VECTOR_CLONES
#endif

// The sweeps' bodies are inlined into each clone (a separate function would
// be compiled once, for the baseline instruction set).
#if defined(__GNUC__)
#define DC_SWEEP inline __attribute__((always_inline))
#else
#define DC_SWEEP inline
#endif

namespace diffcomb {
namespace sinkhorn {
namespace {

template <class T>
T* as_ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

constexpr int64_t kBlock = 256;  // float32 sums: blocks summed in float, then in double

// ---------------------------------------------------------------------------
// Vectorized sweeps (one clone per instruction set; float and double).

// The sweeps use GCC vector types of one AVX-512 register (16 floats or 8
// doubles): each clone compiles them to its own instructions (two AVX2
// registers, four SSE registers). Lane k of an accumulator takes the entries
// j = k mod width, so sums do not depend on the instruction set. Float32
// sums run in float over blocks of 256 entries, then in double; values that
// accumulate over rows (backward) are kept in double.
template <class T>
struct Vec;
template <>
struct Vec<float> {
  typedef float V __attribute__((vector_size(64)));
  typedef uint32_t U __attribute__((vector_size(64)));
  typedef double D __attribute__((vector_size(128)));
  static constexpr int kWidth = 16;
  static DC_SWEEP V exp(V x) { return exp_poly_f32<V, U>(x); }
};
template <>
struct Vec<double> {
  typedef double V __attribute__((vector_size(64)));
  typedef uint64_t U __attribute__((vector_size(64)));
  typedef double D __attribute__((vector_size(64)));
  static constexpr int kWidth = 8;
  static DC_SWEEP V exp(V x) { return vmath::exp_f64<V, U>(x); }
};

template <class V, class T>
DC_SWEEP V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V, class T>
DC_SWEEP void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof v);
}
template <class T, class V>
DC_SWEEP double lane_sum(const V& v, int width) {
  T s = 0;
  for (int k = 0; k < width; ++k) s += v[k];
  return double(s);
}

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

// ---------------------------------------------------------------------------
// Helpers.

template <class T>
bool all_finite(const T* x, int64_t len) {
  T acc = 0;
  for (int64_t i = 0; i < len; ++i) acc += x[i] - x[i];  // NaN for any NaN or inf
  return acc == T(0);
}

template <class T>
void transpose(const T* src, T* dst, int64_t n, int64_t m, int64_t j0, int64_t j1) {
  // dst (m, n) = src (n, m)^T for dst rows j0..j1.
  constexpr int64_t kTile = 32;
  for (int64_t jj = j0; jj < j1; jj += kTile) {
    const int64_t je = std::min(j1, jj + kTile);
    for (int64_t ii = 0; ii < n; ii += kTile) {
      const int64_t ie = std::min(n, ii + kTile);
      for (int64_t j = jj; j < je; ++j)
        for (int64_t i = ii; i < ie; ++i) dst[j * n + i] = src[i * m + j];
    }
  }
}

inline void team_barrier(int nt) {
#if defined(_OPENMP)
  if (nt > 1) {
#pragma omp barrier
  }
#else
  (void)nt;
#endif
}

// ---------------------------------------------------------------------------
// Forward of one problem, run by a team of nt threads (nt = 1: serial).

template <class T>
struct ForwardScratch {
  std::vector<T> CT, wa, wb, gT;
  std::vector<double> f_cur, f_new, g_cur, loga, logb, partial;
  void resize(int64_t n, int64_t m, int nt) {
    CT.resize(n * m);
    wa.resize(n);
    wb.resize(m);
    gT.resize(m);
    f_cur.resize(n);
    f_new.resize(n);
    g_cur.resize(m);
    loga.resize(n);
    logb.resize(m);
    partial.resize(2 * static_cast<size_t>(nt));
  }
};

struct ForwardArgs {
  std::uintptr_t C, a, b, P, f, g, cost, n_iter, err, f_hist, g_hist;
  int64_t n, m, max_iter, check_every;
  double eps, tol;
};

// Sum of the team's partials, the same order on every thread.
inline double team_sum(std::vector<double>& partial, int tid, int nt, double mine, int slot) {
  partial[2 * tid + slot] = mine;
  team_barrier(nt);
  double s = 0.0;
  for (int t = 0; t < nt; ++t) s += partial[2 * t + slot];
  team_barrier(nt);
  return s;
}

template <class T>
void forward_problem(const ForwardArgs& A, int64_t bi, ForwardScratch<T>& s, int tid, int nt) {
  const int64_t n = A.n, m = A.m;
  const T* C = as_ptr<const T>(A.C) + bi * n * m;
  const T* a = as_ptr<const T>(A.a) + bi * n;
  const T* b = as_ptr<const T>(A.b) + bi * m;
  T* P = as_ptr<T>(A.P) + bi * n * m;
  T* f_out = as_ptr<T>(A.f) + bi * n;
  T* g_out = as_ptr<T>(A.g) + bi * m;
  T* fh = A.f_hist ? as_ptr<T>(A.f_hist) + bi * A.max_iter * n : nullptr;
  T* gh = A.g_hist ? as_ptr<T>(A.g_hist) + bi * (A.max_iter + 1) * m : nullptr;
  const int64_t i0 = n * tid / nt, i1 = n * (tid + 1) / nt;
  const int64_t j0 = m * tid / nt, j1 = m * (tid + 1) / nt;
  const double eps = A.eps, inv_eps_d = 1.0 / eps;
  const T inv_eps = T(inv_eps_d);

  // Non-finite inputs: the whole problem is NaN (SPEC 0).
  bool finite_mine = all_finite(C + i0 * m, (i1 - i0) * m) && all_finite(a + i0, i1 - i0) &&
                     all_finite(b + j0, j1 - j0);
  const bool finite = team_sum(s.partial, tid, nt, finite_mine ? 0.0 : 1.0, 0) == 0.0;
  if (!finite) {
    const T nan = quiet_nan<T>();
    std::fill(P + i0 * m, P + i1 * m, nan);
    std::fill(f_out + i0, f_out + i1, nan);
    std::fill(g_out + j0, g_out + j1, nan);
    if (tid == 0) {
      as_ptr<T>(A.cost)[bi] = nan;
      as_ptr<int64_t>(A.n_iter)[bi] = 0;
      as_ptr<double>(A.err)[bi] = NAN;
    }
    return;
  }
  for (int64_t i = i0; i < i1; ++i) s.loga[i] = log_weight(double(a[i]));
  for (int64_t j = j0; j < j1; ++j) {
    s.logb[j] = log_weight(double(b[j]));
    s.g_cur[j] = 0.0;
    s.gT[j] = T(0);
    s.wb[j] = T(s.logb[j]);
    if (gh) gh[j] = T(0);
  }
  transpose(C, s.CT.data(), n, m, j0, j1);
  team_barrier(nt);

  const int64_t last = iteration_limit(n, m, A.max_iter);
  const bool check = A.tol > 0;
  int64_t iters = 0;
  double err = NAN;
  for (int64_t t = 1;; ++t) {
    if (t > last && !check) {
      iters = last;
      break;
    }
    // f-update from g^{t-1}.
    for (int64_t i = i0; i < i1; ++i) {
      double mx, sum;
      lse_sweep(C + i * m, s.wb.data(), m, inv_eps, &mx, &sum);
      s.f_new[i] = potential(mx, sum, eps);
    }
    if (t >= 2 && check && is_check(t - 1, last, A.check_every)) {
      double e = 0.0;
      for (int64_t i = i0; i < i1; ++i) e += row_error(double(a[i]), s.f_cur[i], s.f_new[i], inv_eps_d);
      err = team_sum(s.partial, tid, nt, e, 1);
      if (err <= A.tol) {
        iters = t - 1;
        break;
      }
    }
    if (t > last) {
      iters = last;
      break;
    }
    for (int64_t i = i0; i < i1; ++i) {
      s.f_cur[i] = s.f_new[i];
      s.wa[i] = T(s.loga[i] + s.f_cur[i] * inv_eps_d);
      if (fh) fh[(t - 1) * n + i] = T(s.f_cur[i]);
    }
    team_barrier(nt);
    // g-update from f^t.
    for (int64_t j = j0; j < j1; ++j) {
      double mx, sum;
      lse_sweep(s.CT.data() + j * n, s.wa.data(), n, inv_eps, &mx, &sum);
      s.g_cur[j] = potential(mx, sum, eps);
      s.wb[j] = T(s.logb[j] + s.g_cur[j] * inv_eps_d);
      if (gh) gh[t * m + j] = T(s.g_cur[j]);
    }
    team_barrier(nt);
  }
  // Read-out: P, and the primal value <P, C> + eps KL(P | a b^T) = sum_ij P_ij (f_i + g_j).
  for (int64_t j = j0; j < j1; ++j) {
    g_out[j] = T(s.g_cur[j]);
    s.gT[j] = T(s.g_cur[j]);
  }
  for (int64_t i = i0; i < i1; ++i) {
    f_out[i] = T(s.f_cur[i]);
    s.wa[i] = T(s.loga[i] + s.f_cur[i] * inv_eps_d);
  }
  team_barrier(nt);
  double value = 0.0;
  for (int64_t i = i0; i < i1; ++i) {
    double gsum;
    const double r = plan_row(C + i * m, s.wb.data(), s.gT.data(), s.wa[i], m, inv_eps, P + i * m, &gsum);
    if (r > 0) value += s.f_cur[i] * r;
    value += gsum;
  }
  value = team_sum(s.partial, tid, nt, value, 0);
  if (tid == 0) {
    as_ptr<T>(A.cost)[bi] = T(value);
    as_ptr<int64_t>(A.n_iter)[bi] = iters;
    as_ptr<double>(A.err)[bi] = err;
  }
}

// ---------------------------------------------------------------------------
// Implicit backward of one problem.

template <class T>
struct ImplicitArgs {
  const T *C, *a, *b, *P, *f, *g, *G;
  T gc;
  T *dC, *da, *db;
  int64_t n, m;
  double eps, cg_tol;
  int64_t cg_max_iter;
};

template <class T>
void implicit_problem(const ImplicitArgs<T>& A, std::vector<double>& w) {
  const int64_t n = A.n, m = A.m, N = n + m;
  const double gc = double(A.gc);
  if (!A.G) {  // envelope only (SPEC 4.2)
    if (A.dC)
      for (int64_t k = 0; k < n * m; ++k) A.dC[k] = T(gc * double(A.P[k]));
    for (int64_t i = 0; i < n; ++i) A.da[i] = T(gc * cost_weight_gradient(double(A.f[i]), A.eps));
    for (int64_t j = 0; j < m; ++j) A.db[j] = T(gc * cost_weight_gradient(double(A.g[j]), A.eps));
    return;
  }
  w.assign(7 * N, 0.0);
  double* rhs = w.data();
  double* x = rhs + N;
  double* r = x + N;
  double* z = r + N;
  double* p = z + N;
  double* hp = p + N;
  double* wt = hp + N;  // the plan's marginals (P 1, P^T 1): H's diagonal and the preconditioner
  // rhs = [Q 1; Q^T 1], Q = G o P, and the marginals, in one sweep over P.
  for (int64_t i = 0; i < n; ++i) {
    const T* pr = A.P + i * m;
    const T* gr = A.G + i * m;
    double s = 0.0, ri = 0.0;
    for (int64_t j = 0; j < m; ++j) {
      const double pij = double(pr[j]);
      const double q = double(gr[j]) * pij;
      s += q;
      ri += pij;
      rhs[n + j] += q;
      wt[n + j] += pij;
    }
    rhs[i] = s;
    wt[i] = ri;
  }
  double rhs2 = 0.0;
  for (int64_t k = 0; k < N; ++k) rhs2 += rhs[k] * rhs[k];
  if (!(rhs2 < INFINITY)) {  // non-finite problem or upstream gradient
    const T nan = quiet_nan<T>();
    if (A.dC) std::fill(A.dC, A.dC + n * m, nan);
    std::fill(A.da, A.da + n, nan);
    std::fill(A.db, A.db + m, nan);
    return;
  }
  // Preconditioned CG from x = 0.
  for (int64_t k = 0; k < N; ++k) {
    r[k] = rhs[k];
    z[k] = precondition(r[k], wt[k]);
    p[k] = z[k];
  }
  double rz = 0.0;
  for (int64_t k = 0; k < N; ++k) rz += r[k] * z[k];
  const double stop = A.cg_tol * A.cg_tol * rhs2;
  for (int64_t it = 0; it < A.cg_max_iter && rhs2 > 0; ++it) {
    double rr = 0.0;
    for (int64_t k = 0; k < N; ++k) rr += r[k] * r[k];
    if (rr <= stop) break;
    for (int64_t k = 0; k < N; ++k) hp[k] = wt[k] * p[k];
    for (int64_t i = 0; i < n; ++i) hp[i] += matvec_row(A.P + i * m, p + n, p[i], m, hp + n);
    double php = 0.0;
    for (int64_t k = 0; k < N; ++k) php += p[k] * hp[k];
    if (!(php > 0)) break;
    const double alpha = rz / php;
    for (int64_t k = 0; k < N; ++k) {
      x[k] += alpha * p[k];
      r[k] -= alpha * hp[k];
      z[k] = precondition(r[k], wt[k]);
    }
    double rz_new = 0.0;
    for (int64_t k = 0; k < N; ++k) rz_new += r[k] * z[k];
    const double beta = rz_new / rz;
    rz = rz_new;
    for (int64_t k = 0; k < N; ++k) p[k] = z[k] + beta * p[k];
  }
  const double* u = x;
  const double* v = x + n;
  // Pv and P^T u (reuse hp), then the gradients.
  double* pv = hp;
  double* ptu = hp + n;
  std::fill(hp, hp + N, 0.0);
  for (int64_t i = 0; i < n; ++i) pv[i] = matvec_row(A.P + i * m, v, u[i], m, ptu);
  const double inv_eps = 1.0 / A.eps;
  if (A.dC) {
    for (int64_t i = 0; i < n; ++i) {
      const T* pr = A.P + i * m;
      const T* gr = A.G + i * m;
      T* out = A.dC + i * m;
      for (int64_t j = 0; j < m; ++j)
        out[j] = T(implicit_cost_gradient(double(pr[j]), u[i], v[j], double(gr[j]), inv_eps, gc));
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const double limit = wt[i] > 0 ? 0.0
                                   : zero_marginal_gradient(A.C + i * m, A.G + i * m, A.b, A.g, v, m, 1, inv_eps);
    A.da[i] = T(implicit_weight_gradient(rhs[i] - pv[i], wt[i], limit) + gc * cost_weight_gradient(double(A.f[i]), A.eps));
  }
  for (int64_t j = 0; j < m; ++j) {
    const double limit = wt[n + j] > 0 ? 0.0 : zero_marginal_gradient(A.C + j, A.G + j, A.a, A.f, u, n, m, inv_eps);
    A.db[j] = T(implicit_weight_gradient(rhs[n + j] - ptu[j], wt[n + j], limit) + gc * cost_weight_gradient(double(A.g[j]), A.eps));
  }
}

// ---------------------------------------------------------------------------
// Unrolled backward of one problem.

template <class T>
struct UnrolledArgs {
  const T *C, *a, *b, *fh, *gh, *G;
  int64_t iters;
  T gc;
  T *dC, *da, *db;
  int64_t n, m;
  double eps;
};

template <class T>
struct UnrolledScratch {
  std::vector<T> cbar, fe, ge, ge_prev, e1, bw;
  std::vector<double> fbar, gbar, gnew, da, db;
};

template <class T>
void unrolled_problem(const UnrolledArgs<T>& A, UnrolledScratch<T>& s) {
  const int64_t n = A.n, m = A.m, T_ = A.iters;  // clamped to [0, max_iter] by the entry point
  const double eps = A.eps, inv_eps_d = 1.0 / eps, gc = double(A.gc);
  const T inv_eps = T(inv_eps_d);
  if (T_ < 1) {  // non-finite problem
    const T nan = quiet_nan<T>();
    if (A.dC) std::fill(A.dC, A.dC + n * m, nan);
    std::fill(A.da, A.da + n, nan);
    std::fill(A.db, A.db + m, nan);
    return;
  }
  const T* f_final = A.fh + (T_ - 1) * n;
  const T* g_final = A.gh + T_ * m;
  s.cbar.assign(n * m, T(0));
  s.fe.resize(n);
  s.ge.resize(m);
  s.ge_prev.resize(m);
  s.e1.resize(m);
  s.bw.resize(m);
  s.fbar.assign(n, 0.0);
  s.gbar.assign(m, 0.0);
  s.gnew.assign(m, 0.0);
  s.da.assign(n, 0.0);
  s.db.assign(m, 0.0);
  for (int64_t j = 0; j < m; ++j) s.bw[j] = A.b[j];
  // Read-out P_ij = a_i b_j E_ij.
  for (int64_t i = 0; i < n; ++i) s.fe[i] = T(double(f_final[i]) * inv_eps_d);
  for (int64_t j = 0; j < m; ++j) s.ge[j] = T(double(g_final[j]) * inv_eps_d);
  for (int64_t i = 0; i < n; ++i) {
    const double ai = double(A.a[i]);
    double fb = 0.0, dai = 0.0;
    for (int64_t j = 0; j < m; ++j) {
      const double e = double(exp_fast(s.fe[i] + term(s.ge[j], A.C[i * m + j], inv_eps)));
      const double bj = double(A.b[j]);
      const double gij = A.G ? double(A.G[i * m + j]) : 0.0;
      const double q = gij * ai * bj * e;
      fb += q;
      s.gbar[j] += q * inv_eps_d;
      s.cbar[i * m + j] = T(-q * inv_eps_d + gc * ai * bj * e);
      dai += gij * bj * e;
      s.db[j] += gij * ai * e;
    }
    s.fbar[i] = fb * inv_eps_d;
    s.da[i] = dai + gc * cost_weight_gradient(double(f_final[i]), eps);
  }
  for (int64_t j = 0; j < m; ++j) s.db[j] += gc * cost_weight_gradient(double(g_final[j]), eps);
  if (A.G) {
    for (int64_t t = T_; t >= 1; --t) {
      const T* ft = A.fh + (t - 1) * n;
      const T* gt = A.gh + t * m;
      const T* gp = A.gh + (t - 1) * m;
      for (int64_t j = 0; j < m; ++j) {
        s.ge[j] = T(double(gt[j]) * inv_eps_d);
        s.ge_prev[j] = T(double(gp[j]) * inv_eps_d);
        s.gnew[j] = 0.0;
      }
      for (int64_t i = 0; i < n; ++i) {
        const T fe = T(double(ft[i]) * inv_eps_d);
        const double ai = double(A.a[i]);
        const T* c = A.C + i * m;
        const double s1 = unroll_pass1(c, s.ge.data(), fe, s.gbar.data(), m, inv_eps, s.e1.data());
        const double fb = s.fbar[i] - ai * s1;
        s.da[i] -= eps * s1;
        unroll_pass2(c, s.ge_prev.data(), fe, s.e1.data(), s.gbar.data(), s.bw.data(), ai, fb, m, inv_eps, eps,
                     s.cbar.data() + i * m, s.gnew.data(), s.db.data());
        s.fbar[i] = 0.0;
      }
      std::swap(s.gbar, s.gnew);
    }
  }
  if (A.dC) std::copy(s.cbar.begin(), s.cbar.end(), A.dC);
  for (int64_t i = 0; i < n; ++i) A.da[i] = T(s.da[i]);
  for (int64_t j = 0; j < m; ++j) A.db[j] = T(s.db[j]);
}

}  // namespace

// ---------------------------------------------------------------------------
// Entry points.

void forward_cpu(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P, std::uintptr_t f,
                 std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter, std::uintptr_t err,
                 std::uintptr_t f_hist, std::uintptr_t g_hist, int64_t batch, int64_t n, int64_t m, double eps,
                 int64_t max_iter, double tol, int64_t check_every, int dtype, int threads) {
  if (batch == 0 || n == 0 || m == 0) return;
  const ForwardArgs A{C, a, b, P, f, g, cost, n_iter, err, f_hist, g_hist, n, m, max_iter, check_every, eps, tol};
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const int nt = std::max(threads, 1);
    const int64_t work = n * m * std::max<int64_t>(max_iter, 1);
    if (batch >= nt || nt == 1 || n * m < (1 << 14)) {
      parallel_rows(batch, threads, work, [&](int64_t begin, int64_t end) {
        ForwardScratch<T> s;
        s.resize(n, m, 1);
        for (int64_t bi = begin; bi < end; ++bi) forward_problem<T>(A, bi, s, 0, 1);
      });
      return;
    }
    // Fewer problems than threads: a team per problem.
    const int team = static_cast<int>(std::min<int64_t>(nt, std::min(n, m)));
    ForwardScratch<T> s;
    s.resize(n, m, team);
    for (int64_t bi = 0; bi < batch; ++bi) {
#if defined(_OPENMP)
#pragma omp parallel num_threads(team)
      {
        const int got = omp_get_num_threads();
        forward_problem<T>(A, bi, s, omp_get_thread_num(), got);
      }
#else
      forward_problem<T>(A, bi, s, 0, 1);
#endif
    }
  });
}

void implicit_backward_cpu(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P,
                           std::uintptr_t f, std::uintptr_t g, std::uintptr_t G, std::uintptr_t gcost,
                           std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, int64_t batch, int64_t n,
                           int64_t m, double eps, double cg_tol, int64_t cg_max_iter, int dtype, int threads) {
  if (batch == 0 || n == 0 || m == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(batch, threads, 100 * n * m, [&](int64_t begin, int64_t end) {
      std::vector<double> w;
      for (int64_t bi = begin; bi < end; ++bi) {
        ImplicitArgs<T> A{as_ptr<const T>(C) + bi * n * m,
                          as_ptr<const T>(a) + bi * n,
                          as_ptr<const T>(b) + bi * m,
                          as_ptr<const T>(P) + bi * n * m,
                          as_ptr<const T>(f) + bi * n,
                          as_ptr<const T>(g) + bi * m,
                          G ? as_ptr<const T>(G) + bi * n * m : nullptr,
                          gcost ? as_ptr<const T>(gcost)[bi] : T(0),
                          dC ? as_ptr<T>(dC) + bi * n * m : nullptr,
                          as_ptr<T>(da) + bi * n,
                          as_ptr<T>(db) + bi * m,
                          n,
                          m,
                          eps,
                          cg_tol,
                          cg_max_iter};
        implicit_problem<T>(A, w);
      }
    });
  });
}

void unrolled_backward_cpu(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f_hist,
                           std::uintptr_t g_hist, std::uintptr_t n_iter, std::uintptr_t G, std::uintptr_t gcost,
                           std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, int64_t batch, int64_t n,
                           int64_t m, int64_t max_iter, double eps, int dtype, int threads) {
  if (batch == 0 || n == 0 || m == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(batch, threads, 4 * n * m * std::max<int64_t>(max_iter, 1), [&](int64_t begin, int64_t end) {
      UnrolledScratch<T> s;
      for (int64_t bi = begin; bi < end; ++bi) {
        UnrolledArgs<T> A{as_ptr<const T>(C) + bi * n * m,
                          as_ptr<const T>(a) + bi * n,
                          as_ptr<const T>(b) + bi * m,
                          as_ptr<const T>(f_hist) + bi * max_iter * n,
                          as_ptr<const T>(g_hist) + bi * (max_iter + 1) * m,
                          G ? as_ptr<const T>(G) + bi * n * m : nullptr,
                          replayed_iterations(as_ptr<const int64_t>(n_iter)[bi], max_iter),
                          gcost ? as_ptr<const T>(gcost)[bi] : T(0),
                          dC ? as_ptr<T>(dC) + bi * n * m : nullptr,
                          as_ptr<T>(da) + bi * n,
                          as_ptr<T>(db) + bi * m,
                          n,
                          m,
                          eps};
        unrolled_problem<T>(A, s);
      }
    });
  });
}

}  // namespace sinkhorn
}  // namespace diffcomb
