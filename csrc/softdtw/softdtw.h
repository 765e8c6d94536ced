// Soft-DTW: the dynamic program over a cost matrix and its expected-alignment
// backward (SPEC.md sections 3.2-3.4, 3.6). Header-only, DC_HOST_DEVICE: the
// CPU kernel (cpu.cpp) runs it cell by cell; a wavefront CUDA kernel runs the
// same cell functions along anti-diagonals.
//
// One problem is a cost matrix C (m x n, row-major with row stride ldc) of
// which the leading mb x nb block is used (variable lengths), smoothing
// gamma >= 0 (0: hard DTW) and an optional Sakoe-Chiba band b (cells with
// |i - j| > b are excluded; b < 0: no band). R is stored (mb + 1) x (nb + 1)
// with row stride ldr = n + 1: R[0][0] = 0, the rest of row 0 / column 0 is +inf.
//
// Backward (push form): E[mb][nb] = 1 and, in reverse order, every cell
// passes E times its transition weights to its three predecessors. The
// weights are recomputed from R exactly as the forward computed them, so the
// backward uses the forward's rounding and needs no stored weights.
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
  const double el = exp((lo - left) / gamma);
  const double ed = exp((lo - diag) / gamma);
  const double eu = exp((lo - up) / gamma);
  const double sum = el + ed + eu;
  return {lo - gamma * log(sum), el / sum, ed / sum, eu / sum};
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

// One soft-DTW problem (see the file comment). C and R point at the pair's
// arrays; E (same layout as C) receives the gradient g * E of the backward.
template <class T>
struct Problem {
  const T* C;
  int64_t ldc;
  T* R;
  int64_t ldr;
  int64_t mb, nb;
  double gamma;
  int64_t band;

  DC_HOST_DEVICE DC_INLINE double r(int64_t i, int64_t j) const { return double(R[i * ldr + j]); }
  DC_HOST_DEVICE DC_INLINE double c(int64_t i, int64_t j) const { return double(C[(i - 1) * ldc + (j - 1)]); }

  DC_HOST_DEVICE DC_INLINE bool finite_costs() const {
    for (int64_t i = 1; i <= mb; ++i) {
      for (int64_t j = band_first(i, band); j <= band_last(i, nb, band); ++j) {
        if (!is_finite(c(i, j))) return false;
      }
    }
    return true;
  }

  // Transition of cell (i, j), 1-based, from the stored R.
  DC_HOST_DEVICE DC_INLINE Transition transition(int64_t i, int64_t j) const {
    return soft_min3(r(i, j - 1), r(i - 1, j - 1), r(i - 1, j), gamma);
  }

  // Forward DP; returns R[mb][nb] (+inf when the band makes the end unreachable,
  // NaN when a used cost is not finite). The caller fills the pair's whole R
  // with +inf first (also its padding, so the saved table is deterministic).
  // Only the used mb x nb block and, with a band, only its cells are read:
  // padding and out-of-band costs may hold anything.
  DC_HOST_DEVICE double forward() const {
    R[0] = T(0);
    if (!finite_costs()) {
      R[mb * ldr + nb] = quiet_nan<T>();
      return NAN;
    }
    for (int64_t i = 1; i <= mb; ++i) {
      for (int64_t j = band_first(i, band); j <= band_last(i, nb, band); ++j) {
        const Transition t = transition(i, j);
        R[i * ldr + j] = T(c(i, j) + t.value);
      }
    }
    return r(mb, nb);
  }

  // Backward: E (row stride lde) = grad * expected alignment on the used
  // mb x nb block; the caller zeroes E first. NaN value: NaN gradient; +inf
  // value (unreachable end): zero gradient.
  DC_HOST_DEVICE void backward(double grad, T* E, int64_t lde) const {
    const double value = r(mb, nb);
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
        const Transition t = transition(i, j);
        if (j > 1 && t.left != 0.0) E[(i - 1) * lde + (j - 2)] += T(t.left * e);
        if (i > 1 && j > 1 && t.diag != 0.0) E[(i - 2) * lde + (j - 2)] += T(t.diag * e);
        if (i > 1 && t.up != 0.0) E[(i - 2) * lde + (j - 1)] += T(t.up * e);
      }
    }
    if (grad != 1.0) {
      for (int64_t i = 0; i < mb; ++i) {
        for (int64_t j = 0; j < nb; ++j) E[i * lde + j] = T(double(E[i * lde + j]) * grad);
      }
    }
  }
};

}  // namespace softdtw
}  // namespace diffcomb
