// The CPU driver of log-domain Sinkhorn: the algorithms are forward.h and
// backward.h; this file chooses how they run on CPU threads.
//
// Forward: small problems of the plain entry point (n m < 2^14, cost range
// (max C - min C) / eps <= 100) iterate in the kernel domain, with no
// exponential per iteration (cpu_scaling.h; the log domain where that is not
// safe). Batches of at least `threads` problems run one problem per
// thread; smaller batches split the rows and columns of each problem over a
// team (barriers between the half-iterations, per-thread partial sums reduced
// in a fixed order, so results do not depend on timing). Each problem keeps a
// transposed copy of C so that both updates sweep contiguous rows (f: rows of
// C, g: rows of C^T); the sweeps are cpu_sweeps.h's (vectorized, float32
// summed in float blocks of 256 then in double). Backward: implicit (CG, one
// sweep over P per step) or unrolled (two exps per entry per iteration), one
// problem per thread.
#include <algorithm>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "../common/common.h"
#include "../common/parallel.h"
#include "api.h"
#include "checks.h"
#include "backward.h"
#include "cpu_scaling.h"
#include "cpu_sweeps.h"
#include "cpu_team.h"
#include "forward.h"

namespace diffcomb {
namespace sinkhorn {
namespace {

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

// ---------------------------------------------------------------------------
// Forward (forward.h): the sweeps read C by rows and its transpose CT.

template <class T>
struct ForwardSweeper : Team {
  const T* C;
  T* CT;
  T inv_eps;  // the sweeps run in T

  ForwardSweeper(const ForwardProblem<T, T>& p, T* CT_, int tid_, int nt_, double* partial_)
      : Team(p.n, p.m, tid_, nt_, partial_), C(p.C), CT(CT_), inv_eps(T(p.scale.inv_eps)) {}

  void prepare() const { transpose(C, CT, n, m, j0, j1); }
  void set_inv_eps(double x) { inv_eps = T(x); }
  double nonfinite() const {
    T bad = T(0);
    for (int64_t k = i0 * m; k < i1 * m; ++k) bad += C[k] - C[k];
    return bad == T(0) ? 0.0 : 1.0;
  }
  template <class E>
  void row_lse(const T* wb, E emit) const {
    for (int64_t i = i0; i < i1; ++i) {
      double mx, sum;
      lse_sweep(C + i * m, wb, m, inv_eps, &mx, &sum);
      emit(i, mx, sum);
    }
  }
  template <class E>
  void col_lse(const T* wa, E emit) const {
    for (int64_t j = j0; j < j1; ++j) {
      double mx, sum;
      lse_sweep(CT + j * n, wa, n, inv_eps, &mx, &sum);
      emit(j, mx, sum);
    }
  }
  template <class V>
  double plan_rows(const T* wa, const T* wb, const T* g, T* P, V value) const {
    double mine = 0.0;
    for (int64_t i = i0; i < i1; ++i) {
      double gsum;
      const double r = plan_row(C + i * m, wb, g, wa[i], m, inv_eps, P + i * m, &gsum);
      mine += value(i, r, gsum);
    }
    return mine;
  }
};

// ---------------------------------------------------------------------------
// Implicit backward (backward.h): one thread per problem.

template <class T>
struct ImplicitSweeper : Team {
  const T *P, *G;
  explicit ImplicitSweeper(const ImplicitProblem<T>& p) : Team(p.n, p.m, 0, 1, nullptr), P(p.P), G(p.G) {}

