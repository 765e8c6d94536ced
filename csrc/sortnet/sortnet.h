// The math of the differentiable sorting networks (SPEC.md section 5), shared
// by cpu.cpp and cuda.cu: the sigmoids and their derivatives, the relaxed
// conditional swap of the values, its replay from a stored mixing weight, and
// the mix of two wires' distributions (the columns of P) with its adjoint.
//
// Layout of a network (built once per (type, n) in diffcomb/_sortnet_layout.py):
// comparators c = 0..C-1 in execution order, lo[c] / hi[c] their wires (the
// smaller value goes to lo), offsets[l]..offsets[l+1] the comparators of layer
// l. Within a layer the comparators are disjoint and sorted by min(lo, hi),
// and reach[l] is the largest |hi - lo| among them (SortNetwork::active relies
// on both; only the CPU's range skipping uses reach, the CUDA kernels pass none).
//
// The relaxed permutation matrix P (P[i, k] = weight of input i at output k)
// evolves row by row independently: row i starts as e_i and every comparator
// mixes its entries at lo and hi with the 2x2 matrix [[a, 1-a], [1-a, a]].
// The kernels therefore run "lanes" of rows of P through the network (a block
// of R rows on the CPU, one row per thread on the GPU), which costs O(1) per
// comparator and row: O(n) per comparator, O(n^2) per layer for all of P.
// The adjoint of the mix is the same mix, and the P part of dL/dalpha for a
// comparator is sum_i (G[i, lo] - G[i, hi]) (P_pre[i, lo] - P_pre[i, hi]):
// a sum over the same lanes, so the backward replays the lanes forward
// (recording the pre-swap differences of the lanes, O(C) per lane block) and
// then runs them backward; only the mixing weights alpha are saved between
// forward and backward, never a layer's P.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/common.h"

// Forced inlining of the per-comparator steps, so that the CPU's
// multiversioned lane loops (cpu.cpp) compile them for each instruction set.
#if defined(__CUDACC__)
#define SN_INLINE __forceinline__
#elif defined(__GNUC__)
#define SN_INLINE inline __attribute__((always_inline))
#else
#define SN_INLINE inline
#endif

