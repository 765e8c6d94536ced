// The CPU driver of Sinkhorn between point clouds (cloud.h): forward.h's
// forward and cloud.h's gradient over a sweeper that computes the cost of
// each pair from the points inside its vectorized sweeps. Each worker keeps
// the points transposed (d, n) and (d, m), so that a sweep along a row reads
// the other cloud's coordinates contiguously; the problem needs O(d (n + m))
// memory beyond its inputs. Batching and teams as the dense driver
// (cpu_team.h).
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "../common/common.h"
#include "api.h"
#include "checks.h"
#include "cloud.h"
#include "cpu_team.h"
#include "cpu_vec.h"

namespace diffcomb {
namespace sinkhorn {
namespace {

// ---------------------------------------------------------------------------
// Vectorized sweeps along one point p (d coordinates) against the points Q
// stored transposed, Q[k * len + j] (one clone per instruction set; float and
// double). D: the dimension when it is 1, 2 or 3 (unrolled), else 0 (d).
// M: the metric (cloud.h).

template <class V>
DC_SWEEP V vsqrt(V x) {
  if constexpr (std::is_floating_point<V>::value) {
    return std::sqrt(x);
  } else {
    for (int k = 0; k < int(sizeof(V) / sizeof(x[0])); ++k) x[k] = std::sqrt(x[k]);
    return x;
  }
}

// The cost of p against entries j.. of Q (one value or a register of them).
template <class V, class T, int D, int M>
DC_SWEEP V pair_cost(const T* __restrict p, const T* __restrict Q, int64_t len, int64_t j, int d) {
  V c = V{};
  const int dd = D ? D : d;
  for (int k = 0; k < dd; ++k) {
    const V diff = p[k] - load<V>(Q + k * len + j);
    c += diff * diff;
  }
  return M == kEuclidean ? vsqrt(c) : c;
}

// max_j (w_j - C(p, q_j) / eps), then sum_j exp(w_j - C(p, q_j) / eps - max).
template <class T, int D, int M>
DC_SWEEP void cloud_lse_impl(const T* __restrict p, const T* __restrict Q, const T* __restrict w, int64_t len,
                             int d, T inv_eps, double* max_out, double* sum_out) {
  using X = Vec<T>;
  using V = typename X::V;
  constexpr int L = X::kWidth;
  const T ninf = -std::numeric_limits<T>::infinity();
  V mx = V{} + ninf;
  int64_t j = 0;
  for (; j + L <= len; j += L) {
    const V v = load<V>(w + j) - pair_cost<V, T, D, M>(p, Q, len, j, d) * inv_eps;
    mx = v > mx ? v : mx;
  }
  T top = ninf;
  for (int k = 0; k < L; ++k) top = mx[k] > top ? mx[k] : top;
  for (; j < len; ++j) {
    const T v = w[j] - pair_cost<T, T, D, M>(p, Q, len, j, d) * inv_eps;
    top = v > top ? v : top;
  }
  double total = 0.0;
  if (top != ninf) {
    for (int64_t j0 = 0; j0 < len; j0 += kBlock) {
      const int64_t j1 = std::min(len, j0 + kBlock);
      V acc = V{};
      int64_t jj = j0;
      for (; jj + L <= j1; jj += L)
        acc += X::exp(load<V>(w + jj) - pair_cost<V, T, D, M>(p, Q, len, jj, d) * inv_eps - top);
      T sum = T(lane_sum<T>(acc, L));
      for (; jj < j1; ++jj) sum += exp_fast(w[jj] - pair_cost<T, T, D, M>(p, Q, len, jj, d) * inv_eps - top);
      total += double(sum);
    }
  }
  *max_out = double(top);
  *sum_out = total;
}

// r = sum_j e_j and *hsum = sum_j e_j h_j, e_j = exp(wp + w_j - C(p, q_j) / eps): the plan's row
// and its potential-weighted sum, without storing the row.
template <class T, int D, int M>
DC_SWEEP double cloud_plan_impl(const T* __restrict p, const T* __restrict Q, const T* __restrict w,
                                const T* __restrict h, T wp, int64_t len, int d, T inv_eps, double* hsum) {
  using X = Vec<T>;
  using V = typename X::V;
  constexpr int L = X::kWidth;
  double total = 0.0, htotal = 0.0;
  for (int64_t j0 = 0; j0 < len; j0 += kBlock) {
    const int64_t j1 = std::min(len, j0 + kBlock);
    V acc = V{}, hacc = V{};
    int64_t j = j0;
    for (; j + L <= j1; j += L) {
      const V e = X::exp(wp + load<V>(w + j) - pair_cost<V, T, D, M>(p, Q, len, j, d) * inv_eps);
      acc += e;
      hacc += e * load<V>(h + j);
    }
    T s = T(lane_sum<T>(acc, L)), sh = T(lane_sum<T>(hacc, L));
    for (; j < j1; ++j) {
      const T e = exp_fast(wp + w[j] - pair_cost<T, T, D, M>(p, Q, len, j, d) * inv_eps);
      s += e;
      sh += e * h[j];
    }
    total += double(s);
    htotal += double(sh);
  }
  *hsum = htotal;
  return total;
}

// out_k = sum_j P_j factor_j (p_k - q_kj), P_j = exp(wp + w_j - C(p, q_j) / eps) (cloud.h,
// cost_factor): first P_j factor_j into buf (len), then the d weighted sums in double.
template <class T, int D, int M>
DC_SWEEP void cloud_grad_impl(const T* __restrict p, const T* __restrict Q, const T* __restrict w, T wp,
                              int64_t len, int d, T inv_eps, T* __restrict buf, double* out) {
  using X = Vec<T>;
  using V = typename X::V;
  using DV = typename X::D;
  constexpr int L = X::kWidth;
  int64_t j = 0;
  for (; j + L <= len; j += L) {
    const V c = pair_cost<V, T, D, M>(p, Q, len, j, d);
    V factor = V{} + T(2);
    if (M == kEuclidean) factor = c > T(0) ? T(1) / c : V{};
    store(buf + j, X::exp(wp + load<V>(w + j) - c * inv_eps) * factor);
  }
  for (; j < len; ++j) {
    const T c = pair_cost<T, T, D, M>(p, Q, len, j, d);
    buf[j] = exp_fast(wp + w[j] - c * inv_eps) * cost_factor<M>(c);
  }
  const int dd = D ? D : d;
  for (int k = 0; k < dd; ++k) {
    const T* q = Q + k * len;
    const double pk = double(p[k]);
    DV acc = DV{};
    int64_t jj = 0;
    for (; jj + L <= len; jj += L)
      acc += __builtin_convertvector(load<V>(buf + jj), DV) * (pk - __builtin_convertvector(load<V>(q + jj), DV));
    double s = lane_sum<double>(acc, L);
    for (; jj < len; ++jj) s += double(buf[jj]) * (pk - double(q[jj]));
    out[k] = s;
  }
}

// The (D, M) instantiation of a sweep for the runtime dimension and metric.
#define DC_CLOUD_BY_DIM(call)  \
  if (d == 3) {                \
    constexpr int D = 3;       \
    call;                      \
  } else if (d == 2) {         \
    constexpr int D = 2;       \
    call;                      \
  } else {                     \
    constexpr int D = 0;       \
    call;                      \
  }
#define DC_CLOUD_DISPATCH(call)                                           \
  do {                                                                    \
    if (metric == kEuclidean) {                                           \
      constexpr int M = kEuclidean;                                       \
      DC_CLOUD_BY_DIM(call)                                               \
    } else {                                                              \
      constexpr int M = kSqEuclidean;                                     \
      DC_CLOUD_BY_DIM(call)                                               \
    }                                                                     \
  } while (0)

template <class T>
DC_SWEEP void cloud_lse_any(const T* p, const T* Q, const T* w, int64_t len, int d, int metric, T inv_eps,
                            double* mx, double* sum) {
  DC_CLOUD_DISPATCH((cloud_lse_impl<T, D, M>(p, Q, w, len, d, inv_eps, mx, sum)));
}
template <class T>
DC_SWEEP double cloud_plan_any(const T* p, const T* Q, const T* w, const T* h, T wp, int64_t len, int d, int metric,
                               T inv_eps, double* hsum) {
  double r = 0.0;
  DC_CLOUD_DISPATCH((r = cloud_plan_impl<T, D, M>(p, Q, w, h, wp, len, d, inv_eps, hsum)));
  return r;
}
template <class T>
DC_SWEEP void cloud_grad_any(const T* p, const T* Q, const T* w, T wp, int64_t len, int d, int metric, T inv_eps,
                             T* buf, double* out) {
  DC_CLOUD_DISPATCH((cloud_grad_impl<T, D, M>(p, Q, w, wp, len, d, inv_eps, buf, out)));
}
#undef DC_CLOUD_DISPATCH
#undef DC_CLOUD_BY_DIM

DC_VECTOR_CLONES void cloud_lse(const float* p, const float* Q, const float* w, int64_t len, int d, int metric,
                                float inv_eps, double* mx, double* sum) {
  cloud_lse_any(p, Q, w, len, d, metric, inv_eps, mx, sum);
}
DC_VECTOR_CLONES void cloud_lse(const double* p, const double* Q, const double* w, int64_t len, int d, int metric,
                                double inv_eps, double* mx, double* sum) {
  cloud_lse_any(p, Q, w, len, d, metric, inv_eps, mx, sum);
}
DC_VECTOR_CLONES double cloud_plan(const float* p, const float* Q, const float* w, const float* h, float wp,
                                   int64_t len, int d, int metric, float inv_eps, double* hsum) {
  return cloud_plan_any(p, Q, w, h, wp, len, d, metric, inv_eps, hsum);
}
DC_VECTOR_CLONES double cloud_plan(const double* p, const double* Q, const double* w, const double* h, double wp,
                                   int64_t len, int d, int metric, double inv_eps, double* hsum) {
  return cloud_plan_any(p, Q, w, h, wp, len, d, metric, inv_eps, hsum);
}
DC_VECTOR_CLONES void cloud_grad(const float* p, const float* Q, const float* w, float wp, int64_t len, int d,
                                 int metric, float inv_eps, float* buf, double* out) {
  cloud_grad_any(p, Q, w, wp, len, d, metric, inv_eps, buf, out);
}
DC_VECTOR_CLONES void cloud_grad(const double* p, const double* Q, const double* w, double wp, int64_t len, int d,
                                 int metric, double inv_eps, double* buf, double* out) {
  cloud_grad_any(p, Q, w, wp, len, d, metric, inv_eps, buf, out);
}

// ---------------------------------------------------------------------------
// The sweeper (forward.h's and cloud.h's) of one problem for worker tid of nt:
// x (n, d) and y (m, d) as given, XT (d, n) and YT (d, m) transposed by
// prepare(), each worker its own rows and columns.

template <class T>
struct CloudSweeper : Team {
  const T *x, *y;
  T *XT, *YT;
  int d, metric;
  T inv_eps = T(1);
  T* buf;  // gradients: max(n, m) per worker