  void plan_line_sums(double* rhs, double* wt) const {
    std::fill(rhs, rhs + n + m, 0.0);
    std::fill(wt, wt + n + m, 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const T* pr = P + i * m;
      const T* gr = G + i * m;
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
  }
  void plan_matvec(const double* x, double* out) const {
    std::fill(out + n, out + n + m, 0.0);
    for (int64_t i = 0; i < n; ++i) out[i] = matvec_row(P + i * m, x + n, x[i], m, out + n);
  }
};

// ---------------------------------------------------------------------------
// Unrolled backward (backward.h): one thread per problem.

template <class T>
struct UnrolledWork {
  std::vector<T> cbar, fe, fe2, ge, ge_prev, e1;
  std::vector<double> d;
  UnrolledProblem<T, T> problem(const UnrolledBatch& A, int64_t bi) {
    UnrolledProblem<T, T> p = unrolled_problem_at<T, T>(A, bi);
    const int64_t n = p.n, m = p.m;
    if (!p.dC) cbar.resize(n * m);
    p.cbar = p.dC ? p.dC : cbar.data();
    fe.resize(n);
    fe2.resize(n);
    ge.resize(m);
    ge_prev.resize(m);
    e1.resize(m);
    d.resize(2 * n + 3 * m);
    p.fbar = d.data();
    p.sa = p.fbar + n;
    p.gbar = p.sa + n;
    p.gnew = p.gbar + m;
    p.sb = p.gnew + m;
    p.fe = fe.data();
    p.fe2 = fe2.data();
    p.ge = ge.data();
    p.ge_prev = ge_prev.data();
    return p;
  }
};

template <class T>
struct UnrolledSweeper : Team {
  const UnrolledProblem<T, T>& p;
  T* e1;
  T inv_eps;
  UnrolledSweeper(const UnrolledProblem<T, T>& p_, T* e1_)
      : Team(p_.n, p_.m, 0, 1, nullptr), p(p_), e1(e1_), inv_eps(T(p_.scale.inv_eps)) {}

  void readout() const {
    const double inv = p.scale.inv_eps;
    for (int64_t i = 0; i < n; ++i) {
      const double ai = double(p.a[i]);
      double q_row = 0.0, da = 0.0;
      for (int64_t j = 0; j < m; ++j) {
        const double e = double(scaled_exp(p.fe[i], p.ge[j], p.C[i * m + j], inv_eps));
        const ReadoutEntry r = readout_entry(p.G ? double(p.G[i * m + j]) : 0.0, ai, double(p.b[j]), e, inv,
                                             p.gcost);
        q_row += r.q;
        p.gbar[j] += r.q * inv;
        p.cbar[i * m + j] = T(r.cbar);
        da += r.row;
        p.sb[j] += r.col;
      }
      p.fbar[i] = q_row * inv;
      p.sa[i] += da;
    }
  }
  void adjoint() const {
    for (int64_t i = 0; i < n; ++i) {
      const T* c = p.C + i * m;
      const double ai = double(p.a[i]);
      const double s1 = unroll_pass1(c, p.ge, p.fe[i], p.gbar, m, inv_eps, e1);
      const double fb = p.fbar[i] - ai * s1;
      p.sa[i] -= p.scale.eps * s1;
      unroll_pass2(c, p.ge_prev, p.fe2[i], e1, p.gbar, p.b, ai, p.lam_a * fb, m, inv_eps, p.scale.eps, p.cbar + i * m,
                   p.gnew, p.sb);
      p.fbar[i] = fb;
    }
  }
};

}  // namespace

// ---------------------------------------------------------------------------
// Entry points.

namespace {

// Problems below this many entries run one per thread (never on a team), and those of the plain
// entry point in the kernel domain where it is safe (cpu_scaling.h).
constexpr int64_t kSmallProblem = 1 << 14;

template <class T>
struct DenseWork : ForwardWork<T> {
  ScalingWork scaling;
  DenseWork(int64_t n, int64_t m, int nt) : ForwardWork<T>(n, m, n * m, nt) {}
};

void run_forward(const ForwardBatch& A, int64_t batch, int dtype, int threads) {
  const int64_t n = A.n, m = A.m;
  const bool small = n * m < kSmallProblem;
  const bool plain = !A.params && !A.f_init && !A.g_init && A.P;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    // The work estimate counts the iterations a run is likely to do: with a tolerance, the first
    // checks (tiny problems converge in a few tens of iterations; waking threads for them costs
    // more than it saves, and far more on a busy machine), else max_iter.
    const int64_t iterations = A.tol > 0 && A.scaling >= 1.0 ? std::min<int64_t>(A.max_iter, 2 * A.check_every) : A.max_iter;
    run_batch(batch, threads, n * m * std::max<int64_t>(iterations, 1), std::min(n, m), small,
              [&](int nt) { return DenseWork<T>(n, m, nt); },
              [&](DenseWork<T>& w, int64_t bi, int tid, int nt) {
                const ForwardProblem<T, T> p = w.problem(A, bi);
                if (small && plain && scaling_problem(p, w.scaling)) return;
                ForwardSweeper<T> s(p, w.CT.data(), tid, nt, w.partial.data());
                forward_problem(s, p);
              });
  });
}

void run_implicit(const ImplicitBatch& A, int64_t batch, int dtype, int threads) {
  const int64_t n = A.n, m = A.m;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    // About 25 ns per plan entry: a few CG steps of one sweep over P each (measured at 16 x 16).
    parallel_rows(batch, threads, 25 * n * m, [&](int64_t begin, int64_t end) {
      std::vector<double> work(7 * (n + m));
      for (int64_t bi = begin; bi < end; ++bi) {
        ImplicitProblem<T> p = implicit_problem_at<T>(A, bi);
        p.work = work.data();
        ImplicitSweeper<T> s(p);
        implicit_problem(s, p);
      }
    });
  });
}

