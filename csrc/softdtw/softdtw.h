// Soft-DTW: the dynamic program over a cost matrix and its expected-alignment
// backward (SPEC.md sections 3.2-3.4, 3.6). Header-only, DC_HOST_DEVICE: the
// CPU kernel (cpu.cpp) runs it cell by cell; a wavefront CUDA kernel runs the
// same cell functions along anti-diagonals.
//
// One problem is a cost matrix C (m x n, row-major with row stride ldc) of
// which the leading mb x nb block is used (variable lengths), smoothing
// gamma >= 0 (0: hard DTW) and an optional Sakoe-Chiba band b (cells with
// |i - j| > b are excluded; b < 0: no band). R[0][0] = 0, the rest of row 0 /
// column 0 is +inf.
//
// The forward stores each cell's three transition weights (SPEC 3.2), so the
// backward (push form: E[mb][nb] = 1 and, in reverse order, every cell passes
// E times its weights to its predecessors) needs no exp or log: measured
// about 2x on value+gradient against recomputing them from R.
#pragma once

#include "../common/common.h"

namespace diffcomb {
namespace softdtw {

// Transition weights of a cell from its predecessors' values (left =
// R[i][j-1], diag = R[i-1][j-1], up = R[i-1][j]) and the soft minimum they
// give. gamma = 0: the argmin one-hot with ties broken diag, up, left (SPEC
// 3.6). All predecessors +inf (outside the band): value +inf, weights 0.
struct Transition {
  double value;
  double left, diag, up;
};

DC_HOST_DEVICE DC_INLINE Transition soft_min3(double left, double diag, double up, double gamma) {
  double lo = diag < up ? diag : up;
  lo = left < lo ? left : lo;
  if (lo == INFINITY) return {INFINITY, 0.0, 0.0, 0.0};
  if (gamma == 0.0) {
    if (diag == lo) return {lo, 0.0, 1.0, 0.0};
    if (up == lo) return {lo, 0.0, 0.0, 1.0};
    return {lo, 1.0, 0.0, 0.0};
  }
  const double inv_gamma = 1.0 / gamma;
  const double el = exp((lo - left) * inv_gamma);
  const double ed = exp((lo - diag) * inv_gamma);
  const double eu = exp((lo - up) * inv_gamma);
  const double sum = el + ed + eu;
  const double inv_sum = 1.0 / sum;
  return {lo - gamma * log(sum), el * inv_sum, ed * inv_sum, eu * inv_sum};
}

DC_HOST_DEVICE DC_INLINE bool in_band(int64_t i, int64_t j, int64_t band) {
  const int64_t d = i - j;
  return band < 0 || (d <= band && -d <= band);
}

// First and last column (1-based, inclusive) of row i inside the band.
DC_HOST_DEVICE DC_INLINE int64_t band_first(int64_t i, int64_t band) {
  return band < 0 || i - band < 1 ? 1 : i - band;
}
DC_HOST_DEVICE DC_INLINE int64_t band_last(int64_t i, int64_t nb, int64_t band) {
  return band < 0 || i + band > nb ? nb : i + band;
}

// One soft-DTW problem (see the file comment). C points at the pair's costs
// (row stride ldc); P receives the transition weights of every used cell
// (left, diag, up; row stride ldp = 3 * row length), which is all the backward
// needs. R lives in two scratch rows of length nb + 1 during the forward.
template <class T>
struct Problem {
  const T* C;
  int64_t ldc;
  T* P;
  int64_t ldp;
  int64_t mb, nb;
  double gamma;
  int64_t band;

  DC_HOST_DEVICE DC_INLINE double c(int64_t i, int64_t j) const { return double(C[(i - 1) * ldc + (j - 1)]); }
  DC_HOST_DEVICE DC_INLINE T* p(int64_t i, int64_t j) const { return P + (i - 1) * ldp + 3 * (j - 1); }

  // Only the used mb x nb block and, with a band, only its cells are read:
  // padding and out-of-band costs may hold anything.
  DC_HOST_DEVICE DC_INLINE bool finite_costs() const {
    for (int64_t i = 1; i <= mb; ++i) {
      for (int64_t j = band_first(i, band); j <= band_last(i, nb, band); ++j) {
        if (!is_finite(c(i, j))) return false;
      }
    }
    return true;
  }

  // Forward DP with scratch rows prev, cur (nb + 1 doubles each); returns
  // R[mb][nb]: +inf when the band makes the end unreachable, NaN when a used
  // cost is not finite. The caller zeroes P first (cells never written keep
  // weight 0, so the saved weights are deterministic).
  DC_HOST_DEVICE double forward(double* prev, double* cur) const {
    if (!finite_costs()) return NAN;
    prev[0] = 0.0;
    for (int64_t j = 1; j <= nb; ++j) prev[j] = INFINITY;
    for (int64_t i = 1; i <= mb; ++i) {
      for (int64_t j = 0; j <= nb; ++j) cur[j] = INFINITY;
      for (int64_t j = band_first(i, band); j <= band_last(i, nb, band); ++j) {
        const Transition t = soft_min3(cur[j - 1], prev[j - 1], prev[j], gamma);
        cur[j] = c(i, j) + t.value;
        T* w = p(i, j);
        w[0] = T(t.left);
        w[1] = T(t.diag);
        w[2] = T(t.up);
      }
      double* swap = prev;
      prev = cur;
      cur = swap;
    }
    return prev[nb];
  }

