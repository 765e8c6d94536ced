// Batched CPU kernels of soft-DTW, the cell math from softdtw.h.
//
// value_and_alignment_cpu (gamma > 0, the training path) runs the
// anti-diagonal engine: each problem's costs are copied into the diagonal
// layout, and each diagonal is one vectorized loop (common/vmath.h exp/log,
// compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time).
// Pairs run in parallel over the batch; a batch smaller than the thread count
// instead splits every diagonal of one pair among the threads, with a
// barrier between diagonals.
//
// forward_cpu / backward_cpu / second_order_cpu keep the row-by-row DP with
// stored transition weights: the hard DTW (gamma = 0, whose tie-breaks need
// the weights), and the sharp variant and the alignment's Hessian-vector
// product, which need the weights of every cell twice.
#include <algorithm>
#include <cstring>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "../common/common.h"
#include "../common/parallel.h"
#include "../common/vmath.h"
#include "api.h"
#include "softdtw.h"

namespace diffcomb {
namespace softdtw {
namespace {

template <class T>
T* as_ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

template <class T>
Problem<T> make_problem(std::uintptr_t C, std::uintptr_t P, std::uintptr_t lengths_x, std::uintptr_t lengths_y,
                        int64_t b, int64_t m, int64_t n, double gamma, int64_t band) {
  const int64_t mb = lengths_x ? as_ptr<const int64_t>(lengths_x)[b] : m;
  const int64_t nb = lengths_y ? as_ptr<const int64_t>(lengths_y)[b] : n;
  return Problem<T>{as_ptr<const T>(C) + b * m * n, n, as_ptr<T>(P) + b * m * n * 3, 3 * n, mb, nb, gamma, band};
}


// ---------------------------------------------------------------------------
// Anti-diagonal engine.

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DC_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DC_SIMD_CLONES
#endif

struct VecMath {
  static inline double exp(double x) { return vmath::exp(x); }
  static inline double log(double x) { return vmath::log_positive(x); }
};

// Rows [i0, i1] of diagonal k, forward (softdtw.h, forward_cell).
DC_SIMD_CLONES void forward_rows(double* A, double* B, const int64_t* start, int64_t k, int64_t i0, int64_t i1,
                                 double gamma, double inv_gamma) {
  const double* r1 = A + start[k - 1];
  const double* r2 = A + start[k - 2];
  double* r = A + start[k];
  double* cv = B + start[k];
#pragma omp simd
  for (int64_t i = i0; i <= i1; ++i) {
    const double v = soft_min_value<VecMath>(r1[i], r2[i - 1], r1[i - 1], gamma, inv_gamma);
    r[i] = cv[i] + v;
    cv[i] = v;
  }
}

// Rows [i0, i1] of diagonal k, backward (softdtw.h, backward_cell).
DC_SIMD_CLONES void backward_rows(double* A, const double* B, const int64_t* start, int64_t k, int64_t i0,
                                  int64_t i1, double inv_gamma) {
  const double* e1 = A + start[k + 1];
  const double* v1 = B + start[k + 1];
  const double* e2 = A + start[k + 2];
  const double* v2 = B + start[k + 2];
  double* a = A + start[k];
#pragma omp simd
  for (int64_t i = i0; i <= i1; ++i) {
    const double r = a[i];
    a[i] = pull<VecMath>(e1[i], v1[i], r, inv_gamma) + pull<VecMath>(e1[i + 1], v1[i + 1], r, inv_gamma) +
           pull<VecMath>(e2[i + 1], v2[i + 1], r, inv_gamma);
  }
}

// Per-thread scratch of the engine.
struct Scratch {
  std::vector<double> A, B;
  std::vector<int64_t> start;
};

// The pair's diagonals and arrays, ready for the sweeps; false when a used
// cost is not finite.
template <class T>
bool load(const Diagonals& g, const T* C, int64_t ldc, Scratch& s) {
  s.start.resize(g.last() + 2);
  const int64_t size = g.layout(s.start.data());
  s.A.assign(size, INFINITY);
  s.B.assign(size, INFINITY);
  s.A[s.start[0]] = 0.0;
  double poison = 0.0;  // becomes NaN when a cost is NaN or +/-inf
  for (int64_t k = 2; k <= g.last(); ++k) {
    double* b = s.B.data() + s.start[k];
    const T* c = C + (k - 1);  // C[i - 1][k - i - 1] = c[(i - 1) * (ldc - 1) - 1]
    const int64_t i0 = g.lo(k), i1 = g.hi(k);
#pragma omp simd reduction(+ : poison)
    for (int64_t i = i0; i <= i1; ++i) {
      const double x = double(c[(i - 1) * (ldc - 1) - 1]);
      b[i] = x;
      poison += x * 0.0;
    }
  }
  return poison == 0.0;
}

// E (row stride lde) of the used block from A after the backward; cells
// outside the band stay as the caller left them.
template <class T>
void store_alignment(const Diagonals& g, const Scratch& s, T* E, int64_t lde) {
  for (int64_t k = 2; k <= g.last(); ++k) {
    const double* a = s.A.data() + s.start[k];
    T* e = E + (k - 1);
    const int64_t i0 = g.lo(k), i1 = g.hi(k);
    for (int64_t i = i0; i <= i1; ++i) e[(i - 1) * (lde - 1) - 1] = T(a[i]);
  }
}

// Splits [i0, i1] among `team` threads in pieces of whole SIMD widths.
inline void share(int64_t i0, int64_t i1, int64_t t, int64_t team, int64_t* b, int64_t* e) {
  const int64_t blocks = (i1 - i0 + 8) / 8;
  *b = i0 + 8 * (blocks * t / team);
  *e = std::min(i1, i0 + 8 * (blocks * (t + 1) / team) - 1);
}

// One pair: the value, and E (row stride lde, zeroed by the caller where the
// band or the lengths leave cells out) when E is not null. team > 1 splits
// each diagonal among that many threads.
template <class T>
double solve(const Diagonals& g, const T* C, int64_t ldc, T* E, int64_t lde, double gamma, int team, Scratch& s) {
  if (!g.feasible()) return INFINITY;
  if (!load(g, C, ldc, s)) {
    if (E) {
      for (int64_t i = 0; i < g.mb; ++i) std::fill_n(E + i * lde, g.nb, quiet_nan<T>());
    }
    return NAN;
  }
  const double inv_gamma = 1.0 / gamma;
  double* A = s.A.data();
  double* B = s.B.data();
  const int64_t* start = s.start.data();
  const int64_t K = g.last();
  const int64_t cells = g.mb * g.nb;
  if (team > 1 && cells >= (int64_t(1) << 16)) {
#if defined(_OPENMP)
#pragma omp parallel num_threads(team)
    {
      const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      int64_t b, e;
      for (int64_t k = 2; k <= K; ++k) {
        share(g.lo(k), g.hi(k), t, nt, &b, &e);
        if (b <= e) forward_rows(A, B, start, k, b, e, gamma, inv_gamma);
#pragma omp barrier
      }
    }
#endif
  } else {
    for (int64_t k = 2; k <= K; ++k) forward_rows(A, B, start, k, g.lo(k), g.hi(k), gamma, inv_gamma);
  }
  const double value = A[start[K] + g.mb];
  if (!E) return value;
  A[start[K] + g.mb] = 1.0;
  if (team > 1 && cells >= (int64_t(1) << 16)) {
#if defined(_OPENMP)
#pragma omp parallel num_threads(team)
    {
      const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      int64_t b, e;
      for (int64_t k = K - 1; k >= 2; --k) {
        share(g.lo(k), g.hi(k), t, nt, &b, &e);
        if (b <= e) backward_rows(A, B, start, k, b, e, inv_gamma);
#pragma omp barrier
      }
    }
#endif
  } else {
    for (int64_t k = K - 1; k >= 2; --k) backward_rows(A, B, start, k, g.lo(k), g.hi(k), inv_gamma);
  }
  store_alignment(g, s, E, lde);
  return value;
}

}  // namespace

void value_and_alignment_cpu(std::uintptr_t C, std::uintptr_t value, std::uintptr_t E, std::uintptr_t lengths_x,
                             std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, double gamma,
                             int64_t band, int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* costs = as_ptr<const T>(C);
    T* values = as_ptr<T>(value);
    T* alignments = E ? as_ptr<T>(E) : nullptr;
    const bool partial = band >= 0 || lengths_x || lengths_y;
    auto pair = [&](int64_t b, int team, Scratch& s) {
      const Diagonals g{lengths_x ? as_ptr<const int64_t>(lengths_x)[b] : m,
                        lengths_y ? as_ptr<const int64_t>(lengths_y)[b] : n, band};
      T* e = alignments ? alignments + b * m * n : nullptr;
      if (e && partial) std::fill_n(e, m * n, T(0));
      values[b] = T(solve(g, costs + b * m * n, n, e, n, gamma, team, s));
    };
    const int team = std::max(threads, 1);
    if (batch < team && m * n >= (int64_t(1) << 16)) {
      Scratch s;
      for (int64_t b = 0; b < batch; ++b) pair(b, team, s);
      return;
    }
    parallel_rows(batch, threads, 40 * m * n, [&](int64_t begin, int64_t end) {
      Scratch s;
      for (int64_t b = begin; b < end; ++b) pair(b, 1, s);
    });
  });
}