  CloudSweeper(const T* x_, const T* y_, T* transposed, int64_t n_, int64_t m_, int64_t d_, int metric_, int tid_,
               int nt_, double* partial_, T* buf_)
      : Team(n_, m_, tid_, nt_, partial_), x(x_), y(y_), XT(transposed), YT(transposed + d_ * n_),
        d(static_cast<int>(d_)), metric(metric_), buf(buf_) {}

  void prepare() const {
    for (int64_t i = i0; i < i1; ++i)
      for (int k = 0; k < d; ++k) XT[k * n + i] = x[i * d + k];
    for (int64_t j = j0; j < j1; ++j)
      for (int k = 0; k < d; ++k) YT[k * m + j] = y[j * d + k];
  }
  void set_inv_eps(double v) { inv_eps = T(v); }
  double nonfinite() const {
    T bad = T(0);
    for (int64_t k = i0 * d; k < i1 * d; ++k) bad += x[k] - x[k];
    for (int64_t k = j0 * d; k < j1 * d; ++k) bad += y[k] - y[k];
    return bad == T(0) ? 0.0 : 1.0;
  }
  template <class E>
  void row_lse(const T* wb, E emit) const {
    for (int64_t i = i0; i < i1; ++i) {
      double mx, sum;
      cloud_lse(x + i * d, YT, wb, m, d, metric, inv_eps, &mx, &sum);
      emit(i, mx, sum);
    }
  }
  template <class E>
  void col_lse(const T* wa, E emit) const {
    for (int64_t j = j0; j < j1; ++j) {
      double mx, sum;
      cloud_lse(y + j * d, XT, wa, n, d, metric, inv_eps, &mx, &sum);
      emit(j, mx, sum);
    }
  }
  template <class V>
  double plan_rows(const T* wa, const T* wb, const T* g, T*, V value) const {
    double mine = 0.0;
    for (int64_t i = i0; i < i1; ++i) {
      double gsum;
      const double r = cloud_plan(x + i * d, YT, wb, g, wa[i], m, d, metric, inv_eps, &gsum);
      mine += value(i, r, gsum);
    }
    return mine;
  }
  void gradients(const T* wa, const T* wb, double gc, T* dx, T* dy) const {
    double out[kMaxStackDim];
    std::vector<double> heap(d > kMaxStackDim ? d : 0);
    double* o = d > kMaxStackDim ? heap.data() : out;
    for (int64_t i = i0; i < i1; ++i) {
      cloud_grad(x + i * d, YT, wb, wa[i], m, d, metric, inv_eps, buf, o);
      for (int k = 0; k < d; ++k) dx[i * d + k] = T(gc * o[k]);
    }
    for (int64_t j = j0; j < j1; ++j) {
      cloud_grad(y + j * d, XT, wa, wb[j], n, d, metric, inv_eps, buf, o);
      for (int k = 0; k < d; ++k) dy[j * d + k] = T(gc * o[k]);
    }
  }
  static constexpr int kMaxStackDim = 16;
};

template <class T>
struct CloudGradWork {
  std::vector<T> transposed, wa, wb, buf;
  std::vector<double> partial;
  CloudGradWork(int64_t n, int64_t m, int64_t d, int nt)
      : transposed(d * (n + m)), wa(n), wb(m), buf(static_cast<size_t>(nt) * std::max(n, m)),
        partial(static_cast<size_t>(nt)) {}
};

}  // namespace

// ---------------------------------------------------------------------------
// Entry points.

void cloud_forward_cpu(std::uintptr_t x, std::uintptr_t y, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f,
                       std::uintptr_t g, std::uintptr_t cost, std::uintptr_t n_iter, std::uintptr_t err,
                       std::uintptr_t f_init, std::uintptr_t g_init, std::uintptr_t params, double scaling,
                       int64_t batch, int64_t n, int64_t m, int64_t d, int metric, int64_t max_iter, double tol,
                       int64_t check_every, int dtype, int threads) {
  check_cloud_forward(x, y, a, b, f, g, cost, n_iter, err, params, scaling, batch, n, m, d, metric, max_iter,
                      check_every, dtype);
  if (batch == 0 || n == 0 || m == 0) return;
  const ForwardBatch A = extended(ForwardBatch{0, a, b, 0, f, g, cost, n_iter, err, 0, 0, n, m, max_iter, check_every,
                                                1.0, tol},
                                   f_init, g_init, params, scaling);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* X = reinterpret_cast<const T*>(x);
    const T* Y = reinterpret_cast<const T*>(y);
    run_batch(batch, threads, n * m * std::max<int64_t>(max_iter, 1), std::min(n, m), n * m < (1 << 14),
              [&](int nt) { return ForwardWork<T>(n, m, d * (n + m), nt); },
              [&](ForwardWork<T>& w, int64_t bi, int tid, int nt) {
                const ForwardProblem<T, T> p = w.problem(A, bi);
                CloudSweeper<T> s(X + bi * n * d, Y + bi * m * d, w.CT.data(), n, m, d, metric, tid, nt,
                                  w.partial.data(), nullptr);
                forward_problem(s, p);
              });
  });
}