void run_unrolled(const UnrolledBatch& A, int64_t batch, int dtype, int threads) {
  const int64_t n = A.n, m = A.m;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(batch, threads, 4 * n * m * std::max<int64_t>(A.max_iter, 1), [&](int64_t begin, int64_t end) {
      UnrolledWork<T> w;
      for (int64_t bi = begin; bi < end; ++bi) {
        const UnrolledProblem<T, T> p = w.problem(A, bi);
        UnrolledSweeper<T> s(p, w.e1.data());
        unrolled_problem(s, p);
      }
    });
  });
}

}  // namespace

void implicit_solve_cpu(std::uintptr_t P, std::uintptr_t rhs, std::uintptr_t wt, std::uintptr_t x, int64_t batch,
                        int64_t n, int64_t m, double cg_tol, int64_t cg_max_iter, int dtype, int threads) {
  check_implicit_solve(P, rhs, wt, x, batch, n, m, cg_max_iter, dtype);
  if (batch == 0 || n == 0 || m == 0) return;
  const SolveBatch A{P, rhs, wt, x, n, m, cg_tol, cg_max_iter};
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(batch, threads, 100 * n * m, [&](int64_t begin, int64_t end) {
      std::vector<double> cg(4 * (n + m));
      for (int64_t bi = begin; bi < end; ++bi) {
        const ImplicitProblem<T> p = solve_problem_at<T>(A, bi);
        ImplicitSweeper<T> s(p);
        solve_problem(s, p, A, bi, cg.data());
      }
    });
  });
}

void forward_cpu(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P, std::uintptr_t f,
                 std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter, std::uintptr_t err,
                 std::uintptr_t f_hist, std::uintptr_t g_hist, int64_t batch, int64_t n, int64_t m, double eps,
                 int64_t max_iter, double tol, int64_t check_every, int dtype, int threads) {
  check_forward(C, a, b, P, f, g, cost, n_iter, err, batch, n, m, eps, max_iter, check_every, dtype);
  if (batch == 0 || n == 0 || m == 0) return;
  run_forward(ForwardBatch{C, a, b, P, f, g, cost, n_iter, err, f_hist, g_hist, n, m, max_iter, check_every, eps, tol},
              batch, dtype, threads);
}