void forward_cpu(std::uintptr_t C, std::uintptr_t P, std::uintptr_t value, std::uintptr_t lengths_x,
                 std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n, double gamma, int64_t band,
                 int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(batch, threads, 20 * m * n, [&](int64_t begin, int64_t end) {
      std::vector<double> rows(2 * (n + 1));
      for (int64_t b = begin; b < end; ++b) {
        const Problem<T> problem = make_problem<T>(C, P, lengths_x, lengths_y, b, m, n, gamma, band);
        std::fill_n(problem.P, m * n * 3, T(0));
        as_ptr<T>(value)[b] = T(problem.forward(rows.data(), rows.data() + n + 1));
      }
    });
  });
}

void backward_cpu(std::uintptr_t P, std::uintptr_t value, std::uintptr_t grad, std::uintptr_t E,
                  std::uintptr_t lengths_x, std::uintptr_t lengths_y, int64_t batch, int64_t m, int64_t n,
                  int64_t band, int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(batch, threads, 4 * m * n, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const Problem<T> problem = make_problem<T>(0, P, lengths_x, lengths_y, b, m, n, 0.0, band);
        T* e = as_ptr<T>(E) + b * m * n;
        std::fill_n(e, m * n, T(0));
        problem.backward(double(as_ptr<const T>(value)[b]), double(as_ptr<const T>(grad)[b]), e, n);
      }
    });
  });
}