void cloud_backward_cpu(std::uintptr_t x, std::uintptr_t y, std::uintptr_t a, std::uintptr_t b, std::uintptr_t f,
                        std::uintptr_t g, std::uintptr_t gcost, std::uintptr_t dx, std::uintptr_t dy,
                        std::uintptr_t da, std::uintptr_t db, std::uintptr_t params, int64_t batch, int64_t n,
                        int64_t m, int64_t d, int metric, int dtype, int threads) {
  check_cloud_backward(x, y, a, b, f, g, gcost, dx, dy, da, db, params, batch, n, m, d, metric, dtype);
  if (batch == 0 || n == 0 || m == 0) return;
  const CloudGradBatch A{x, y, a, b, f, g, gcost, dx, dy, da, db, params, n, m, d, metric};
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    run_batch(batch, threads, n * m, std::min(n, m), n * m < (1 << 14),
              [&](int nt) { return CloudGradWork<T>(n, m, d, nt); },
              [&](CloudGradWork<T>& w, int64_t bi, int tid, int nt) {
                CloudGradProblem<T, T> p = cloud_grad_problem_at<T, T>(A, bi);
                p.wa = w.wa.data();
                p.wb = w.wb.data();
                CloudSweeper<T> s(p.x, p.y, w.transposed.data(), n, m, d, metric, tid, nt, w.partial.data(),
                                  w.buf.data() + tid * std::max(n, m));
                cloud_gradient_problem(s, p);
              });
  });
}

}  // namespace sinkhorn
}  // namespace diffcomb
