// The CPU's workers for one Sinkhorn problem (cpu.cpp, cpu_cloud.cpp): a
// team of threads that splits the rows and columns, and the batch driver
// that gives each problem a thread or, for batches smaller than the thread
// count, a team. Included by the CPU files only.
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <vector>

#include "../common/parallel.h"
#include "forward.h"

namespace diffcomb {
namespace sinkhorn {
namespace {

// The common loops of a sweeper (sweep.h) for worker tid of a team of nt
// threads (nt = 1: one thread does the whole problem): rows, columns and
// CG entries split into contiguous ranges.
struct Team {
  int64_t n, m;
  int tid, nt;
  double* partial;  // nt doubles shared by the team (nt > 1)
  int64_t i0, i1, j0, j1;

  Team(int64_t n_, int64_t m_, int tid_, int nt_, double* partial_)
      : n(n_), m(m_), tid(tid_), nt(nt_), partial(partial_),
        i0(n_ * tid_ / nt_), i1(n_ * (tid_ + 1) / nt_), j0(m_ * tid_ / nt_), j1(m_ * (tid_ + 1) / nt_) {}

  template <class F>
  void rows(F f) const {
    for (int64_t i = i0; i < i1; ++i) f(i);
  }
  template <class F>
  void cols(F f) const {
    for (int64_t j = j0; j < j1; ++j) f(j);
  }
  template <class F>
  void entries(F f) const {
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = 0; j < m; ++j) f(i, j, i * m + j);
  }
  template <class F>
  void lines(int64_t N, F f) const {
    for (int64_t k = N * tid / nt, end = N * (tid + 1) / nt; k < end; ++k) f(k);
  }
  void sync() const {
#if defined(_OPENMP)
    if (nt > 1) {
#pragma omp barrier
    }
#endif
  }
  double sum(double mine) const {
    if (nt == 1) return mine;
    partial[tid] = mine;
    sync();
    double s = 0.0;
    for (int t = 0; t < nt; ++t) s += partial[t];
    sync();
    return s;
  }
  bool leader() const { return tid == 0; }
};

// The forward's work arrays for a team of nt workers (forward.h).
template <class T>
struct ForwardWork {
  std::vector<T> CT, wa, wb;  // CT: the transposed cost (dense) or the transposed points (clouds)
  std::vector<double> f_cur, f_new, g_cur, loga, logb, partial;
  ForwardWork(int64_t n, int64_t m, int64_t transposed, int nt)
      : CT(transposed), wa(n), wb(m), f_cur(n), f_new(n), g_cur(m), loga(n), logb(m),
        partial(static_cast<size_t>(nt)) {}
  ForwardProblem<T, T> problem(const ForwardBatch& A, int64_t bi) {
    ForwardProblem<T, T> p = forward_problem_at<T, T>(A, bi);
    p.f_cur = f_cur.data();
    p.f_new = f_new.data();
    p.g_cur = g_cur.data();
    p.loga = loga.data();
    p.logb = logb.data();
    p.wa = wa.data();
    p.wb = wb.data();
    return p;
  }
};

// Runs solve(work, bi, tid, nt) for every problem bi of the batch: one
// problem per thread when the batch fills the threads (or each problem is
// `small`), else the problems one after the other, each by a team of up to
// `team_max` threads that share one work (barriers between the
// half-iterations, partial sums reduced in a fixed order, so results do not
// depend on timing). make(nt) allocates the work of nt workers.
template <class Make, class Solve>
void run_batch(int64_t batch, int threads, int64_t cost, int64_t team_max, bool small, Make make, Solve solve) {
  const int nt = std::max(threads, 1);
  if (batch >= nt || nt == 1 || small) {
    parallel_rows(batch, threads, cost, [&](int64_t begin, int64_t end) {
      auto w = make(1);
      for (int64_t bi = begin; bi < end; ++bi) solve(w, bi, 0, 1);
    });
    return;
  }
  const int team = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, team_max)));
  auto w = make(team);
  for (int64_t bi = 0; bi < batch; ++bi) {
#if defined(_OPENMP)
#pragma omp parallel num_threads(team)
    solve(w, bi, omp_get_thread_num(), omp_get_num_threads());
#else
    solve(w, bi, 0, 1);
#endif
  }
}

}  // namespace
}  // namespace sinkhorn
}  // namespace diffcomb