void second_order_cpu(std::uintptr_t P, std::uintptr_t value, std::uintptr_t Z, std::uintptr_t jvp,
                      std::uintptr_t E, std::uintptr_t HZ, std::uintptr_t lengths_x, std::uintptr_t lengths_y,
                      int64_t batch, int64_t m, int64_t n, double gamma, int64_t band, int dtype, int threads) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_rows(batch, threads, 8 * m * n, [&](int64_t begin, int64_t end) {
      std::vector<double> dR((m + 1) * (n + 1)), e(m * n), hz(m * n);
      for (int64_t b = begin; b < end; ++b) {
        const Problem<T> problem = make_problem<T>(0, P, lengths_x, lengths_y, b, m, n, gamma, band);
        const double d = problem.second_order(double(as_ptr<const T>(value)[b]), as_ptr<const T>(Z) + b * m * n,
                                              n, dR.data(), e.data(), hz.data());
        as_ptr<T>(jvp)[b] = T(d);
        T* e_out = as_ptr<T>(E) + b * m * n;
        T* hz_out = as_ptr<T>(HZ) + b * m * n;
        std::fill_n(e_out, m * n, T(0));
        std::fill_n(hz_out, m * n, T(0));
        for (int64_t i = 0; i < problem.mb; ++i) {
          for (int64_t j = 0; j < problem.nb; ++j) {
            e_out[i * n + j] = T(e[i * problem.nb + j]);
            hz_out[i * n + j] = T(hz[i * problem.nb + j]);
          }
        }
      }
    });
  });
}

}  // namespace softdtw
}  // namespace diffcomb