  // Backward: E (row stride lde, zeroed by the caller) = grad * expected
  // alignment on the used block, pushed from (mb, nb) back through the saved
  // weights (no transcendental functions). value = the forward's result:
  // NaN gives a NaN gradient, +inf (unreachable end) a zero gradient.
  DC_HOST_DEVICE void backward(double value, double grad, T* E, int64_t lde) const {
    if (value != value) {
      for (int64_t i = 0; i < mb; ++i) {
        for (int64_t j = 0; j < nb; ++j) E[i * lde + j] = quiet_nan<T>();
      }
      return;
    }
    if (value == INFINITY) return;
    // E holds probabilities in [0, 1] and each cell receives at most three
    // pushes, so accumulating in T is accurate also for float32.
    E[(mb - 1) * lde + (nb - 1)] = T(1);
    for (int64_t i = mb; i >= 1; --i) {
      for (int64_t j = band_last(i, nb, band); j >= band_first(i, band); --j) {
        const double e = double(E[(i - 1) * lde + (j - 1)]);
        if (e == 0.0) continue;
        const T* w = p(i, j);
        if (j > 1) E[(i - 1) * lde + (j - 2)] += T(double(w[0]) * e);
        if (i > 1 && j > 1) E[(i - 2) * lde + (j - 2)] += T(double(w[1]) * e);
        if (i > 1) E[(i - 2) * lde + (j - 1)] += T(double(w[2]) * e);
      }
    }
    if (grad != 1.0) {
      for (int64_t i = 0; i < mb; ++i) {
        for (int64_t j = 0; j < nb; ++j) E[i * lde + j] = T(double(E[i * lde + j]) * grad);
      }
    }
  }

  // Second order (SPEC 3.8), for a direction Z (row stride ldz) on the used
  // block: the tangent dR of the DP (dR[mb][nb] = <E, Z>, returned) and the
  // Hessian-vector product HZ = dE, by the forward-on-backward pass. Scratch:
  // dR (mb + 1) x (nb + 1), E and HZ mb x nb, all double and row-major with
  // the stated sizes as strides. Needs the saved weights P; value = the
  // forward's result (NaN -> NaN everywhere, +inf -> +inf and zeros).
  DC_HOST_DEVICE double second_order(double value, const T* Z, int64_t ldz, double* dR, double* E,
                                     double* HZ) const {
    const int64_t ld = nb + 1;
    for (int64_t k = 0; k < mb * nb; ++k) {
      E[k] = value != value ? NAN : 0.0;
      HZ[k] = E[k];
    }
    if (value != value) return NAN;
    if (value == INFINITY) return INFINITY;
    for (int64_t k = 0; k < (mb + 1) * ld; ++k) dR[k] = 0.0;
    for (int64_t i = 1; i <= mb; ++i) {
      for (int64_t j = band_first(i, band); j <= band_last(i, nb, band); ++j) {
        const T* w = p(i, j);
        dR[i * ld + j] = double(Z[(i - 1) * ldz + (j - 1)]) + double(w[0]) * dR[i * ld + j - 1] +
                         double(w[1]) * dR[(i - 1) * ld + j - 1] + double(w[2]) * dR[(i - 1) * ld + j];
      }
    }
    E[(mb - 1) * nb + (nb - 1)] = 1.0;
    for (int64_t i = mb; i >= 1; --i) {
      for (int64_t j = band_last(i, nb, band); j >= band_first(i, band); --j) {
        const double e = E[(i - 1) * nb + (j - 1)];
        const double de = HZ[(i - 1) * nb + (j - 1)];
        if (e == 0.0 && de == 0.0) continue;
        const T* w = p(i, j);
        const double wl = double(w[0]), wd = double(w[1]), wu = double(w[2]);
        const double rl = dR[i * ld + j - 1], rd = dR[(i - 1) * ld + j - 1], ru = dR[(i - 1) * ld + j];
        // Tangent of the weights: dp_k = p_k (mu - dR_k) / gamma (0 for the hard DTW).
        const double mu = wl * rl + wd * rd + wu * ru;
        const double s = gamma > 0.0 ? 1.0 / gamma : 0.0;
        if (j > 1) {
          E[(i - 1) * nb + (j - 2)] += wl * e;
          HZ[(i - 1) * nb + (j - 2)] += wl * (mu - rl) * s * e + wl * de;
        }
        if (i > 1 && j > 1) {
          E[(i - 2) * nb + (j - 2)] += wd * e;
          HZ[(i - 2) * nb + (j - 2)] += wd * (mu - rd) * s * e + wd * de;
        }
        if (i > 1) {
          E[(i - 2) * nb + (j - 1)] += wu * e;
          HZ[(i - 2) * nb + (j - 1)] += wu * (mu - ru) * s * e + wu * de;
        }
      }
    }
    return dR[mb * ld + nb];
  }
};

}  // namespace softdtw
}  // namespace diffcomb
