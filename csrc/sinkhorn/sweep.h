// The sweeper: how the algorithms of forward.h and backward.h see the
// parallel machine. They are written once, as the steps of one problem run
// by every worker of a team (CPU: the threads of an OpenMP team, or one
// thread; CUDA: the threads of the problem's block), over a sweeper S that
// each device implements (cpu.cpp, cuda.cu) and that chooses the parallel
// decomposition and the vector width:
//
//   s.rows(f)          f(i) for this worker's share of the rows 0..n-1
//   s.cols(f)          f(j) for its share of the columns 0..m-1
//   s.entries(f)       f(i, j, k = i m + j) for its share of the entries
//   s.lines(N, f)      f(k) for its share of 0..N-1 (the CG vectors, N = n + m)
//   s.sum(x)           the sum of x over the workers, the same value on every
//                      worker and in a fixed order (results do not depend on
//                      timing); every worker calls it
//   s.sync()           a barrier: what a worker wrote is seen by all
//   s.leader()         true on exactly one worker (it writes the scalars)
//
// rows/cols/entries/lines need no barrier between calls that touch the same
// index on the same worker; a step that reads other workers' values is
// preceded by sync() (or by a sweep, which ends with the barrier that its
// own partition needs). The sweeps proper, the loops over a whole row or
// column of C or P, are listed where they are used (forward.h, backward.h).
#pragma once

#include <cstdint>

#include "sinkhorn.h"

// A host-device template that calls a device-only sweeper: nvcc compiles the
// host instantiation too, which would warn about the device calls it never
// makes.
#if defined(__CUDACC__)
#define DC_SWEEP_TEMPLATE _Pragma("nv_exec_check_disable")
#else
#define DC_SWEEP_TEMPLATE
#endif

namespace diffcomb {
namespace sinkhorn {

// The NaN outputs of a problem whose inputs are not all finite (SPEC 0):
// every entry of dC (when written), da and db.
DC_SWEEP_TEMPLATE
template <class S, class T>
DC_HOST_DEVICE void fill_nan_gradients(S& s, T* dC, T* da, T* db) {
  const T nan = quiet_nan<T>();
  if (dC) s.entries([&](int64_t, int64_t, int64_t k) { dC[k] = nan; });
  s.rows([&](int64_t i) { da[i] = nan; });
  s.cols([&](int64_t j) { db[j] = nan; });
}

// sum over the workers of sum_k f(k) over each one's share of 0..N-1.
DC_SWEEP_TEMPLATE
template <class S, class F>
DC_HOST_DEVICE double line_sum(S& s, int64_t N, F f) {
  double part = 0.0;
  s.lines(N, [&](int64_t k) { part += f(k); });
  return s.sum(part);
}

}  // namespace sinkhorn
}  // namespace diffcomb