namespace diffcomb {
namespace sortnet {

// Sigmoid codes shared with diffcomb/_sortnet_ops.py (SIGMOIDS there; kSigmoids in api.h).
enum class Sigmoid : int { Logistic = 0, LogisticPhi = 1, Gaussian = 2, Reciprocal = 3, Cauchy = 4, Optimal = 5 };

constexpr double kPhiC = 1e-10;  // the constant c of logistic_phi (SPEC 5.2)
constexpr double kPi = 3.14159265358979323846;
constexpr double kSqrt1_2 = 0.70710678118654752440;   // 1 / sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1 / sqrt(2 pi)

DC_HOST_DEVICE DC_INLINE double logistic(double v) {
  if (v >= 0) return 1.0 / (1.0 + exp(-v));
  const double e = exp(v);  // NaN stays NaN
  return e / (1.0 + e);
}

// v of logistic_phi: steepness d / (|d| + c)^art_lambda.
DC_HOST_DEVICE DC_INLINE double phi_argument(double d, double steepness, double art_lambda) {
  return steepness * d / pow(fabs(d) + kPhiC, art_lambda);
}

// f(d): the weight of the "a is the min" order (SPEC 5.2), v = steepness d (beta d in the papers).
template <Sigmoid S>
DC_HOST_DEVICE DC_INLINE double sigmoid(double d, double steepness, double art_lambda) {
  const double v = steepness * d;
  if constexpr (S == Sigmoid::Logistic) {
    return logistic(v);
  } else if constexpr (S == Sigmoid::LogisticPhi) {
    return logistic(phi_argument(d, steepness, art_lambda));
  } else if constexpr (S == Sigmoid::Gaussian) {
    return 0.5 * erfc(-v * kSqrt1_2);
  } else if constexpr (S == Sigmoid::Reciprocal) {
    if (fabs(v) == INFINITY) return v > 0 ? 1.0 : 0.0;  // steepness d overflowed: not inf / inf
    return 0.5 * (v / (2.0 + fabs(v)) + 1.0);
  } else if constexpr (S == Sigmoid::Cauchy) {
    return atan(v) / kPi + 0.5;
  } else {  // Optimal
    if (fabs(v) <= 0.25) return v + 0.5;
    if (v > 0.25) return 1.0 - 1.0 / (16.0 * v);
    return -1.0 / (16.0 * v);  // also NaN for NaN v
  }
}

// f'(d) = df/dd (SPEC 5.2).
template <Sigmoid S>
DC_HOST_DEVICE DC_INLINE double sigmoid_grad(double d, double steepness, double art_lambda) {
  const double v = steepness * d;
  if constexpr (S == Sigmoid::Logistic) {
    const double f = logistic(v);
    return steepness * f * (1.0 - f);
  } else if constexpr (S == Sigmoid::LogisticPhi) {
    const double f = logistic(phi_argument(d, steepness, art_lambda));
    const double x = fabs(d) + kPhiC;
    return f * (1.0 - f) * steepness * (x - art_lambda * fabs(d)) / x / pow(x, art_lambda);
  } else if constexpr (S == Sigmoid::Gaussian) {
    return steepness * kInvSqrt2Pi * exp(-0.5 * v * v);
  } else if constexpr (S == Sigmoid::Reciprocal) {
    const double s = 2.0 + fabs(v);
    return steepness / (s * s);
  } else if constexpr (S == Sigmoid::Cauchy) {
    return steepness / (kPi * (1.0 + v * v));
  } else {  // Optimal
    if (fabs(v) <= 0.25) return steepness;
    return steepness / (16.0 * v * v);
  }
}

// The mix of a comparator applied to one lane: (x, y) <- (a x + (1-a) y, (1-a) x + a y),
// written with delta = x - y. Returns delta (the pre-swap difference).
template <class T>
DC_HOST_DEVICE SN_INLINE T mix(T& x, T& y, T alpha) {
  const T x0 = x;
  const T y0 = y;
  const T delta = x0 - y0;
  x = y0 + alpha * delta;
  y = x0 - alpha * delta;
  return delta;
}

// The relaxed conditional swap of wires lo, hi of the values v (SPEC 5.2).
// Returns alpha, rounded to T: the weight that was applied and that is saved.
template <Sigmoid S, class T>
DC_HOST_DEVICE DC_INLINE T swap_values(T* v, int32_t lo, int32_t hi, double steepness, double art_lambda) {
  const T alpha = T(sigmoid<S>(double(v[hi]) - double(v[lo]), steepness, art_lambda));
  mix(v[lo], v[hi], alpha);
  return alpha;
}

// Replays a swap with its saved alpha (bit for bit the forward's update) and
// returns what the values' adjoint needs: a - b and f'(b - a).
template <Sigmoid S, class T>
DC_HOST_DEVICE DC_INLINE void replay_swap(T* v, int32_t lo, int32_t hi, T alpha, double steepness,
                                          double art_lambda, double* a_minus_b, double* fprime) {
  const double a = double(v[lo]);
  const double b = double(v[hi]);
  *a_minus_b = a - b;
  *fprime = sigmoid_grad<S>(b - a, steepness, art_lambda);
  mix(v[lo], v[hi], alpha);
}

// Adjoint of one swap for the values (SPEC 5.4): gv holds dL/dv after the
// swap on entry and before it on return; dalpha_p is the P part of dL/dalpha.
DC_HOST_DEVICE DC_INLINE void swap_values_vjp(double* gv, int32_t lo, int32_t hi, double alpha, double a_minus_b,
                                              double fprime, double dalpha_p) {
  const double glo = gv[lo];
  const double ghi = gv[hi];
  const double dd = ((glo - ghi) * a_minus_b + dalpha_p) * fprime;
  gv[lo] = ghi + alpha * (glo - ghi) - dd;  // alpha glo + (1 - alpha) ghi - dd
  gv[hi] = glo - alpha * (glo - ghi) + dd;  // (1 - alpha) glo + alpha ghi + dd
}

// R lanes of P (R rows of P, entries of wires lo and hi at x[0..R), y[0..R)):
// the forward mix, recording the pre-swap differences when tape != nullptr.
template <int R, class T>
DC_HOST_DEVICE SN_INLINE void mix_lanes(T* x, T* y, T alpha, T* tape) {
  // Whole-vector loads and stores through local arrays, so the compiler
  // vectorizes the lanes without having to prove that x and y are disjoint.
  T xs[R], ys[R], delta[R];
  for (int r = 0; r < R; ++r) xs[r] = x[r];
  for (int r = 0; r < R; ++r) ys[r] = y[r];
  for (int r = 0; r < R; ++r) delta[r] = xs[r] - ys[r];
  for (int r = 0; r < R; ++r) x[r] = ys[r] + alpha * delta[r];
  for (int r = 0; r < R; ++r) y[r] = xs[r] - alpha * delta[r];
  if (tape != nullptr) {
    for (int r = 0; r < R; ++r) tape[r] = delta[r];
  }
}

// Adjoint of mix_lanes for the lane adjoints gx, gy (the same symmetric mix)
// and the lanes' part of dL/dalpha, sum_r (gx_r - gy_r) delta_r.
template <int R, class T>
DC_HOST_DEVICE SN_INLINE T mix_lanes_vjp(T* gx, T* gy, T alpha, const T* delta) {
  T xs[R], ys[R], diff[R];
  for (int r = 0; r < R; ++r) xs[r] = gx[r];
  for (int r = 0; r < R; ++r) ys[r] = gy[r];
  for (int r = 0; r < R; ++r) diff[r] = xs[r] - ys[r];
  for (int r = 0; r < R; ++r) gx[r] = ys[r] + alpha * diff[r];
  for (int r = 0; r < R; ++r) gy[r] = xs[r] - alpha * diff[r];
  T dalpha = T(0);
  for (int r = 0; r < R; ++r) dalpha += diff[r] * delta[r];
  return dalpha;
}

// Where dL/dP[i, k] of one row of the batch is (api.h: P's layout, or Pt's
// when transposed): at i * row + k * col.
struct PStrides {
  int64_t row;
  int64_t col;
};

DC_HOST_DEVICE DC_INLINE PStrides p_strides(int64_t n, bool transposed) {
  return transposed ? PStrides{1, n} : PStrides{n, 1};
}

// A network layout (see the top of this file) on the host or the device.
struct SortNetwork {
  const int32_t* lo;
  const int32_t* hi;
  const int32_t* offsets;  // layers + 1 entries
  int32_t layers;
  const int32_t* reach;  // layers entries: the largest span of each layer (nullptr: active() unusable)