void forward_ext_cpu(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P, std::uintptr_t f,
                     std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter, std::uintptr_t err,
                     std::uintptr_t f_hist, std::uintptr_t g_hist, std::uintptr_t f_init, std::uintptr_t g_init,
                     std::uintptr_t params, double scaling, int64_t batch, int64_t n, int64_t m, int64_t max_iter,
                     double tol, int64_t check_every, int dtype, int threads) {
  check_forward_ext(C, a, b, P, f, g, cost, n_iter, err, params, scaling, batch, n, m, max_iter, check_every, dtype);
  if (batch == 0 || n == 0 || m == 0) return;
  const ForwardBatch A = extended(
      ForwardBatch{C, a, b, P, f, g, cost, n_iter, err, f_hist, g_hist, n, m, max_iter, check_every, 1.0, tol}, f_init,
      g_init, params, scaling);
  run_forward(A, batch, dtype, threads);
}

void implicit_backward_cpu(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P,
                           std::uintptr_t f, std::uintptr_t g, std::uintptr_t G, std::uintptr_t gcost,
                           std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, int64_t batch, int64_t n,
                           int64_t m, double eps, double cg_tol, int64_t cg_max_iter, int dtype, int threads) {
  check_implicit_backward(C, a, b, P, f, g, dC, da, db, batch, n, m, eps, cg_max_iter, dtype);
  if (batch == 0 || n == 0 || m == 0) return;
  run_implicit(ImplicitBatch{C, a, b, P, f, g, G, gcost, dC, da, db, n, m, eps, cg_tol, cg_max_iter}, batch, dtype,
               threads);
}

void implicit_backward_ext_cpu(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t P,
                               std::uintptr_t f, std::uintptr_t g, std::uintptr_t G, std::uintptr_t gcost,
                               std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, std::uintptr_t params,
                               int64_t batch, int64_t n, int64_t m, double cg_tol, int64_t cg_max_iter, int dtype,
                               int threads) {
  check_implicit_backward(C, a, b, P, f, g, dC, da, db, batch, n, m, 1.0, cg_max_iter, dtype);
  check_params("sinkhorn_implicit_backward_ext", params, batch, n, m);
  if (batch == 0 || n == 0 || m == 0) return;
  ImplicitBatch A{C, a, b, P, f, g, G, gcost, dC, da, db, n, m, 1.0, cg_tol, cg_max_iter};
  A.params = params;
  run_implicit(A, batch, dtype, threads);
}

void unrolled_backward_cpu(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f_hist,
                           std::uintptr_t g_hist, std::uintptr_t n_iter, std::uintptr_t G, std::uintptr_t gcost,
                           std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, int64_t batch, int64_t n,
                           int64_t m, int64_t max_iter, double eps, int dtype, int threads) {
  check_unrolled_backward(C, a, b, f_hist, g_hist, n_iter, dC, da, db, batch, n, m, max_iter, eps, dtype);
  if (batch == 0 || n == 0 || m == 0) return;
  run_unrolled(UnrolledBatch{C, a, b, f_hist, g_hist, n_iter, G, gcost, dC, da, db, n, m, max_iter, eps}, batch,
               dtype, threads);
}

void unrolled_backward_ext_cpu(std::uintptr_t C, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f_hist,
                               std::uintptr_t g_hist, std::uintptr_t n_iter, std::uintptr_t G, std::uintptr_t gcost,
                               std::uintptr_t dC, std::uintptr_t da, std::uintptr_t db, std::uintptr_t params,
                               int64_t batch, int64_t n, int64_t m, int64_t max_iter, int dtype, int threads) {
  check_unrolled_backward(C, a, b, f_hist, g_hist, n_iter, dC, da, db, batch, n, m, max_iter, 1.0, dtype);
  check_params("sinkhorn_unrolled_backward_ext", params, batch, n, m);
  if (batch == 0 || n == 0 || m == 0) return;
  UnrolledBatch A{C, a, b, f_hist, g_hist, n_iter, G, gcost, dC, da, db, n, m, max_iter, 1.0};
  A.params = params;
  run_unrolled(A, batch, dtype, threads);
}

}  // namespace sinkhorn
}  // namespace diffcomb