  DC_HOST_DEVICE SN_INLINE int32_t comparators() const { return offsets[layers]; }
  DC_HOST_DEVICE SN_INLINE int32_t min_wire(int32_t c) const { return lo[c] < hi[c] ? lo[c] : hi[c]; }
  DC_HOST_DEVICE SN_INLINE int32_t max_wire(int32_t c) const { return lo[c] < hi[c] ? hi[c] : lo[c]; }

  // First comparator of [begin, end) whose min wire is >= w (binary search).
  DC_HOST_DEVICE DC_INLINE int32_t lower_bound(int32_t begin, int32_t end, int32_t w) const {
    while (begin < end) {
      const int32_t mid = begin + (end - begin) / 2;
      if (min_wire(mid) < w) {
        begin = mid + 1;
      } else {
        end = mid;
      }
    }
    return begin;
  }

  // The comparators of layer l that touch a wire in [s, e) (plus possibly a
  // few that do not, which are no-ops on zero entries): [*cb, *ce). One that
  // touches it has its smaller wire in [s - reach[l], e).
  DC_HOST_DEVICE DC_INLINE void active(int32_t l, int32_t s, int32_t e, int32_t* cb, int32_t* ce) const {
    const int32_t begin = offsets[l];
    const int32_t end = offsets[l + 1];
    if (begin == end) {
      *cb = *ce = begin;
      return;
    }
    *cb = lower_bound(begin, end, s - reach[l]);
    *ce = lower_bound(*cb, end, e);
  }
};

}  // namespace sortnet
}  // namespace diffcomb
